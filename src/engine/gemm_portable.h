// A portable single-precision GEMM: blocked and packed, with a 4x8 register tile written in GCC /
// Clang vector extensions, so it compiles to SSE natively and to wasm simd128 under emscripten.
// The WASM build's gemm() (no oneDNN there); natively only its tests use it.
#pragma once

#include <cstdint>
#include <functional>

namespace splitseg {

// Runs task(0) .. task(n - 1), possibly at once on several threads, and returns when all are
// done. The threaded WASM module's worker pool is one (src/wasm/worker_pool.h).
class TaskRunner {
  public:
    virtual ~TaskRunner() = default;
    virtual int threads() const = 0;
    virtual void run(int n, const std::function<void(int64_t)>& task) = 0;
};

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, op = transpose when trans_* is set. As in
// BLAS, C is not read when beta == 0. Larger products are split by columns of C over the runner
// set below (the results do not depend on the split); without one, on the calling thread.
void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc);

// The runner gemm_portable splits its products over, or nullptr (the default) for none. The
// caller keeps it alive until it sets another; not to be changed while a product runs.
void set_gemm_portable_runner(TaskRunner* runner);

}  // namespace splitseg
