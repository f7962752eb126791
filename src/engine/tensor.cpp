#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace splitseg {

int64_t shape_numel(const Shape& shape) {
    int64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
        n *= d;
    }
    return n;
}

std::string shape_str(const Shape& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

void Tensor::FreeAligned::operator()(float* p) const { std::free(p); }

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), numel_(shape_numel(shape_)) {
    // 64-byte alignment for AVX-512 loads; round the size up as aligned_alloc requires.
    size_t bytes = (static_cast<size_t>(numel_) * sizeof(float) + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    data_.reset(p);
}

Tensor Tensor::zeros(Shape shape) { return filled(std::move(shape), 0.0f); }

Tensor Tensor::filled(Shape shape, float value) {
    Tensor t(std::move(shape));
    float* d = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) d[i] = value;
    return t;
}

Tensor Tensor::from(Shape shape, const float* src) {
    Tensor t(std::move(shape));
    if (t.numel()) std::memcpy(t.data(), src, t.numel() * sizeof(float));
    return t;
}

Tensor::Tensor(const Tensor& other) {
    if (!other.data_) return;  // a default-constructed tensor copies as empty, not as a scalar
    Tensor t(other.shape_);
    std::memcpy(t.data(), other.data(), t.numel() * sizeof(float));
    *this = std::move(t);
}

Tensor& Tensor::operator=(const Tensor& other) {
    if (this != &other) *this = Tensor(other);
    return *this;
}

Tensor& Tensor::reshape(Shape shape) {
    int infer = -1;
    int64_t known = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == -1) {
            if (infer >= 0) throw std::invalid_argument("reshape: more than one -1");
            infer = static_cast<int>(i);
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0 && known > 0) shape[infer] = numel_ / known;
    if (shape_numel(shape) != numel_)
        throw std::invalid_argument("reshape " + shape_str(shape_) + " to " + shape_str(shape));
    shape_ = std::move(shape);
    return *this;
}

}  // namespace splitseg
