#include "engine/weights/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/file_io.h"
#include "engine/weights/byte_reader.h"

namespace splitseg {

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // the reference implementation's limit
constexpr char kMetadataKey[] = "__metadata__";

uint64_t as_u64(const json& j, const std::string& what) {
    if (!j.is_number_unsigned()) throw FormatError(what + " is not a non-negative integer");
    return j.get<uint64_t>();
}

uint64_t checked_mul(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw FormatError("tensor size overflows 64 bits");
    return r;
}

std::map<std::string, std::string> read_metadata(const json& j) {
    if (!j.is_object()) throw FormatError("__metadata__ is not an object");
    std::map<std::string, std::string> metadata;
    for (const auto& [key, value] : j.items()) {
        if (!value.is_string())
            throw FormatError("__metadata__ value '" + key + "' is not a string");
        metadata.emplace(key, value.get<std::string>());
    }
    return metadata;
}

struct Placed {
    TensorRef ref;
    uint64_t begin = 0, end = 0;
};

Placed read_tensor_info(const std::string& name, const json& info, std::span<const uint8_t> data) {
    const std::string what = "tensor '" + name + "'";
    if (!info.is_object()) throw FormatError(what + ": not an object");
    const auto dtype = info.find("dtype");
    const auto shape = info.find("shape");
    const auto offsets = info.find("data_offsets");
    if (dtype == info.end() || shape == info.end() || offsets == info.end())
        throw FormatError(what + ": needs dtype, shape and data_offsets");
    Placed p;
    if (!dtype->is_string() || !dtype_from_name(dtype->get<std::string>(), &p.ref.dtype))
        throw FormatError(what + ": unknown dtype " + dtype->dump());
    if (!shape->is_array()) throw FormatError(what + ": shape is not an array");
    uint64_t nbytes = dtype_size(p.ref.dtype);
    for (const json& d : *shape) {
        const uint64_t dim = as_u64(d, what + " shape entry");
        if (dim > static_cast<uint64_t>(INT64_MAX))
            throw FormatError(what + ": dimension too large");
        nbytes = checked_mul(nbytes, dim);
        p.ref.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!offsets->is_array() || offsets->size() != 2)
        throw FormatError(what + ": data_offsets is not [begin, end]");
    p.begin = as_u64((*offsets)[0], what + " data_offsets");
    p.end = as_u64((*offsets)[1], what + " data_offsets");
    if (p.begin > p.end || p.end > data.size())
        throw FormatError(what + ": data_offsets [" + std::to_string(p.begin) + ", " +
                          std::to_string(p.end) + "] outside the data area of " +
                          std::to_string(data.size()) + " bytes");
    if (p.end - p.begin != nbytes)
        throw FormatError(what + ": " + std::to_string(p.end - p.begin) + " bytes for shape " +
                          shape_str(p.ref.shape) + " of " + dtype_name(p.ref.dtype));
    p.ref.data = data.data() + p.begin;
    p.ref.nbytes = static_cast<size_t>(nbytes);
    return p;
}

void check_no_overlap(std::vector<std::pair<uint64_t, uint64_t>> ranges) {
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].first < ranges[i - 1].second) throw FormatError("tensor data overlaps");
}

struct Header {
    json fields;
    std::span<const uint8_t> data;  // the data area after the header
};

Header parse_header(std::span<const uint8_t> file) {
    ByteReader r(file);
    const uint64_t header_size = r.u64("safetensors header length");
    if (header_size > kMaxHeaderSize || header_size > r.remaining())
        throw FormatError("header length " + std::to_string(header_size) +
                          " exceeds the file size " + std::to_string(file.size()));
    std::span<const uint8_t> text = r.take(static_cast<size_t>(header_size), "header");
    try {
        Header header{json::parse(text.begin(), text.end()), file.subspan(r.pos())};
        if (!header.fields.is_object()) throw FormatError("header is not a JSON object");
        return header;
    } catch (const json::exception& e) {
        throw FormatError(std::string("header is not valid JSON: ") + e.what());
    }
}

// ---- writing

// What a writer writes: the header's length, the header, then the entries' data in `order`.
struct Layout {
    std::string header;
    std::vector<const SafetensorsEntry*> order;
};

// Data ordered by element size, largest first, so that every tensor starts aligned to its
// element size (the data area starts 8-byte aligned), as the reference writer does: readers may
// then view the data in place, e.g. a Float32Array over a fetched bundle.
Layout plan(const std::vector<SafetensorsEntry>& entries,
            const std::map<std::string, std::string>& metadata) {
    Layout layout;
    for (const SafetensorsEntry& e : entries) layout.order.push_back(&e);
    std::stable_sort(layout.order.begin(), layout.order.end(), [](const auto* a, const auto* b) {
        return dtype_size(a->dtype) > dtype_size(b->dtype);
    });
    json header = json::object();
    if (!metadata.empty()) header[kMetadataKey] = metadata;
    uint64_t offset = 0;
    for (const SafetensorsEntry* e : layout.order) {
        if (e->name == kMetadataKey || header.contains(e->name))
            throw std::invalid_argument("safetensors: duplicate or reserved name '" + e->name +
                                        "'");
        if (e->nbytes != static_cast<size_t>(shape_numel(e->shape)) * dtype_size(e->dtype))
            throw std::invalid_argument("safetensors: '" + e->name + "' has " +
                                        std::to_string(e->nbytes) + " bytes for shape " +
                                        shape_str(e->shape) + " of " + dtype_name(e->dtype));
        header[e->name] = {{"dtype", dtype_name(e->dtype)},
                           {"shape", e->shape},
                           {"data_offsets", {offset, offset + e->nbytes}}};
        offset += e->nbytes;
    }
    std::string text = header.dump();
    text.resize((text.size() + 7) / 8 * 8, ' ');  // the data area starts 8-byte aligned
    const uint64_t length = text.size();
    layout.header = std::string(reinterpret_cast<const char*>(&length), 8) + text;
    return layout;
}

}  // namespace

TensorSet read_safetensors(std::span<const uint8_t> file) {
    const Header header = parse_header(file);
    TensorSet set;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& [name, info] : header.fields.items()) {
        if (name == kMetadataKey) {
            set.metadata = read_metadata(info);
            continue;
        }
        const Placed p = read_tensor_info(name, info, header.data);
        if (p.end > p.begin) ranges.emplace_back(p.begin, p.end);
        set.tensors.emplace(name, p.ref);
    }
    check_no_overlap(std::move(ranges));
    return set;
}

std::vector<uint8_t> serialize_safetensors(const std::vector<SafetensorsEntry>& entries,
                                           const std::map<std::string, std::string>& metadata) {
    const Layout layout = plan(entries, metadata);
    size_t size = layout.header.size();
    for (const SafetensorsEntry& e : entries) size += e.nbytes;
    std::vector<uint8_t> out(size);
    std::memcpy(out.data(), layout.header.data(), layout.header.size());
    size_t offset = layout.header.size();
    for (const SafetensorsEntry* e : layout.order) {
        if (e->nbytes) std::memcpy(out.data() + offset, e->data, e->nbytes);
        offset += e->nbytes;
    }
    return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
    const Layout layout = plan(entries, metadata);
    AtomicFile file(path);
    file.write(layout.header.data(), layout.header.size());
    for (const SafetensorsEntry* e : layout.order) file.write(e->data, e->nbytes);
    file.commit();
}

}  // namespace splitseg
