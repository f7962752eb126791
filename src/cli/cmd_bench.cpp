// splitseg bench: median encoder and click latency of one model, after warm-up.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/ops.h"

namespace splitseg::cli {

static double median(std::vector<double> v) {
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
    const int runs = args.get_int("runs", 3, 1, 100);
    const int clicks = args.get_int("clicks", 30, 1, 100000);

    nlohmann::json j;
    Stopwatch load_clock;
    auto model = load_model(args);
    j["load_ms"] = load_clock.ms();
    const Image image = args.get("image") ? load_image(*args.get("image")) : synthetic_image(1024);

    Embedding e;
    const std::vector<double> encode = time_runs(1, runs, [&] { e = model->encode(image); });
    Stopwatch prepare_clock;
    const DecoderImage prepared = model->prepare(e);
    j["prepare_ms"] = prepare_clock.ms();

    // One foreground click in the middle: multimask candidates upscaled to the original size,
    // and the interactive path that upscales only the best mask.
    Prompts click;
    click.points.push_back({image.width * 0.5f, image.height * 0.5f, 1});
    click.multimask = true;
    const std::vector<double> decode = time_runs(
        3, clicks, [&] { model->decode(prepared, e.geom, click, MaskOutput::Masks); });
    const std::vector<double> low_res = time_runs(
        3, clicks, [&] { model->decode(prepared, e.geom, click, MaskOutput::LowResOnly); });

    j["model"] = model->describe();
    j["threads"] = num_threads();
    j["precision"] = precision_name(model->precision());
    j["image"] = std::to_string(image.width) + "x" + std::to_string(image.height);
    j["encode_runs_ms"] = encode;
    j["encode_ms"] = median(encode);
    j["decode_ms"] = median(decode);
    j["decode_low_res_ms"] = median(low_res);
    j["clicks"] = clicks;
    j["peak_rss_mib"] = peak_rss_mib();
    if (args.flag("json")) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf("%s, %d threads: encode %.0f ms (median of %d), click %.2f ms "
                    "(masks at %s), %.2f ms (low-res logits only)\n",
                    model->describe().c_str(), num_threads(), median(encode), runs,
                    median(decode), j["image"].get<std::string>().c_str(), median(low_res));
    }
    return 0;
}

}  // namespace splitseg::cli
