#include "runtime/bundle.h"
#include "engine/file_io.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "engine/dtype.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/weight_file.h"

namespace splitseg {

static constexpr const char* kFormat = "splitseg.bundle";
static constexpr const char* kVersion = "1";

const char* bundle_dtype_name(BundleDType t) {
    switch (t) {
        case BundleDType::F32:
            return "f32";
        case BundleDType::F16:
            return "f16";
        case BundleDType::BF16:
            return "bf16";
        case BundleDType::Int8:
            return "int8";
    }
    return "?";
}

bool bundle_dtype_from_name(const std::string& name, BundleDType* out) {
    for (BundleDType t : {BundleDType::F32, BundleDType::F16, BundleDType::BF16, BundleDType::Int8})
        if (name == bundle_dtype_name(t)) {
            *out = t;
            return true;
        }
    return false;
}

std::string image_content_hash(const uint8_t* data, size_t size) {
    XXH128_hash_t h = XXH3_128bits(data, size);
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return buf;
}

static std::string hex64(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// The tensors of an embedding under their bundle names.
static std::vector<std::pair<std::string, const Tensor*>> bundle_tensors(const Embedding& e) {
    if (e.family == ModelFamily::Sam2)
        return {{"image_embed", &e.image_embed},
                {"high_res_feats_0", &e.high_res_0},
                {"high_res_feats_1", &e.high_res_1}};
    return {{"image_embeddings", &e.image_embed}};
}

// One tensor in its storage encoding.
struct Encoded {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
};

static Shape with_batch(const Shape& s) {
    Shape out{1};
    out.insert(out.end(), s.begin(), s.end());
    return out;
}

static void encode_tensor(const std::string& name, const Tensor& t, BundleDType dtype,
                          std::vector<Encoded>* out) {
    const size_t n = static_cast<size_t>(t.numel());
    Encoded enc{name, DType::F32, with_batch(t.shape()), {}};
    switch (dtype) {
        case BundleDType::F32:
            enc.bytes.resize(n * 4);
            std::memcpy(enc.bytes.data(), t.data(), n * 4);
            break;
        case BundleDType::F16:
        case BundleDType::BF16: {
            enc.dtype = dtype == BundleDType::F16 ? DType::F16 : DType::BF16;
            enc.bytes.resize(n * 2);
            auto* dst = reinterpret_cast<uint16_t*>(enc.bytes.data());
            for (size_t i = 0; i < n; ++i)
                dst[i] = dtype == BundleDType::F16 ? f32_to_f16(t[i]) : f32_to_bf16(t[i]);
            break;
        }
        case BundleDType::Int8: {
            // Symmetric scales per group: per channel for the image embedding; per channel row
            // for the high-resolution features, whose channels span too wide a range for 8 bits.
            const int scale_dims = name.rfind("high_res", 0) == 0 ? 2 : 1;
            const Shape scale_shape(t.shape().begin(), t.shape().begin() + scale_dims);
            Tensor scale(scale_shape);
            const int64_t group = t.numel() / scale.numel();
            enc.dtype = DType::I8;
            enc.bytes.resize(n);
            auto* dst = reinterpret_cast<int8_t*>(enc.bytes.data());
            for (int64_t g = 0; g < scale.numel(); ++g) {
                const float* src = t.data() + g * group;
                float mx = 0;
                for (int64_t i = 0; i < group; ++i) mx = std::max(mx, std::fabs(src[i]));
                scale[g] = mx > 0 ? mx / 127.0f : 1.0f;
                for (int64_t i = 0; i < group; ++i)
                    dst[g * group + i] = static_cast<int8_t>(std::lrint(src[i] / scale[g]));
            }
            Encoded s{name + ".scale", DType::F32, scale_shape, {}};
            s.bytes.resize(scale.numel() * 4);
            std::memcpy(s.bytes.data(), scale.data(), s.bytes.size());
            out->push_back(std::move(s));
            break;
        }
    }
    out->push_back(std::move(enc));
}

// xxh64 over (name, bytes) of every tensor in name order.
template <typename Get>
static std::string tensors_checksum(std::vector<std::string> names, Get bytes_of) {
    std::sort(names.begin(), names.end());
    XXH64_state_t* st = XXH64_createState();
    XXH64_reset(st, 0);
    for (const std::string& n : names) {
        auto [data, size] = bytes_of(n);
        XXH64_update(st, n.data(), n.size() + 1);  // the terminating NUL separates name and data
        XXH64_update(st, data, size);
    }
    const uint64_t h = XXH64_digest(st);
    XXH64_freeState(st);
    return hex64(h);
}

std::vector<uint8_t> serialize_bundle(const Embedding& e, BundleDType dtype) {
    std::vector<Encoded> enc;
    for (auto& [name, t] : bundle_tensors(e)) {
        if (t->empty()) throw std::invalid_argument("embedding lacks " + name);
        encode_tensor(name, *t, dtype, &enc);
    }
    std::map<std::string, const Encoded*> by_name;
    std::vector<std::string> names;
    for (const Encoded& x : enc) {
        by_name[x.name] = &x;
        names.push_back(x.name);
    }
    const std::string checksum = tensors_checksum(names, [&](const std::string& n) {
        const Encoded* x = by_name.at(n);
        return std::pair<const void*, size_t>(x->bytes.data(), x->bytes.size());
    });
    const ImageGeometry& g = e.geom;
    std::map<std::string, std::string> meta = {
        {"format", kFormat},
        {"format_version", kVersion},
        {"model_family", family_name(e.family)},
        {"model_hash", e.model_hash},
        {"image_hash", e.image_hash},
        {"orig_w", std::to_string(g.orig_w)},
        {"orig_h", std::to_string(g.orig_h)},
        {"resized_w", std::to_string(g.resized_w)},
        {"resized_h", std::to_string(g.resized_h)},
        {"input_size", std::to_string(g.input_size)},
        {"resize_mode", g.mode == ResizeMode::Square ? "square" : "longest_side"},
        {"storage_dtype", bundle_dtype_name(dtype)},
        {"checksum", checksum},
    };
    std::vector<SafetensorsEntry> entries;
    for (const Encoded& x : enc)
        entries.push_back({x.name, x.dtype, x.shape, x.bytes.data(), x.bytes.size()});
    return serialize_safetensors(entries, meta);
}

void write_bundle(const std::string& path, const Embedding& e, BundleDType dtype) {
    std::vector<uint8_t> bytes = serialize_bundle(e, dtype);
    write_file_atomic(path, bytes);
}

static std::string meta_field(const WeightFile& w, const std::string& key) {
    auto it = w.metadata().find(key);
    if (it == w.metadata().end()) throw FormatError(w.path() + ": bundle metadata lacks " + key);
    return it->second;
}

static int meta_int(const WeightFile& w, const std::string& key, int lo, int hi) {
    const std::string v = meta_field(w, key);
    size_t used = 0;
    int x = 0;
    try {
        x = std::stoi(v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v.size() || x < lo || x > hi)
        throw FormatError(w.path() + ": bundle metadata " + key + " = '" + v + "' out of range");
    return x;
}

// Reads one tensor back to float32, undoing int8 scaling, and drops the batch dimension.
static Tensor decode_tensor(const WeightFile& w, const std::string& name, const Shape& shape) {
    Tensor t = w.get(name, with_batch(shape));
    if (w.ref(name).dtype == DType::I8) {
        // The scale's shape is a prefix of the tensor's: one scale per group of trailing values.
        const Shape& scale_shape = w.ref(name + ".scale").shape;
        if (scale_shape.empty() || scale_shape.size() > 2 ||
            !std::equal(scale_shape.begin(), scale_shape.end(), shape.begin()))
            throw FormatError(w.path() + ": " + name + ".scale has shape " +
                              shape_str(scale_shape));
        const Tensor scale = w.get(name + ".scale");
        const int64_t group = t.numel() / scale.numel();
        for (int64_t g = 0; g < scale.numel(); ++g)
            for (int64_t i = 0; i < group; ++i) t[g * group + i] *= scale[g];
    }
    for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t[i])) throw FormatError(w.path() + ": " + name + " holds NaN or inf");
    t.reshape(shape);
    return t;
}

static Embedding embedding_from(const WeightFile& w) {
    if (meta_field(w, "format") != kFormat) throw FormatError(w.path() + ": not a splitseg bundle");
    if (meta_field(w, "format_version") != kVersion)
        throw FormatError(w.path() + ": unsupported bundle version " +
                          meta_field(w, "format_version"));
    const std::string checksum = tensors_checksum(w.names(), [&](const std::string& n) {
        const TensorRef& r = w.ref(n);
        return std::pair<const void*, size_t>(r.data, r.nbytes);
    });
    if (checksum != meta_field(w, "checksum"))
        throw FormatError(w.path() + ": bundle checksum mismatch (corrupt data)");
    Embedding e;
    if (!family_from_name(meta_field(w, "model_family"), &e.family))
        throw FormatError(w.path() + ": unknown model family " + meta_field(w, "model_family"));
    e.model_hash = meta_field(w, "model_hash");
    e.image_hash = meta_field(w, "image_hash");
    const int max_side = 1 << 16;
    e.geom.orig_w = meta_int(w, "orig_w", 1, max_side);
    e.geom.orig_h = meta_int(w, "orig_h", 1, max_side);
    e.geom.resized_w = meta_int(w, "resized_w", 1, 1024);
    e.geom.resized_h = meta_int(w, "resized_h", 1, 1024);
    e.geom.input_size = meta_int(w, "input_size", 1024, 1024);
    const std::string mode = meta_field(w, "resize_mode");
    if (mode != "square" && mode != "longest_side")
        throw FormatError(w.path() + ": unknown resize_mode " + mode);
    e.geom.mode = mode == "square" ? ResizeMode::Square : ResizeMode::LongestSide;
    if (e.family == ModelFamily::Sam2) {
        e.image_embed = decode_tensor(w, "image_embed", {256, 64, 64});
        e.high_res_0 = decode_tensor(w, "high_res_feats_0", {32, 256, 256});
        e.high_res_1 = decode_tensor(w, "high_res_feats_1", {64, 128, 128});
    } else {
        e.image_embed = decode_tensor(w, "image_embeddings", {256, 64, 64});
    }
    return e;
}

Embedding parse_bundle(std::vector<uint8_t> bytes, const std::string& name) {
    return embedding_from(WeightFile::from_bytes(std::move(bytes), name));
}

Embedding read_bundle(const std::string& path) {
    return embedding_from(WeightFile::open(path));
}

}  // namespace splitseg
