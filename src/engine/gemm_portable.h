// A portable single-precision GEMM: blocked and packed, with a 4x8 register tile written in GCC /
// Clang vector extensions, so it compiles to SSE natively and to wasm simd128 under emscripten.
// The WASM build's gemm() (no oneDNN there); natively only its tests use it.
#pragma once

#include <cstdint>

namespace splitseg {

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, op = transpose when trans_* is set. As in
// BLAS, C is not read when beta == 0. Single-threaded.
void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc);

}  // namespace splitseg
