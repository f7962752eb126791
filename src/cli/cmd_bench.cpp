// splitseg bench: median encoder and click latency of one model, after warm-up.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "engine/ops.h"

namespace splitseg::cli {

static double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A smooth synthetic 1024x1024 picture: speed does not depend on the content.
static Image synthetic_image(int size) {
    Image im{size, size, std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
    for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
            uint8_t* p = &im.rgb[(static_cast<size_t>(y) * size + x) * 3];
            p[0] = static_cast<uint8_t>(x * 255 / size);
            p[1] = static_cast<uint8_t>(y * 255 / size);
            p[2] = static_cast<uint8_t>(127 + 120 * std::sin(x * 0.02) * std::cos(y * 0.03));
        }
    return im;
}

// An embedding of random values in place of an encoder's output: click timings do not depend on
// the values, and `--runs 0` then measures clicks without minutes of encoding.
static Embedding random_embedding(const Segmenter& model, const Image& image) {
    Embedding e;
    e.family = model.family();
    e.model_hash = model.model_hash();
    e.geom = model.preprocess(image).geom;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    auto random = [&](Shape shape) {
        Tensor t(shape);
        for (int64_t i = 0; i < t.numel(); ++i) t[i] = normal(rng);
        return t;
    };
    e.image_embed = random({256, 64, 64});
    if (e.family == ModelFamily::Sam2) {
        e.high_res_0 = random({32, 256, 256});
        e.high_res_1 = random({64, 128, 128});
    }
    return e;
}

template <typename F>
static std::vector<double> time_runs(int warmup, int runs, F&& f) {
    for (int i = 0; i < warmup; ++i) f();
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
        Stopwatch clock;
        f();
        ms.push_back(clock.ms());
    }
    return ms;
}

int cmd_bench(const std::vector<std::string>& argv) {
    Args args(argv, {"json"});
    args.allow_only({"model", "image", "runs", "clicks", "threads", "precision", "json"});
    apply_threads(args);
    const int runs = args.get_int("runs", 3, 0, 100);  // 0: clicks only
    const int clicks = args.get_int("clicks", 30, 1, 100000);

    nlohmann::json j;
    Stopwatch load_clock;
    auto model = load_model(args);
    j["load_ms"] = load_clock.ms();
    const Image image = args.get("image") ? load_image(*args.get("image")) : synthetic_image(1024);

    Embedding e = runs ? Embedding{} : random_embedding(*model, image);
    const std::vector<double> encode =
        runs ? time_runs(1, runs, [&] { e = model->encode(image); }) : std::vector<double>{};
    Stopwatch prepare_clock;
    const DecoderImage prepared = model->prepare(e);
    j["prepare_ms"] = prepare_clock.ms();

    // One foreground click in the middle: multimask candidates upscaled to the original size,
    // the same as low-res logits only, and the interactive path that upscales only the best mask.
    Prompts click;
    click.points.push_back({image.width * 0.5f, image.height * 0.5f, 1});
    click.multimask = true;
    const std::vector<double> decode =
        time_runs(3, clicks, [&] { model->decode(prepared, e.geom, click, MaskOutput::Masks); });
    const double rss_after_first_clicks = current_rss_mib();
    const std::vector<double> low_res = time_runs(
        3, clicks, [&] { model->decode(prepared, e.geom, click, MaskOutput::LowResOnly); });
    Prompts best = click;
    best.best_only = true;
    const std::vector<double> best_only =
        time_runs(3, clicks, [&] { model->decode(prepared, e.geom, best, MaskOutput::Masks); });
    // A session's next click: a second point, the best mask's low-res logits fed back as the mask
    // input, one mask (SAM's interactive refinement, what every click after the first costs).
    const Masks first = model->decode(prepared, e.geom, best, MaskOutput::LowResOnly);
    Prompts refine;
    refine.points = {click.points[0], {image.width * 0.3f, image.height * 0.4f, 0}};
    refine.mask_input = Tensor::from({1, 256, 256}, first.low_res_logits.data());
    const std::vector<double> refine_ms =
        time_runs(3, clicks, [&] { model->decode(prepared, e.geom, refine, MaskOutput::Masks); });

    j["model"] = model->describe();
    j["threads"] = num_threads();
    j["precision"] = precision_name(model->precision());
    j["image"] = std::to_string(image.width) + "x" + std::to_string(image.height);
    j["encode_runs_ms"] = encode;
    j["encode_ms"] = median(encode);
    j["decode_ms"] = median(decode);
    j["decode_low_res_ms"] = median(low_res);
    j["decode_best_ms"] = median(best_only);
    j["decode_refine_ms"] = median(refine_ms);
    j["clicks"] = clicks;
    j["peak_rss_mib"] = peak_rss_mib();
    // Resident memory after the first batch of clicks and at the end: a leak shows as growth.
    j["rss_after_first_clicks_mib"] = rss_after_first_clicks;
    j["rss_end_mib"] = current_rss_mib();
    if (args.flag("json")) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf(
            "%s, %d threads: encode %.0f ms (median of %d), click %.2f ms "
            "(3 masks at %s), %.2f ms (low-res logits only), %.2f ms (best mask only), "
            "%.2f ms (next click with the mask input); RSS %.0f MiB after %d clicks, %.0f MiB "
            "after %d\n",
            model->describe().c_str(), num_threads(), median(encode), runs, median(decode),
            j["image"].get<std::string>().c_str(), median(low_res), median(best_only),
            median(refine_ms), rss_after_first_clicks, clicks + 3, j["rss_end_mib"].get<double>(),
            4 * (clicks + 3) + 1);
    }
    return 0;
}

}  // namespace splitseg::cli
