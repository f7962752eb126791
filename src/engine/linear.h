// Linear: a fully connected layer whose weights are packed once, at load, into oneDNN's blocked
// layout for this CPU and run as a matmul primitive with the bias and the next elementwise step
// fused into its epilogue. Unlike a BLAS call, nothing is re-packed per call, and no separate
// pass over the output adds the bias, applies GELU or accumulates onto the residual stream.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/tensor.h"

namespace splitseg {

// Arithmetic of the heavy products. f32 is exact to the reference within the golden tolerances;
// bf16 rounds activations and weights to bfloat16 (accumulating in f32) and runs on AMX or
// AVX512-BF16 where the CPU has them.
enum class Precision { F32, BF16 };
const char* precision_name(Precision p);  // "f32", "bf16"
bool precision_from_name(const std::string& name, Precision* out);
// Whether oneDNN can run bf16 products here (natively or emulated on AVX-512).
bool precision_supported(Precision p);

// What happens to x W^T + b before it lands in y.
enum class Epilogue {
    Store,  // y = x W^T + b
    Gelu,   // y = gelu(x W^T + b), exact (erf) GELU
    Add,    // y += x W^T + b: a layer onto a residual stream
};

class Linear {
  public:
    Linear() = default;
    // weight [out, in] as PyTorch's nn.Linear, bias [out] or empty.
    Linear(const Tensor& weight, const Tensor& bias, Precision precision);

    // x [M, in] (rows contiguous) -> y [M, out]. Safe to call from several threads at once.
    void run(const float* x, int64_t M, float* y, Epilogue epilogue = Epilogue::Store) const;
    // x [..., in] -> [..., out]
    Tensor operator()(const Tensor& x) const;

    int64_t in_features() const;
    int64_t out_features() const;
    bool empty() const { return !impl_; }

  private:
    void run_rows(const float* x, int64_t M, float* y, Epilogue epilogue) const;

    struct Impl;
    std::shared_ptr<const Impl> impl_;
};

// x [N, C] += fc2(GELU(fc1(LayerNorm(x)))), a transformer block's MLP (norm_w/norm_b [C]). Runs
// over chunks of tokens in parallel, so that a chunk's hidden activations (4x wider) stay in
// cache between the two products instead of going to memory and back.
void add_mlp(float* x, int64_t N, int64_t C, const Tensor& norm_w, const Tensor& norm_b, float eps,
             const Linear& fc1, const Linear& fc2);

}  // namespace splitseg
