#include "engine/weights/torch_checkpoint.h"

#include <cstring>
#include <string_view>

#include "engine/weights/format_error.h"
#include "engine/weights/pickle_reader.h"
#include "engine/weights/zip_reader.h"

namespace splitseg {

namespace {

int64_t checked_mul(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw FormatError("size overflows 64 bits");
    return r;
}

int64_t checked_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) throw FormatError("size overflows 64 bits");
    return r;
}

// The archive's top directory: the one holding data.pkl (its name varies: "archive",
// "weights", the file's stem...).
std::string archive_prefix(const ZipReader& zip) {
    std::string prefix;
    for (const auto& [name, bytes] : zip.entries()) {
        const size_t slash = name.find('/');
        if (slash == std::string::npos || name.compare(slash, std::string::npos, "/data.pkl"))
            continue;
        if (!prefix.empty()) throw FormatError("several data.pkl in the archive");
        prefix = name.substr(0, slash + 1);
    }
    if (prefix.empty()) throw FormatError("no data.pkl in the archive (not a torch.save file)");
    return prefix;
}

void check_byteorder(const ZipReader& zip, const std::string& prefix) {
    const std::span<const uint8_t>* entry = zip.find(prefix + "byteorder");
    if (!entry) return;  // written since PyTorch 1.12; older files are little-endian
    const std::string_view order(reinterpret_cast<const char*>(entry->data()), entry->size());
    if (order != "little")
        throw FormatError("byteorder is '" + std::string(order) + "'; only little is supported");
}

bool is_contiguous(const Shape& shape, const std::vector<int64_t>& stride) {
    int64_t expected = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        if (shape[i] != 1 && stride[i] != expected) return false;  // size-1 dims: any stride
        expected *= shape[i];
    }
    return true;
}

// Copies a strided view into a contiguous buffer, element by element.
std::vector<uint8_t> gather(const uint8_t* base, size_t elem, const Shape& shape,
                            const std::vector<int64_t>& stride, int64_t numel) {
    std::vector<uint8_t> out(static_cast<size_t>(numel) * elem);
    std::vector<int64_t> index(shape.size(), 0);
    int64_t src = 0;
    for (int64_t i = 0; i < numel; ++i) {
        std::memcpy(out.data() + static_cast<size_t>(i) * elem, base + src * elem, elem);
        // Odometer increment of the multi-index, last dimension fastest.
        for (size_t d = shape.size(); d-- > 0;) {
            src += stride[d];
            if (++index[d] < shape[d]) break;
            src -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
    return out;
}

TensorRef resolve_tensor(const PickledTensor& t, const ZipReader& zip, const std::string& prefix,
                         TensorSet& set) {
    const std::span<const uint8_t>* storage = zip.find(prefix + "data/" + t.storage.key);
    if (!storage) throw FormatError("storage '" + t.storage.key + "' missing from the archive");
    const auto elem = static_cast<int64_t>(dtype_size(t.storage.dtype));
    if (t.storage.numel < 0 || t.storage.numel > static_cast<int64_t>(storage->size()) / elem)
        throw FormatError("storage '" + t.storage.key + "' is shorter than its recorded size");
    if (t.offset < 0) throw FormatError("negative storage offset");

    TensorRef ref{.dtype = t.storage.dtype, .shape = t.shape, .data = storage->data()};
    int64_t numel = 1, last = t.offset;  // last: index of the view's last element
    for (size_t d = 0; d < t.shape.size(); ++d) {
        if (t.shape[d] < 0 || t.stride[d] < 0) throw FormatError("negative size or stride");
        numel = checked_mul(numel, t.shape[d]);
        if (t.shape[d] > 0) last = checked_add(last, checked_mul(t.shape[d] - 1, t.stride[d]));
    }
    if (numel == 0) return ref;
    if (last >= t.storage.numel)
        throw FormatError("view " + shape_str(t.shape) + " at offset " + std::to_string(t.offset) +
                          " runs past the end of storage '" + t.storage.key + "'");
    ref.nbytes = static_cast<size_t>(numel * elem);  // <= storage size, checked above
    const uint8_t* base = storage->data() + t.offset * elem;
    if (is_contiguous(t.shape, t.stride)) {
        ref.data = base;
        return ref;
    }
    // Overlapping views (stride 0) could ask for far more bytes than the file holds.
    if (numel > t.storage.numel)
        throw FormatError("view " + shape_str(t.shape) + " is larger than its storage");
    ref.data = set.owned.emplace_back(gather(base, elem, t.shape, t.stride, numel)).data();
    return ref;
}

}  // namespace

TensorSet read_torch_checkpoint(std::span<const uint8_t> file) {
    const ZipReader zip(file);
    const std::string prefix = archive_prefix(zip);
    check_byteorder(zip, prefix);
    TensorSet set;
    for (const auto& [name, tensor] : read_torch_state_dict(*zip.find(prefix + "data.pkl"))) {
        try {
            set.tensors.emplace(name, resolve_tensor(tensor, zip, prefix, set));
        } catch (const FormatError& e) {
            throw FormatError("tensor '" + name + "': " + e.what());
        }
    }
    return set;
}

}  // namespace splitseg
