// splitseg models: synthesise full-size random checkpoints, inspect and convert checkpoints.
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/models/hiera.h"
#include "engine/models/sam_decoder.h"
#include "engine/models/sam_vit.h"
#include "engine/models/tiny_vit.h"
#include "engine/weights/convert.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/weight_file.h"

namespace splitseg::cli {

using TensorShapes = std::vector<std::pair<std::string, Shape>>;

// Every tensor an official checkpoint of `arch` holds for the image path, with its shape.
static TensorShapes arch_tensor_shapes(const std::string& arch) {
    TensorShapes enc;
    DecoderVariant variant = DecoderVariant::Sam;
    if (arch == "vit_b" || arch == "vit_l" || arch == "vit_h") {
        enc = sam_vit_tensor_shapes(sam_vit_preset(arch));
    } else if (arch == "mobilesam") {
        enc = tiny_vit_tensor_shapes(tiny_vit_preset(arch));
    } else if (arch.rfind("sam2.1_hiera_", 0) == 0) {
        enc = hiera_tensor_shapes(hiera_preset(arch));
        variant = DecoderVariant::Sam2;
    } else {
        throw UsageError("unknown --arch '" + arch +
                         "' (vit_b, vit_l, vit_h, mobilesam, sam2.1_hiera_t, sam2.1_hiera_s, "
                         "sam2.1_hiera_b+, sam2.1_hiera_l)");
    }
    std::map<std::string, Shape> all(enc.begin(), enc.end());
    for (auto& [name, shape] : sam_decoder_tensor_shapes(variant)) all[name] = shape;
    return TensorShapes(all.begin(), all.end());
}

static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Values of the right scale so activations stay finite: normalisation scales near 1, variances
// positive, other weights uniform in +-1/sqrt(fan_in). Deterministic (xorshift).
static std::vector<float> synth_values(const std::string& name, const Shape& shape,
                                       uint64_t* state) {
    const int64_t n = shape_numel(shape);
    auto uniform = [state] {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        return static_cast<float>(*state >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
    };
    std::vector<float> v(n);
    const bool is_scale = shape.size() == 1 && ends_with(name, ".weight");
    const bool is_var = ends_with(name, "running_var");
    const float fan_in = shape.size() >= 2 ? static_cast<float>(n / shape[0]) : 1.0f;
    const float range = shape.size() >= 2 ? 1.0f / std::sqrt(fan_in) : 0.02f;
    for (int64_t i = 0; i < n; ++i) {
        const float u = uniform();
        v[i] = is_var ? 1.0f + 0.1f * std::fabs(u) : is_scale ? 1.0f + 0.1f * u : range * u;
    }
    return v;
}

static int models_synth(const Args& args) {
    const std::string arch = args.require("arch"), out = args.require("out");
    uint64_t state =
        0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(args.get_int("seed", 1, 0, 1 << 30));
    const TensorShapes shapes = arch_tensor_shapes(arch);
    std::vector<std::vector<float>> values;
    std::vector<int64_t> zero_counts(shapes.size(), 0);
    std::vector<SafetensorsEntry> entries;
    values.reserve(shapes.size());
    size_t bytes = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
        const auto& [name, shape] = shapes[i];
        if (ends_with(name, "num_batches_tracked")) {  // an int64 counter BatchNorm keeps
            entries.push_back({name, DType::I64, shape, &zero_counts[i], sizeof(int64_t)});
            values.emplace_back();
            continue;
        }
        values.push_back(synth_values(name, shape, &state));
        entries.push_back(
            {name, DType::F32, shape, values.back().data(), values.back().size() * 4});
        bytes += values.back().size() * 4;
    }
    write_safetensors(
        out, entries,
        {{"splitseg.synthetic", "random weights: masks are meaningless"}, {"arch", arch}});
    std::printf(
        "wrote %s: %zu tensors, %.1f MB of random %s weights (masks from them are "
        "meaningless; for speed tests and demos only)\n",
        out.c_str(), entries.size(), bytes / 1e6, arch.c_str());
    return 0;
}

static int models_inspect(const Args& args) {
    const std::string path = args.require("model");
    WeightFile w = WeightFile::open(path);
    std::map<std::string, int64_t> by_dtype;
    int64_t params = 0;
    for (const std::string& n : w.names()) {
        const int64_t count = shape_numel(w.ref(n).shape);
        by_dtype[dtype_name(w.ref(n).dtype)] += count;
        params += count;
    }
    auto model = Segmenter::load(path);
    nlohmann::json j = {{"path", path},
                        {"family", family_name(model->family())},
                        {"architecture", model->describe()},
                        {"model_hash", model->model_hash()},
                        {"tensors", w.names().size()},
                        {"parameters", params},
                        {"dtypes", by_dtype},
                        {"metadata", w.metadata()}};
    std::printf("%s\n", args.flag("json") ? j.dump().c_str() : j.dump(2).c_str());
    return 0;
}

static int models_convert(const Args& args) {
    const std::string out = args.require("out");
    const WeightFile w = WeightFile::open(args.require("model"));
    convert_to_safetensors(w, out);
    std::printf("wrote %s: %zu tensors\n", out.c_str(), w.names().size());
    return 0;
}

// The prompt encoder's and mask decoder's tensors only, named as in the checkpoint, with the
// family and the source model's hash (bundles record the same hash): the compact file the
// browser's WASM decoder fetches once.
static int models_extract_decoder(const Args& args) {
    const std::string path = args.require("model"), out = args.require("out");
    const std::string dtype = args.get("dtype").value_or("f16");
    if (dtype != "f16" && dtype != "f32") throw UsageError("--dtype must be f16 or f32");
    const auto model = Segmenter::load(path);
    const WeightFile w = WeightFile::open(path);
    const SamDecoder decoder = SamDecoder::load(w);
    std::vector<SafetensorsEntry> entries;
    std::vector<Tensor> f32;
    std::vector<std::vector<uint16_t>> f16;
    size_t bytes = 0;
    for (const auto& [name, shape] : sam_decoder_tensor_shapes(decoder.config())) {
        if (!w.has(name)) continue;  // SAM 2's conv_s0/conv_s1 are optional here (image side)
        Tensor t = w.get(name, shape);
        if (dtype == "f16") {
            std::vector<uint16_t>& h = f16.emplace_back(t.numel());
            for (int64_t i = 0; i < t.numel(); ++i) h[i] = f32_to_f16(t[i]);
            entries.push_back({name, DType::F16, shape, h.data(), h.size() * 2});
        } else {
            const Tensor& kept = f32.emplace_back(std::move(t));
            entries.push_back({name, DType::F32, shape, kept.data(), kept.numel() * 4ul});
        }
        bytes += entries.back().nbytes;
    }
    write_safetensors(out, entries,
                      {{"format", "splitseg.decoder"},
                       {"model_family", family_name(model->family())},
                       {"model_hash", model->model_hash()}});
    std::printf("wrote %s: %zu decoder tensors, %.1f MB %s (%s, model %s)\n", out.c_str(),
                entries.size(), bytes / 1e6, dtype.c_str(), family_name(model->family()),
                model->model_hash().c_str());
    return 0;
}

int cmd_models(const std::vector<std::string>& argv) {
    if (argv.empty())
        throw UsageError("models needs a subcommand: synth, inspect, convert or extract-decoder");
    const std::string sub = argv[0];
    Args args(std::vector<std::string>(argv.begin() + 1, argv.end()), {"json"});
    if (sub == "synth") {
        args.allow_only({"arch", "out", "seed"});
        return models_synth(args);
    }
    if (sub == "inspect") {
        args.allow_only({"model", "json"});
        return models_inspect(args);
    }
    if (sub == "convert") {
        args.allow_only({"model", "out"});
        return models_convert(args);
    }
    if (sub == "extract-decoder") {
        args.allow_only({"model", "out", "dtype"});
        return models_extract_decoder(args);
    }
    throw UsageError("unknown models subcommand '" + sub + "'");
}

}  // namespace splitseg::cli
