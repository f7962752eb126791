// Tensor: an owning, contiguous, row-major float32 array with a shape.
// The engine computes in float32; reduced-precision storage is converted at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace splitseg {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[3, 1024, 1024]"

class Tensor {
public:
    Tensor() = default;
    // Uninitialised contents: every producer writes all elements.
    explicit Tensor(Shape shape);
    static Tensor zeros(Shape shape);
    static Tensor filled(Shape shape, float value);
    static Tensor from(Shape shape, const float* src);

    Tensor(Tensor&&) noexcept = default;
    Tensor& operator=(Tensor&&) noexcept = default;
    Tensor(const Tensor& other);
    Tensor& operator=(const Tensor& other);

    float* data() { return data_.get(); }
    const float* data() const { return data_.get(); }
    float& operator[](int64_t i) { return data_.get()[i]; }
    float operator[](int64_t i) const { return data_.get()[i]; }

    const Shape& shape() const { return shape_; }
    int ndim() const { return static_cast<int>(shape_.size()); }
    // dim(-1) is the last dimension, as in PyTorch.
    int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
    int64_t numel() const { return numel_; }
    bool empty() const { return numel_ == 0; }

    // Same data, new shape with the same element count; -1 infers one dimension.
    Tensor& reshape(Shape shape);

private:
    struct FreeAligned {
        void operator()(float* p) const;
    };
    Shape shape_;
    int64_t numel_ = 0;
    std::unique_ptr<float[], FreeAligned> data_;
};

}  // namespace splitseg
