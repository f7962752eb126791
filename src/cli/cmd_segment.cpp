// splitseg segment: prompts in, masks out (from an image or from a bundle).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/file_io.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/weight_file.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

namespace splitseg::cli {

// FILE.safetensors[:KEY] -> [1, 256, 256]. KEY defaults to low_res_logits; when the tensor holds
// several masks, the one with the highest "iou" in the same file is taken.
static Tensor load_mask_input(const std::string& spec) {
    std::string path = spec, key = "low_res_logits";
    if (const size_t colon = spec.rfind(':');
        colon != std::string::npos && !std::filesystem::exists(spec)) {
        path = spec.substr(0, colon);
        key = spec.substr(colon + 1);
    }
    WeightFile w = WeightFile::open(path);
    Tensor t = w.get(key);
    if (t.numel() % (256 * 256) != 0 || t.numel() == 0)
        throw UsageError("--mask-input " + key + " must hold 256x256 logits, has shape " +
                         shape_str(t.shape()));
    int64_t pick = 0;
    const int64_t count = t.numel() / (256 * 256);
    if (count > 1 && w.has("iou")) {
        Tensor iou = w.get("iou");
        for (int64_t i = 1; i < std::min(count, iou.numel()); ++i)
            if (iou[i] > iou[pick]) pick = i;
    }
    return Tensor::from({1, 256, 256}, t.data() + pick * 256 * 256);
}

static Prompts parse_prompts(const Args& args) {
    Prompts p;
    for (const std::string& s : args.all("point")) {
        std::vector<float> v = parse_numbers(s, 3, "--point X,Y,LABEL");
        if (v[2] != 0 && v[2] != 1) throw UsageError("--point LABEL must be 1 or 0");
        p.points.push_back({v[0], v[1], static_cast<int>(v[2])});
    }
    if (auto b = args.get("box")) {
        std::vector<float> v = parse_numbers(*b, 4, "--box X0,Y0,X1,Y1");
        p.box = std::array<float, 4>{v[0], v[1], v[2], v[3]};
    }
    if (auto m = args.get("mask-input")) p.mask_input = load_mask_input(*m);
    p.multimask = args.flag("multimask");
    if (p.points.empty() && !p.box) throw UsageError("give at least one --point or a --box");
    return p;
}

static void write_outputs(const std::string& path, const Masks& m) {
    const int64_t C = m.count();
    std::vector<SafetensorsEntry> entries = {
        {"low_res_logits", DType::F32, m.low_res_logits.shape(), m.low_res_logits.data(),
         static_cast<size_t>(m.low_res_logits.numel()) * 4},
        {"iou", DType::F32, {C}, m.iou.data(), m.iou.size() * 4},
        {"masks", DType::U8, {C, m.height, m.width}, m.masks.data(), m.masks.size()},
    };
    if (!m.logits.empty())
        entries.push_back({"masks_logits", DType::F32, m.logits.shape(), m.logits.data(),
                           static_cast<size_t>(m.logits.numel()) * 4});
    write_safetensors(path, entries, {{"format", "splitseg.masks"}});
}

int cmd_segment(const std::vector<std::string>& argv) {
    Args args(argv, {"multimask", "logits", "json"});
    args.allow_only({"model", "image", "bundle", "point", "box", "mask-input", "multimask", "out",
                     "mask-png", "logits", "json", "threads", "precision"});
    apply_threads(args);
    if (args.get("image").has_value() == args.get("bundle").has_value())
        throw UsageError("give exactly one of --image or --bundle");
    const Prompts prompts = parse_prompts(args);
    const std::string out = args.require("out");

    nlohmann::json j;
    Stopwatch load_clock;
    auto model = load_model(args);
    j["load_ms"] = load_clock.ms();
    Embedding e;
    if (auto image = args.get("image")) {
        e = encode_image_file(*model, *image, &j);
    } else {
        Stopwatch bundle_clock;
        e = read_bundle(*args.get("bundle"));
        j["bundle_ms"] = bundle_clock.ms();
    }
    Stopwatch prepare_clock;
    const DecoderImage prepared = model->prepare(e);
    j["prepare_ms"] = prepare_clock.ms();
    Stopwatch decode_clock;
    const Masks m = model->decode(prepared, e.geom, prompts,
                                  args.flag("logits") ? MaskOutput::Logits : MaskOutput::Masks);
    j["decode_ms"] = decode_clock.ms();

    write_outputs(out, m);
    const int best = m.best();
    if (auto png = args.get("mask-png")) {
        const size_t plane = static_cast<size_t>(m.width) * m.height;
        std::vector<uint8_t> gray(plane);
        for (size_t i = 0; i < plane; ++i) gray[i] = m.masks[best * plane + i] ? 255 : 0;
        write_file_atomic(*png, encode_png_gray(gray.data(), m.width, m.height));
    }
    j["model"] = model->describe();
    j["masks"] = m.count();
    j["iou"] = m.iou;
    j["best"] = best;
    j["width"] = m.width;
    j["height"] = m.height;
    j["out"] = out;
    j["peak_rss_mib"] = peak_rss_mib();
    if (args.flag("json")) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf("%d mask(s) %dx%d, best %d (predicted IoU %.3f), decode %.1f ms -> %s\n",
                    m.count(), m.width, m.height, best, m.iou[best], j["decode_ms"].get<double>(),
                    out.c_str());
    }
    return 0;
}

}  // namespace splitseg::cli
