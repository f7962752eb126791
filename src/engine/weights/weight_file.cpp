#include "engine/weights/weight_file.h"

#include <xxhash.h>

#include <cstdio>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>

#include "engine/mapped_file.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/torch_checkpoint.h"

namespace splitseg {

struct WeightFile::Impl {
    std::optional<MappedFile> mapped;        // open()
    std::vector<uint8_t> bytes;              // from_bytes()
    std::deque<std::vector<uint8_t>> owned;  // tensors copied out of the file
    std::once_flag hash_once;
    std::string hash;
};

namespace {

bool starts_with(std::span<const uint8_t> bytes, std::string_view magic) {
    return bytes.size() >= magic.size() &&
           std::string_view(reinterpret_cast<const char*>(bytes.data()), magic.size()) == magic;
}

// torch.save before PyTorch 1.6 wrote a bare pickle stream starting with this magic number.
constexpr std::string_view kLegacyTorchMagic =
    "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

TensorSet parse(std::span<const uint8_t> bytes) {
    if (starts_with(bytes, "PK\x03\x04")) return read_torch_checkpoint(bytes);
    if (starts_with(bytes, kLegacyTorchMagic))
        throw FormatError(
            "legacy torch.save format (PyTorch < 1.6) is not supported; re-save it "
            "with a recent PyTorch");
    if (bytes.size() > 8 && bytes[8] == '{') return read_safetensors(bytes);
    throw FormatError("neither a PyTorch zip checkpoint nor a safetensors file");
}

void hash_bytes(XXH64_state_t* state, const void* data, size_t n) {
    XXH64_update(state, data, n);
}

template <typename T>
void hash_value(XXH64_state_t* state, T v) {
    hash_bytes(state, &v, sizeof v);
}

}  // namespace

WeightFile::WeightFile() : impl_(std::make_unique<Impl>()) {}
WeightFile::WeightFile(WeightFile&&) noexcept = default;
WeightFile& WeightFile::operator=(WeightFile&&) noexcept = default;
WeightFile::~WeightFile() = default;

WeightFile WeightFile::open(const std::string& path) {
    WeightFile file;
    file.path_ = path;
    try {
        file.impl_->mapped.emplace(path);
    } catch (const std::system_error& e) {
        throw FormatError(e.what());  // already "<path>: cannot open: <reason>"
    }
    file.load(file.impl_->mapped->bytes());
    return file;
}

WeightFile WeightFile::from_bytes(std::vector<uint8_t> bytes, std::string name) {
    WeightFile file;
    file.path_ = std::move(name);
    file.impl_->bytes = std::move(bytes);
    file.load(file.impl_->bytes);
    return file;
}

void WeightFile::load(std::span<const uint8_t> bytes) {
    try {
        TensorSet set = parse(bytes);
        tensors_ = std::move(set.tensors);
        metadata_ = std::move(set.metadata);
        impl_->owned = std::move(set.owned);
    } catch (const FormatError& e) {
        throw FormatError(path_ + ": " + e.what());
    }
}

bool WeightFile::has(const std::string& name) const {
    return tensors_.contains(name);
}

const TensorRef& WeightFile::ref(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw FormatError(path_ + ": no tensor '" + name + "'");
    return it->second;
}

Tensor WeightFile::get(const std::string& name) const {
    const TensorRef& r = ref(name);
    Tensor t(r.shape);
    convert_to_f32(r.dtype, r.data, static_cast<size_t>(t.numel()), t.data());
    return t;
}

Tensor WeightFile::get(const std::string& name, const Shape& expected) const {
    const TensorRef& r = ref(name);
    if (r.shape != expected)
        throw FormatError(path_ + ": tensor '" + name + "' has shape " + shape_str(r.shape) +
                          ", expected " + shape_str(expected));
    return get(name);
}

std::vector<std::string> WeightFile::names() const {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& [name, ref] : tensors_) names.push_back(name);
    return names;
}

std::string WeightFile::content_hash() const {
    std::call_once(impl_->hash_once, [this] {
        std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> state(XXH64_createState(),
                                                                         &XXH64_freeState);
        if (!state) throw std::bad_alloc();
        XXH64_reset(state.get(), 0);
        for (const auto& [name, ref] : tensors_) {  // sorted by name
            hash_bytes(state.get(), name.c_str(), name.size() + 1);
            const std::string_view dtype = dtype_name(ref.dtype);
            hash_bytes(state.get(), dtype.data(), dtype.size() + 1);
            hash_value<uint64_t>(state.get(), ref.shape.size());
            for (int64_t d : ref.shape) hash_value(state.get(), d);
            hash_value<uint64_t>(state.get(), ref.nbytes);
            hash_bytes(state.get(), ref.data, ref.nbytes);
        }
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx",
                      static_cast<unsigned long long>(XXH64_digest(state.get())));
        impl_->hash = hex;
    });
    return impl_->hash;
}

}  // namespace splitseg
