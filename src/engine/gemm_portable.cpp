#include "engine/gemm_portable.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace splitseg {

namespace {

// Register tile MR x NR (8 accumulators of 4 lanes: fits the 16 vector registers of x86-64, which
// V8 maps wasm simd128 onto); cache blocks: a KC x NC panel of B (256 KiB) and MC x KC of A.
constexpr int64_t MR = 4, NR = 8, KC = 256, MC = 64, NC = 256;
// The packing buffers hold whole panels: MC x KC of A and KC x NC of B.
static_assert(MC % MR == 0 && NC % NR == 0);

typedef float v4f __attribute__((vector_size(16)));

inline v4f load4(const float* p) {
    v4f v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Rows [i0, i0 + n) x depth [k0, k0 + kc) of op(X) as panels of W rows, each [kc][W]; rows
// past n are zero. op(A)'s rows make A's panels (W = MR); op(B)'s columns are the rows of
// op(B)^T, which is B read with the opposite transpose (W = NR). Transposed, a panel's W values
// of one depth are contiguous in X (one copy each); otherwise each row is read along its depth.
void pack_panels(int64_t W, bool trans, const float* X, int64_t ldx, int64_t i0, int64_t n,
                 int64_t k0, int64_t kc, float* out) {
    for (int64_t p = 0; p < n; p += W, out += W * kc) {
        const int64_t rows = std::min(W, n - p);
        if (rows < W) std::memset(out, 0, W * kc * sizeof(float));
        if (trans) {
            const float* x = X + k0 * ldx + i0 + p;
            for (int64_t k = 0; k < kc; ++k)
                std::memcpy(out + k * W, x + k * ldx, rows * sizeof(float));
        } else {
            const float* x = X + (i0 + p) * ldx + k0;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < kc; ++k) out[k * W + r] = x[r * ldx + k];
        }
    }
}

inline void store4(float* p, v4f v) {
    std::memcpy(p, &v, sizeof v);
}

// acc = one A panel times one B panel over kc: MR rows of NR columns, two vectors each.
void tile(int64_t kc, const float* a, const float* b, v4f acc[MR][2]) {
    v4f c[MR][2] = {};
    for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
        const v4f b0 = load4(b), b1 = load4(b + 4);
        for (int64_t r = 0; r < MR; ++r) {
            const v4f ar = {a[r], a[r], a[r], a[r]};
            c[r][0] += ar * b0;
            c[r][1] += ar * b1;
        }
    }
    std::memcpy(acc, c, sizeof c);
}

// C[rows, cols] = alpha * acc + (first depth block ? beta * C : C); C is not read when the first
// block has beta == 0. Whole rows of NR columns in vectors, the ragged edge one value at a time.
void store_tile(const v4f acc[MR][2], int64_t rows, int64_t cols, float alpha, float beta,
                bool first, float* C, int64_t ldc) {
    const float keep = first ? beta : 1.0f;
    if (cols == NR) {
        const v4f va = {alpha, alpha, alpha, alpha}, vk = {keep, keep, keep, keep};
        for (int64_t r = 0; r < rows; ++r)
            for (int h = 0; h < 2; ++h) {
                float* c = C + r * ldc + 4 * h;
                store4(c, keep == 0.0f ? va * acc[r][h] : vk * load4(c) + va * acc[r][h]);
            }
        return;
    }
    float t[MR][NR];
    std::memcpy(t, acc, sizeof t);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t s = 0; s < cols; ++s) {
            float* c = C + r * ldc + s;
            *c = keep == 0.0f ? alpha * t[r][s] : keep * *c + alpha * t[r][s];
        }
}

// Columns [c0, c1) of C: the blocked product over panels packed into a_pack (MC x KC) and
// b_pack (KC x NC), which the caller provides.
void gemm_columns(bool trans_a, bool trans_b, int64_t M, int64_t c0, int64_t c1, int64_t K,
                  float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                  float* C, int64_t ldc, float* a_pack, float* b_pack) {
    v4f acc[MR][2];
    for (int64_t j0 = c0; j0 < c1; j0 += NC) {
        const int64_t nc = std::min(NC, c1 - j0);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = std::min(KC, K - k0);
            const bool first = k0 == 0;  // the first depth block applies beta, later ones add
            pack_panels(NR, !trans_b, B, ldb, j0, nc, k0, kc, b_pack);
            for (int64_t i0 = 0; i0 < M; i0 += MC) {
                const int64_t mc = std::min(MC, M - i0);
                pack_panels(MR, trans_a, A, lda, i0, mc, k0, kc, a_pack);
                for (int64_t q = 0; q < nc; q += NR)
                    for (int64_t p = 0; p < mc; p += MR) {
                        tile(kc, a_pack + p * kc, b_pack + q * kc, acc);
                        store_tile(acc, std::min(MR, mc - p), std::min(NR, nc - q), alpha, beta,
                                   first, C + (i0 + p) * ldc + j0 + q, ldc);
                    }
            }
        }
    }
}

TaskRunner* g_runner = nullptr;

// Below this many multiply-adds a product stays on one thread: waking the others costs more.
constexpr int64_t kMinParallelWork = int64_t{1} << 21;

}  // namespace

void set_gemm_portable_runner(TaskRunner* runner) {
    g_runner = runner;
}

void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    // Parts of whole column panels, one per thread; each value of C is computed the same way
    // whatever the split. The packing buffers are allocated here, on the calling thread.
    const int64_t threads = g_runner && M * N * K >= kMinParallelWork ? g_runner->threads() : 1;
    const int64_t wanted = std::max<int64_t>(1, std::min(threads, N / NR));
    const int64_t width = ((N + wanted - 1) / wanted + NR - 1) / NR * NR;
    const int64_t parts = (N + width - 1) / width;
    const int64_t per_part = MC * KC + KC * NC;
    std::vector<float> packs(parts * per_part);
    auto part = [&](int64_t i) {
        float* a_pack = packs.data() + i * per_part;
        gemm_columns(trans_a, trans_b, M, i * width, std::min(N, (i + 1) * width), K, alpha, A, lda,
                     B, ldb, beta, C, ldc, a_pack, a_pack + MC * KC);
    };
    if (parts == 1)
        part(0);
    else
        g_runner->run(static_cast<int>(parts), part);
}

}  // namespace splitseg
