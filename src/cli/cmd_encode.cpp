// splitseg encode: image in, embedding bundle out.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/file_io.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

namespace splitseg::cli {

// Decodes an image file and encodes it, recording the content hash and the timings.
Embedding encode_image_file(const Segmenter& model, const std::string& path,
                            nlohmann::json* timings) {
    Stopwatch decode_clock;
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    Image image = decode_image(bytes.data(), bytes.size());
    (*timings)["image_decode_ms"] = decode_clock.ms();
    Stopwatch encode_clock;
    Embedding e = model.encode(image);
    (*timings)["encode_ms"] = encode_clock.ms();
    e.image_hash = image_content_hash(bytes.data(), bytes.size());
    return e;
}

int cmd_encode(const std::vector<std::string>& argv) {
    Args args(argv, {"json"});
    args.allow_only({"model", "image", "out", "store", "dtype", "json", "threads", "precision"});
    apply_threads(args);
    BundleDType dtype = BundleDType::F16;
    if (auto d = args.get("dtype"); d && !bundle_dtype_from_name(*d, &dtype))
        throw UsageError("--dtype must be f16, f32, bf16 or int8");
    if (args.get("store")) {
        if (args.get("out")) throw UsageError("give --out (one bundle file) or --store, not both");
        return encode_into_store(args, dtype);
    }
    const std::string out = args.require("out");

    nlohmann::json j;
    Stopwatch load_clock;
    auto model = load_model(args);
    j["load_ms"] = load_clock.ms();
    Embedding e = encode_image_file(*model, args.require("image"), &j);
    Stopwatch write_clock;
    write_bundle(out, e, dtype);
    j["write_ms"] = write_clock.ms();

    j["model"] = model->describe();
    j["model_hash"] = e.model_hash;
    j["image_hash"] = e.image_hash;
    j["width"] = e.geom.orig_w;
    j["height"] = e.geom.orig_h;
    j["bundle"] = out;
    j["dtype"] = bundle_dtype_name(dtype);
    j["peak_rss_mib"] = peak_rss_mib();
    if (args.flag("json")) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf("encoded %s (%dx%d) with %s in %.0f ms -> %s\n", args.require("image").c_str(),
                    e.geom.orig_w, e.geom.orig_h, model->describe().c_str(),
                    j["encode_ms"].get<double>(), out.c_str());
    }
    return 0;
}

}  // namespace splitseg::cli
