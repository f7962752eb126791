#include "engine/ops.h"

#include "engine/dtype.h"

#ifdef __AVX512F__
#include "engine/x86_simd.h"
#endif

#ifdef SPLITSEG_WASM  // no oneDNN in the browser: the portable blocked GEMM
#include "engine/gemm_portable.h"
#else
#include <dnnl.h>

#include <map>
#include <unordered_map>

#include "engine/onednn.h"
#endif
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace splitseg {

static int g_threads = 0;

void set_num_threads(int n) {
    g_threads = n > 0 ? n : omp_get_num_procs();
    omp_set_num_threads(g_threads);
}

int num_threads() {
    return g_threads > 0 ? g_threads : omp_get_max_threads();
}

ThreadCap::ThreadCap(int threads) : previous_(omp_get_max_threads()) {
    omp_set_num_threads(std::max(1, std::min(threads, previous_)));
}

ThreadCap::~ThreadCap() {
    omp_set_num_threads(previous_);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
#ifdef SPLITSEG_WASM
    gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    // oneDNN's sgemm is row-major, uses OpenMP like the rest of the engine, and runs on one
    // thread when called from inside a parallel region (per-window/per-head attention).
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                  B, ldb, beta, C, ldc);
    if (st != dnnl_success) throw std::runtime_error("dnnl_sgemm failed");
#endif
}

#ifndef SPLITSEG_WASM
// One matmul primitive per problem (shapes, strides, beta) and thread, made on first use: creating
// one costs far more than the small products of the prompt decoder it serves (a thread's first
// call of a shape finds the kernel in oneDNN's own primitive cache when another thread made it).
// Each keeps its memory objects, pointed at a call's operands, and the thread's stream and
// scratchpad serve every call: made per call, with the map's lock, they cost ~15 % of a small
// product's time and four allocations (~130 products a click).
using Bf16Problem = std::array<int64_t, 9>;  // trans_a, trans_b, M, N, K, lda, ldb, ldc, beta

struct Bf16Product {
    dnnl::matmul matmul;
    std::unordered_map<int, dnnl::memory> args;  // src, weights, dst, scratchpad
};

struct Bf16Products {
    std::map<Bf16Problem, Bf16Product> products;
    dnnl::stream stream{onednn::cpu()};
    std::vector<char> scratch;

    Bf16Product& product(const Bf16Problem& p) {
        auto it = products.find(p);
        if (it != products.end()) return it->second;
        const auto [trans_a, trans_b, M, N, K, lda, ldb, ldc, beta] = p;
        using onednn::dt;
        const auto a =
            trans_a ? onednn::transposed(K, M, lda, dt::bf16) : onednn::rows(M, K, lda, dt::bf16);
        const auto b =
            trans_b ? onednn::transposed(N, K, ldb, dt::bf16) : onednn::rows(K, N, ldb, dt::bf16);
        dnnl::primitive_attr attr = onednn::own_scratchpad();
        if (beta) {
            dnnl::post_ops ops;
            ops.append_sum(1.0f);
            attr.set_post_ops(ops);
        }
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, onednn::rows(M, N, ldc)),
                                              attr, onednn::cpu());
        scratch.resize(std::max(scratch.size(), pd.scratchpad_desc().get_size()));
        const dnnl::engine& eng = onednn::cpu();
        Bf16Product made{dnnl::matmul(pd),
                         {{DNNL_ARG_SRC, dnnl::memory(a, eng, nullptr)},
                          {DNNL_ARG_WEIGHTS, dnnl::memory(b, eng, nullptr)},
                          {DNNL_ARG_DST, dnnl::memory(pd.dst_desc(), eng, nullptr)},
                          {DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), eng, nullptr)}}};
        return products.emplace(p, std::move(made)).first->second;
    }
};
#endif

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (beta != 0.0f && beta != 1.0f) throw std::invalid_argument("gemm_bf16: beta is 0 or 1");
    if (M == 0 || N == 0) return;
#ifdef SPLITSEG_WASM
    (void)trans_a, (void)trans_b, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C,
        (void)ldc;
    throw std::runtime_error("gemm_bf16: no bf16 products in the WASM build");
#else
    thread_local Bf16Products mine;
    Bf16Product& product = mine.product({trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f});
    product.args[DNNL_ARG_SRC].set_data_handle(const_cast<uint16_t*>(A));
    product.args[DNNL_ARG_WEIGHTS].set_data_handle(const_cast<uint16_t*>(B));
    product.args[DNNL_ARG_DST].set_data_handle(C);
    product.args[DNNL_ARG_SCRATCHPAD].set_data_handle(mine.scratch.data());
    product.matmul.execute(mine.stream, product.args);
    mine.stream.wait();
#endif
}

void linear(const float* x, int64_t M, int64_t K, const float* W, const float* b, int64_t N,
            float* y) {
    if (b)
        parallel_for(M, M * N > 65536,
                     [&](int64_t i) { std::memcpy(y + i * N, b, N * sizeof(float)); });
    gemm(false, true, M, N, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, N);
}

Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b) {
    const int64_t K = x.dim(-1), N = W.dim(0);
    if (W.ndim() != 2 || W.dim(1) != K)
        throw std::invalid_argument("linear: x " + shape_str(x.shape()) + " vs W " +
                                    shape_str(W.shape()));
    Shape out_shape = x.shape();
    out_shape.back() = N;
    Tensor y(out_shape);
    linear(x.data(), x.numel() / K, K, W.data(), b.empty() ? nullptr : b.data(), N, y.data());
    return y;
}

void linear_add(const float* x, int64_t M, int64_t K, const float* W, const float* b, int64_t N,
                float* y) {
    if (b)
        parallel_for(M, M * N > 65536, [&](int64_t i) {
            for (int64_t j = 0; j < N; ++j) y[i * N + j] += b[j];
        });
    gemm(false, true, M, N, K, 1.0f, x, K, W, K, 1.0f, y, N);
}

void linear_add(Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b) {
    const int64_t K = x.dim(-1), N = W.dim(0), M = x.numel() / K;
    if (W.ndim() != 2 || W.dim(1) != K || y.numel() != M * N)
        throw std::invalid_argument("linear_add: y " + shape_str(y.shape()) + ", x " +
                                    shape_str(x.shape()) + ", W " + shape_str(W.shape()));
    linear_add(x.data(), M, K, W.data(), b.empty() ? nullptr : b.data(), N, y.data());
}

PanelWeights pack_panels(const Tensor& W, bool half) {
    constexpr int64_t P = PanelWeights::kPanelColumns;
    if (W.ndim() != 2) throw std::invalid_argument("pack_panels: W is " + shape_str(W.shape()));
    PanelWeights w{.in = W.dim(1), .out = W.dim(0), .panels = {}, .half_panels = {}};
    const int64_t size = (w.out + P - 1) / P * P * w.in;
    if (half)
        w.half_panels.assign(size, 0);
    else
        w.panels.assign(size, 0.0f);
    for (int64_t n = 0; n < w.out; ++n)
        for (int64_t k = 0; k < w.in; ++k) {
            const int64_t at = (n / P * w.in + k) * P + n % P;
            if (half)
                w.half_panels[at] = f32_to_f16(W[n * w.in + k]);
            else
                w.panels[at] = W[n * w.in + k];
        }
    return w;
}

// An f32 or IEEE half value as f32 (the portable loops over either).
static inline float value_of(float v) {
    return v;
}
static inline float value_of(uint16_t half) {
    return f16_to_f32(half);
}

namespace {

// acc [R][P] = x [R, K] (row stride K) times one panel [K][P] (Weight: f32 or IEEE half): R * P
// accumulators, R <= 8.
template <int R, typename Weight>
void rows_times_panel(const float* x, int64_t K, const Weight* panel, float* acc_out) {
    constexpr int64_t P = PanelWeights::kPanelColumns;
#ifdef __AVX512F__
    if constexpr (std::is_same_v<Weight, uint16_t>) {  // widened by the instruction
        static_assert(P == 32, "a half panel's row is two vectors");
        __m512 acc[R][2];
        for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; ++k) {
            const auto* w = reinterpret_cast<const __m256i*>(panel + k * P);
            const __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256(w));
            const __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256(w + 1));
            for (int r = 0; r < R; ++r) {
                const __m512 xk = _mm512_set1_ps(x[r * K + k]);
                acc[r][0] = _mm512_fmadd_ps(xk, w0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(xk, w1, acc[r][1]);
            }
        }
        for (int r = 0; r < R; ++r) {
            _mm512_storeu_ps(acc_out + r * P, acc[r][0]);
            _mm512_storeu_ps(acc_out + r * P + 16, acc[r][1]);
        }
        return;
    }
#endif
    float acc[R][P] = {};
    for (int64_t k = 0; k < K; ++k) {
        const Weight* w = panel + k * P;
        for (int r = 0; r < R; ++r) {
            const float xk = x[r * K + k];
#pragma omp simd
            for (int64_t j = 0; j < P; ++j) acc[r][j] += xk * value_of(w[j]);
        }
    }
    std::memcpy(acc_out, acc, sizeof(acc));
}

constexpr int64_t kPanelRows = 8;

template <typename Weight>
void linear_panels_of(const float* x, int64_t M, const PanelWeights& w, const Weight* panels,
                      const float* b, float* y) {
    using RowsTimesPanel = void (*)(const float*, int64_t, const Weight*, float*);
    static constexpr RowsTimesPanel kRowsTimesPanel[kPanelRows] = {
        rows_times_panel<1, Weight>, rows_times_panel<2, Weight>, rows_times_panel<3, Weight>,
        rows_times_panel<4, Weight>, rows_times_panel<5, Weight>, rows_times_panel<6, Weight>,
        rows_times_panel<7, Weight>, rows_times_panel<8, Weight>};
    constexpr int64_t P = PanelWeights::kPanelColumns;
    const int64_t K = w.in, N = w.out, count = (N + P - 1) / P;
    // Two threads pay off from 128K weights (the decoder's MLP), not for its 256 x 256 layers.
    parallel_for(count, K * N >= (1 << 17), [&](int64_t c) {
        const int64_t n0 = c * P, nc = std::min(P, N - n0);
        float acc[kPanelRows * P];
        for (int64_t m0 = 0; m0 < M; m0 += kPanelRows) {
            const int64_t rows = std::min(kPanelRows, M - m0);
            kRowsTimesPanel[rows - 1](x + m0 * K, K, panels + c * K * P, acc);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < nc; ++j)
                    y[(m0 + r) * N + n0 + j] = acc[r * P + j] + (b ? b[n0 + j] : 0.0f);
        }
    });
}

}  // namespace

void linear_panels(const float* x, int64_t M, const PanelWeights& w, const float* b, float* y) {
    if (!w.half_panels.empty())
        linear_panels_of(x, M, w, w.half_panels.data(), b, y);
    else
        linear_panels_of(x, M, w, w.panels.data(), b, y);
}

Tensor linear_panels(const Tensor& x, const PanelWeights& w, const Tensor& b) {
    if (x.dim(-1) != w.in || (!b.empty() && b.numel() != w.out))
        throw std::invalid_argument("linear_panels: x " + shape_str(x.shape()) + ", W [" +
                                    std::to_string(w.out) + ", " + std::to_string(w.in) + "]");
    Shape shape = x.shape();
    shape.back() = w.out;
    Tensor y(shape);
    linear_panels(x.data(), x.numel() / w.in, w, b.empty() ? nullptr : b.data(), y.data());
    return y;
}

void layer_norm(const float* x, float* y, int64_t rows, int64_t C, const float* weight,
                const float* bias, float eps) {
    parallel_for(rows, rows > 256, [&](int64_t r) {
        const float* in = x + r * C;
        float* out = y + r * C;
        double mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
        for (int64_t c = 0; c < C; ++c) mean += in[c];
        mean /= C;
#pragma omp simd reduction(+ : var)
        for (int64_t c = 0; c < C; ++c) var += (in[c] - mean) * (in[c] - mean);
        const float inv = static_cast<float>(1.0 / std::sqrt(var / C + eps));
        const float m = static_cast<float>(mean);
        for (int64_t c = 0; c < C; ++c) out[c] = (in[c] - m) * inv * weight[c] + bias[c];
    });
}

void layer_norm(Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
    const int64_t C = x.dim(-1);
    layer_norm(x.data(), x.data(), x.numel() / C, C, weight.data(), bias.data(), eps);
}

// exp(x) to float precision without a libm call, so that loops over it vectorise: Cody-Waite
// reduction by ln 2, Cephes' expf polynomial, 2^n through the exponent bits. Max rel. error 1e-7.
// Below -60 it returns 0: e^-60 ~ 1e-26 vanishes next to the terms of size 1 it is summed with
// (softmax's largest, erf's 1), and values that small turn denormal in later products, which
// then run ~100 times slower.
static inline float exp_approx(float x_in) {
    const float x = std::min(std::max(x_in, -60.0f), 88.0f);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float e = p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
    return x_in < -60.0f ? 0.0f : e;
}

// erf(z) = z P(z^2) / Q(z^2) on |z| <= 3.92, and +-1 beyond (erf(3.92) rounds to 1 in float):
// a rational fit of ours (degrees 5 and 5, weighted least squares in float64), max abs. error
// 4.3e-7 evaluated in float, about that of the Abramowitz & Stegun formula it replaced (5e-7),
// without its exp: a division and ten FMAs. std::erf is a scalar libm call and dominated the
// MLPs of the ViT encoders.
constexpr float kErfClamp = 3.92f;
constexpr float kErfP[] = {1.1283790281e+00f, 1.9256273881e-01f, 5.3034308300e-02f,
                           3.8598134815e-03f, 2.8730805923e-04f, 2.0365454088e-06f};
constexpr float kErfQ[] = {1.0f,
                           5.0398600674e-01f,
                           1.1500178984e-01f,
                           1.5155246806e-02f,
                           1.1860874946e-03f,
                           3.8080442610e-05f};

#ifndef __AVX512F__  // gelu16 below serves AVX-512 builds
static inline float gelu_erf(float v) {
    const float z = std::min(std::max(v * 0.70710678118654752f, -kErfClamp), kErfClamp);
    const float t = z * z;
    float p = kErfP[5], q = kErfQ[5];
    for (int k = 4; k >= 0; --k) {
        p = p * t + kErfP[k];
        q = q * t + kErfQ[k];
    }
    return 0.5f * v * (1.0f + z * p / q);
}
#endif

#ifdef __AVX512F__
// The lanes of a 16-lane step with `left` values still to go: all 16, the first `left`, or none.
static inline __mmask16 lanes_left(int64_t left) {
    return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// 16 floats rounded to bf16 (to nearest even, as f32_to_bf16_finite).
static inline __m256i bf16x16(__m512 v) {
#ifdef __AVX512BF16__
    return (__m256i)_mm512_cvtneps_pbh(v);
#else
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
#endif
}

// 16 bf16 values (raw bits) as floats.
static inline __m512 widen_bf16x16(__m256i b) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}

// 16 lanes' loads and stores: all of them, or (Masked) those of mask k.
template <bool Masked>
struct Lanes {
    __mmask16 k = 0xFFFF;
    __m512 load(const float* p) const {
        if constexpr (Masked) return _mm512_maskz_loadu_ps(k, p);
        return _mm512_loadu_ps(p);
    }
    __m512 load_bf16(const uint16_t* p) const {
        if constexpr (Masked) return widen_bf16x16(_mm256_maskz_loadu_epi16(k, p));
        return widen_bf16x16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    __m512 load(const uint16_t* p) const {  // IEEE half
        if constexpr (Masked) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    void store(float* p, __m512 v) const {
        if constexpr (Masked)
            _mm512_mask_storeu_ps(p, k, v);
        else
            _mm512_storeu_ps(p, v);
    }
    void store_bf16(uint16_t* p, __m512 v) const {
        if constexpr (Masked)
            _mm256_mask_storeu_epi16(p, k, bf16x16(v));
        else
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bf16x16(v));
    }
};

// out[i] = x[i] (+ add[i] when given) rounded to bf16, i < n, by the conversion instruction:
// 10-20 % less time than the compiler's vectorisation of f32_to_bf16_finite (a 56 x 256 block).
static void round_to_bf16(const float* x, const float* add, int64_t n, uint16_t* out) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes_left(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, add + i));
        _mm256_mask_storeu_epi16(out + i, k, bf16x16(v));
    }
}
#else
static void round_to_bf16(const float* x, const float* add, int64_t n, uint16_t* out) {
    if (add) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16_finite(x[i] + add[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16_finite(x[i]);
    }
}
#endif

void to_bf16(const float* x, int64_t n, uint16_t* out) {
    constexpr int64_t kChunk = 16384;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    parallel_for(chunks, n > 65536, [&](int64_t c) {
        round_to_bf16(x + c * kChunk, nullptr, std::min(kChunk, n - c * kChunk), out + c * kChunk);
    });
}

#ifdef __AVX512F__
// exp_approx on 16 lanes: the same reduction and polynomial, with 2^n applied by scalef, and
// like it 0 below -60 (values that small would turn denormal in the products that read them).
static inline __m512 exp16(__m512 x_in) {
    const __mmask16 kept = _mm512_cmp_ps_mask(x_in, _mm512_set1_ps(-60.0f), _CMP_GE_OQ);
    const __m512 x = _mm512_max_ps(x_in, _mm512_set1_ps(-60.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_scalef_ps(kept, p, n);
}

// gelu_erf on 16 lanes, the reciprocal of Q by rcp14 and a Newton step instead of a division.
static inline __m512 gelu16(__m512 v) {
    const __m512 z =
        _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)),
                                    _mm512_set1_ps(-kErfClamp)),
                      _mm512_set1_ps(kErfClamp));
    const __m512 t = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(kErfP[5]), q = _mm512_set1_ps(kErfQ[5]);
    for (int k = 4; k >= 0; --k) {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfP[k]));
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(kErfQ[k]));
    }
    __m512 r = _mm512_rcp14_ps(q);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));  // r (2 - q r)
    const __m512 erf = _mm512_mul_ps(_mm512_mul_ps(z, p), r);
    const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
    return _mm512_fmadd_ps(half, erf, half);
}
#endif

void add_gelu(float* x, int64_t n, float bias, const float* add) {
#ifdef __AVX512F__
    const __m512 b = _mm512_set1_ps(bias);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes_left(n - i);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, x + i), b);
        if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, add + i));
        _mm512_mask_storeu_ps(x + i, k, gelu16(v));
    }
#else
    if (add) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) x[i] = gelu_erf(x[i] + bias + add[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) x[i] = gelu_erf(x[i] + bias);
    }
#endif
}

void gelu_mix(const float* x, int64_t ldx, int64_t C, int64_t n, const float* bias,
              const float* add, int64_t ld_add, const float* w, int64_t M, float* out,
              int64_t ld_out) {
    constexpr int64_t kOutputs = 4;  // accumulators per pass
    for (int64_t m0 = 0; m0 < M; m0 += kOutputs) {
        const int64_t mn = std::min(kOutputs, M - m0);
        const float* wm = w + m0 * C;
#ifdef __AVX512F__
        // 32 pixels a step, two vectors: the GELUs' long dependency chains interleave.
        auto step = [&](int64_t i, const auto& l0, const auto& l1) {
            __m512 acc[2][kOutputs];
            for (auto& half : acc)
                for (__m512& a : half) a = _mm512_setzero_ps();
            for (int64_t c = 0; c < C; ++c) {
                const float* xc = x + c * ldx + i;
                const float* ac = add ? add + c * ld_add + i : nullptr;
                const __m512 b = _mm512_set1_ps(add ? 0.0f : bias[c]);
                const __m512 g0 = gelu16(_mm512_add_ps(l0.load(xc), ac ? l0.load(ac) : b));
                const __m512 g1 =
                    gelu16(_mm512_add_ps(l1.load(xc + 16), ac ? l1.load(ac + 16) : b));
                for (int64_t m = 0; m < mn; ++m) {
                    const __m512 wv = _mm512_set1_ps(wm[m * C + c]);
                    acc[0][m] = _mm512_fmadd_ps(wv, g0, acc[0][m]);
                    acc[1][m] = _mm512_fmadd_ps(wv, g1, acc[1][m]);
                }
            }
            for (int64_t m = 0; m < mn; ++m) {
                l0.store(out + (m0 + m) * ld_out + i, acc[0][m]);
                l1.store(out + (m0 + m) * ld_out + i + 16, acc[1][m]);
            }
        };
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) step(i, Lanes<false>{}, Lanes<false>{});
        if (i < n) step(i, Lanes<true>{lanes_left(n - i)}, Lanes<true>{lanes_left(n - i - 16)});
#else
        for (int64_t i = 0; i < n; ++i) {
            float acc[kOutputs] = {};
            for (int64_t c = 0; c < C; ++c) {
                const float g = gelu_erf(x[c * ldx + i] + (add ? add[c * ld_add + i] : bias[c]));
                for (int64_t m = 0; m < mn; ++m) acc[m] += wm[m * C + c] * g;
            }
            for (int64_t m = 0; m < mn; ++m) out[(m0 + m) * ld_out + i] = acc[m];
        }
#endif
    }
}

// scaled_plus_product over `Rows` rows from r0 on: per 64 pixels, 4 vectors of each row's sums in
// registers, each f row loaded once for the rows. a is f32 or IEEE half (A: float or uint16_t),
// times a_scale.
template <int Rows, typename A>
static void scaled_plus_product_rows(int64_t r0, int64_t n, const A* a, float a_scale, int64_t lda,
                                     const float* s, const float* w, int64_t K, const float* f,
                                     int64_t ldf, const float* bias, const float* add,
                                     int64_t ld_add, float* y, int64_t ldy) {
#ifdef __AVX512F__
    constexpr int kVectors = 4;
    const __m512 scale = _mm512_set1_ps(a_scale);
    auto step = [&](int64_t i0, const auto& lanes) {  // pixels [i0, i0 + 64)
        __m512 sv[kVectors];
        for (int v = 0; v < kVectors; ++v)
            sv[v] = _mm512_mul_ps(lanes[v].load(s + i0 + 16 * v), scale);
        __m512 acc[Rows][kVectors];
        for (int r = 0; r < Rows; ++r)
            for (int v = 0; v < kVectors; ++v)
                acc[r][v] = _mm512_mul_ps(lanes[v].load(a + (r0 + r) * lda + i0 + 16 * v), sv[v]);
        for (int64_t j = 0; j < K; ++j) {
            __m512 fv[kVectors];
            for (int v = 0; v < kVectors; ++v) fv[v] = lanes[v].load(f + j * ldf + i0 + 16 * v);
            for (int r = 0; r < Rows; ++r) {
                const __m512 wv = _mm512_set1_ps(w[(r0 + r) * K + j]);
                for (int v = 0; v < kVectors; ++v)
                    acc[r][v] = _mm512_fmadd_ps(wv, fv[v], acc[r][v]);
            }
        }
        for (int r = 0; r < Rows; ++r)
            for (int v = 0; v < kVectors; ++v) {
                const int64_t i = i0 + 16 * v;
                const __m512 b =
                    add ? lanes[v].load(add + (r0 + r) * ld_add + i) : _mm512_set1_ps(bias[r0 + r]);
                lanes[v].store(y + (r0 + r) * ldy + i, _mm512_add_ps(acc[r][v], b));
            }
    };
    int64_t i0 = 0;
    for (; i0 + 16 * kVectors <= n; i0 += 16 * kVectors)
        step(i0, std::array<Lanes<false>, kVectors>{});
    if (i0 < n) {
        std::array<Lanes<true>, kVectors> lanes;
        for (int v = 0; v < kVectors; ++v) lanes[v].k = lanes_left(n - i0 - 16 * v);
        step(i0, lanes);
    }
#else
    for (int r = 0; r < Rows; ++r) {
        const int64_t row = r0 + r;
        float* yr = y + row * ldy;
        for (int64_t i = 0; i < n; ++i) yr[i] = value_of(a[row * lda + i]) * (s[i] * a_scale);
        for (int64_t j = 0; j < K; ++j) {
            const float wj = w[row * K + j];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) yr[i] += wj * f[j * ldf + i];
        }
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] += add ? add[row * ld_add + i] : bias[row];
    }
#endif
}

template <typename A>
static void scaled_plus_product_of(int64_t R, int64_t n, const A* a, float a_scale, int64_t lda,
                                   const float* s, const float* w, int64_t K, const float* f,
                                   int64_t ldf, const float* bias, const float* add, int64_t ld_add,
                                   float* y, int64_t ldy) {
    constexpr int kRows = 4;
    int64_t r0 = 0;
    for (; r0 + kRows <= R; r0 += kRows)
        scaled_plus_product_rows<kRows>(r0, n, a, a_scale, lda, s, w, K, f, ldf, bias, add, ld_add,
                                        y, ldy);
    for (; r0 < R; ++r0)
        scaled_plus_product_rows<1>(r0, n, a, a_scale, lda, s, w, K, f, ldf, bias, add, ld_add, y,
                                    ldy);
}

void scaled_plus_product(int64_t R, int64_t n, const float* a, float a_scale, int64_t lda,
                         const float* s, const float* w, int64_t K, const float* f, int64_t ldf,
                         const float* bias, const float* add, int64_t ld_add, float* y,
                         int64_t ldy) {
    scaled_plus_product_of(R, n, a, a_scale, lda, s, w, K, f, ldf, bias, add, ld_add, y, ldy);
}

void scaled_plus_product(int64_t R, int64_t n, const uint16_t* a_f16, float a_scale, int64_t lda,
                         const float* s, const float* w, int64_t K, const float* f, int64_t ldf,
                         const float* bias, const float* add, int64_t ld_add, float* y,
                         int64_t ldy) {
    scaled_plus_product_of(R, n, a_f16, a_scale, lda, s, w, K, f, ldf, bias, add, ld_add, y, ldy);
}

void gelu(Tensor& x) {
    constexpr int64_t kChunk = 4096;
    const int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
    parallel_for(chunks, n > 65536, [&](int64_t c) {
        add_gelu(x.data() + c * kChunk, std::min(kChunk, n - c * kChunk), 0.0f, nullptr);
    });
}

// Asks for `bytes` from p on into L1 ahead of use. The image passes read each channel's row of a
// block (1 KB) 16 KB after the previous one: the hardware prefetchers do not learn such short
// streams in time, and the loads stalled (41 % of layer_norm_channels_block's samples sat on
// the positional encoding's load, on Zen 5).
static inline void prefetch(const void* p, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(p) + b);
}

// Where one channel's row of a normalised block goes (each pointer at the block's first pixel,
// null when not wanted), and what is added to it on the way.
struct NormalisedRow {
    float* x = nullptr;             // the result
    uint16_t* x_bf16 = nullptr;     // the result rounded
    float* x_pe = nullptr;          // the result + pe
    uint16_t* x_pe_bf16 = nullptr;  // the result + pe (or + pe_bf16 widened) rounded
    const float* pe = nullptr;
    const uint16_t* pe_bf16 = nullptr;
    bool gelu = false;  // GELU after the affine, before anything is written
};

// out = ((v + a - mean) * inv_std * w + b) over n pixels (GELU'd if asked), written to every
// destination of `out` in one pass: no intermediate row is stored and read back.
static void write_normalised_row(const float* v, float a, const float* mean, const float* inv_std,
                                 float w, float b, int64_t n, const NormalisedRow& out) {
#ifdef __AVX512F__
    const __m512 av = _mm512_set1_ps(a), wv = _mm512_set1_ps(w), bv = _mm512_set1_ps(b);
    // Whole vectors with plain loads and stores (masked stores cost more on AMD's cores, where
    // this pass spent most of its samples on them), the last part masked.
    auto step = [&](const auto& lanes, int64_t i) {
        __m512 y = _mm512_add_ps(lanes.load(v + i), av);
        y = _mm512_mul_ps(_mm512_sub_ps(y, lanes.load(mean + i)), lanes.load(inv_std + i));
        y = _mm512_add_ps(_mm512_mul_ps(y, wv), bv);
        if (out.gelu) y = gelu16(y);
        if (out.x) lanes.store(out.x + i, y);
        if (out.x_bf16) lanes.store_bf16(out.x_bf16 + i, y);
        if (!out.pe && !out.pe_bf16) return;
        const __m512 y_pe =
            _mm512_add_ps(y, out.pe ? lanes.load(out.pe + i) : lanes.load_bf16(out.pe_bf16 + i));
        if (out.x_pe) lanes.store(out.x_pe + i, y_pe);
        if (out.x_pe_bf16) lanes.store_bf16(out.x_pe_bf16 + i, y_pe);
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) step(Lanes<false>{}, i);
    if (i < n) step(Lanes<true>{lanes_left(n - i)}, i);
#else
    float y[1024];  // n <= 1024 (layer_norm_channels_block)
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (v[i] + a - mean[i]) * inv_std[i] * w + b;
    if (out.gelu) add_gelu(y, n, 0.0f, nullptr);
    for (int64_t i = 0; i < n; ++i) {
        if (out.x) out.x[i] = y[i];
        if (out.x_bf16) out.x_bf16[i] = f32_to_bf16_finite(y[i]);
        if (!out.pe && !out.pe_bf16) continue;
        const float y_pe = y[i] + (out.pe ? out.pe[i] : bf16_to_f32(out.pe_bf16[i]));
        if (out.x_pe) out.x_pe[i] = y_pe;
        if (out.x_pe_bf16) out.x_pe_bf16[i] = f32_to_bf16_finite(y_pe);
    }
#endif
}

// Up to four rows of channels for add_channel_sums: the source's (src in f32 or src_bf16), what is
// added to each (first), and the caller's block rows (add, or null).
struct ChannelRows {
    const float* src[4];
    const uint16_t* src_bf16[4];
    float first[4];
    float* add[4];
};

// Per pixel, adds to sum and sum_sq each row's t = v - shift and t^2 in the rows' order, v =
// src + first (+ add, which is left holding v).
template <int Rows, typename S, bool Add>
static void add_channel_sums_of(const S* const* src, const float* first, float* const* add,
                                int64_t n, const float* shift, float* sum, float* sum_sq) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float s = sum[i], sq = sum_sq[i];
        for (int r = 0; r < Rows; ++r) {
            float v;
            if constexpr (std::is_same_v<S, float>)
                v = src[r][i] + first[r];
            else
                v = bf16_to_f32(src[r][i]) + first[r];
            if constexpr (Add) {
                v = add[r][i] + v;
                add[r][i] = v;
            }
            const float t = v - shift[i];
            s += t;
            sq += t * t;
        }
        sum[i] = s;
        sum_sq[i] = sq;
    }
}

template <int Rows>
static void add_channel_sums(const ChannelRows& rows, int64_t n, const float* shift, float* sum,
                             float* sum_sq) {
    const bool bf16 = rows.src_bf16[0] != nullptr, add = rows.add[0] != nullptr;
    if (bf16 && add)
        add_channel_sums_of<Rows, uint16_t, true>(rows.src_bf16, rows.first, rows.add, n, shift,
                                                  sum, sum_sq);
    else if (bf16)
        add_channel_sums_of<Rows, uint16_t, false>(rows.src_bf16, rows.first, rows.add, n, shift,
                                                   sum, sum_sq);
    else if (add)
        add_channel_sums_of<Rows, float, true>(rows.src, rows.first, rows.add, n, shift, sum,
                                               sum_sq);
    else
        add_channel_sums_of<Rows, float, false>(rows.src, rows.first, rows.add, n, shift, sum,
                                                sum_sq);
}

void layer_norm_channels_block(float* x, int64_t C, int64_t HW, int64_t i0, int64_t n,
                               const float* weight, const float* bias, float eps,
                               const ChannelNormExtras& extras) {
    constexpr int64_t kMaxBlock = 1024;
    if (n > kMaxBlock) throw std::invalid_argument("layer_norm_channels_block: over 1024 pixels");
    // Channel c's input v = (src or x) + add_first[c] (+ add). With `add`, the first pass leaves v
    // there (the caller's block, in L2) for the second, so src is read once; without, the second
    // pass recomputes it from x rather than storing it (one write pass less). The statistics take
    // one pass: sums of (v - v[0]) and its square, shifted by the pixel's first channel so that
    // the variance does not cancel when the mean is large next to the spread.
    if ((!x || extras.out_ld) && !extras.src && !extras.src_bf16)
        throw std::invalid_argument("layer_norm_channels_block: no x to normalise");
    if (extras.src_ld && !extras.src && !extras.src_bf16)
        throw std::invalid_argument("layer_norm_channels_block: src_ld without src");
    const float* base = extras.src ? extras.src : x;  // null with src_bf16 and no x
    // The source's rows: [C, H*W] from pixel i0, or the block's own (src_ld).
    const int64_t src_at = extras.src_ld ? 0 : i0, src_ld = extras.src_ld ? extras.src_ld : HW;
    const float* src = base ? base + src_at : nullptr;
    float widened[kMaxBlock];  // a row of src_bf16 in f32
    auto widen = [&](const uint16_t* b) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) widened[i] = bf16_to_f32(b[i]);
        return widened;
    };
    constexpr int64_t kAhead = 4;  // rows: ~10 KB in flight per stream
    auto src_row = [&](int64_t c) -> const float* {
        if (c + kAhead < C) {
            if (extras.src_bf16)
                prefetch(extras.src_bf16 + (c + kAhead) * src_ld + src_at, n * 2);
            else
                prefetch(src + (c + kAhead) * src_ld, n * 4);
        }
        return extras.src_bf16 ? widen(extras.src_bf16 + c * src_ld + src_at) : src + c * src_ld;
    };
    auto add_row = [&](int64_t c) { return extras.add + c * extras.add_ld; };
    auto first = [&](int64_t c) { return extras.add_first ? extras.add_first[c] : 0.0f; };
    float shift[kMaxBlock], sum[kMaxBlock] = {}, sum_sq[kMaxBlock] = {};
    const float a0 = first(0);
    const float* s0 = src_row(0);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) shift[i] = s0[i] + a0 + (extras.add ? add_row(0)[i] : 0.0f);
    if (extras.add) std::memcpy(add_row(0), shift, n * sizeof(float));
    // The other channels kSumRows at a time: the sums are loaded and stored once per kSumRows
    // rows (one row at a time, they were most of the pass's stores).
    constexpr int kSumRows = 4;
    ChannelRows rows;
    int64_t c0 = 1;
    auto gather = [&](int count) {  // rows [c0, c0 + count), the next ones asked for
        for (int r = 0; r < count; ++r) {
            const int64_t c = c0 + r, ahead = c + kSumRows;
            if (ahead < C && extras.src_bf16)
                prefetch(extras.src_bf16 + ahead * src_ld + src_at, n * 2);
            else if (ahead < C)
                prefetch(src + ahead * src_ld, n * 4);
            rows.src[r] = src ? src + c * src_ld : nullptr;
            rows.src_bf16[r] = extras.src_bf16 ? extras.src_bf16 + c * src_ld + src_at : nullptr;
            rows.first[r] = first(c);
            rows.add[r] = extras.add ? add_row(c) : nullptr;
        }
    };
    for (; c0 + kSumRows <= C; c0 += kSumRows) {
        gather(kSumRows);
        add_channel_sums<kSumRows>(rows, n, shift, sum, sum_sq);
    }
    for (; c0 < C; ++c0) {
        gather(1);
        add_channel_sums<1>(rows, n, shift, sum, sum_sq);
    }
    float* mean = sum;  // reused: the mean, then 1 / the standard deviation in sum_sq
    float* inv_std = sum_sq;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float m = sum[i] / C;
        inv_std[i] = 1.0f / std::sqrt(std::max(sum_sq[i] / C - m * m, 0.0f) + eps);
        mean[i] = shift[i] + m;
    }
    if (extras.mean) std::memcpy(extras.mean + i0, mean, n * sizeof(float));
    if (extras.inv_std) std::memcpy(extras.inv_std + i0, inv_std, n * sizeof(float));
    for (int64_t c = 0; c < C; ++c) {
        const int64_t at = c * HW + i0, out = extras.out_ld ? c * extras.out_ld : at;
        NormalisedRow row{.x = x ? x + out : nullptr,
                          .x_bf16 = extras.x_bf16 ? extras.x_bf16 + out : nullptr,
                          .x_pe = extras.x_pe ? extras.x_pe->data() + out : nullptr,
                          .x_pe_bf16 = extras.x_pe_bf16 ? extras.x_pe_bf16 + out : nullptr,
                          .gelu = extras.gelu};
        if (extras.pe_bf16 && extras.x_pe_bf16) {
            const int64_t pe_ld = extras.pe_ld ? extras.pe_ld : HW;
            row.pe_bf16 = extras.pe_bf16 + (extras.pe_ld ? c * pe_ld : at);
            if (c + kAhead < C) prefetch(row.pe_bf16 + kAhead * pe_ld, n * 2);
        } else if (extras.pe) {
            row.pe = extras.pe->data() + at;
            if (c + kAhead < C) prefetch(row.pe + kAhead * HW, n * 4);
        }
        // The input again: the caller's block, or src (+ add_first) read a second time.
        const float* v = extras.add ? add_row(c) : src_row(c);
        write_normalised_row(v, extras.add ? 0.0f : first(c), mean, inv_std, weight[c], bias[c], n,
                             row);
    }
}

void layer_norm_channels(Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         const ChannelNormExtras& extras) {
    const int64_t C = x.dim(0), HW = x.numel() / C;
    if (extras.x_pe && extras.x_pe->numel() != x.numel()) *extras.x_pe = Tensor(x.shape());
    // Blocks of pixels in parallel, each normalised across the channels in two passes over its
    // columns (they stay in L2 between the statistics and the output).
    constexpr int64_t kBlock = 1024;
    const int64_t blocks = (HW + kBlock - 1) / kBlock;
    parallel_for(blocks, C * HW > 65536, [&](int64_t b) {
        layer_norm_channels_block(x.data(), C, HW, b * kBlock, std::min(kBlock, HW - b * kBlock),
                                  weight.data(), bias.data(), eps, extras);
    });
}

void relu(Tensor& x) {
    float* d = x.data();
    for (int64_t i = 0; i < x.numel(); ++i) d[i] = std::max(d[i], 0.0f);
}

void add_(Tensor& x, const Tensor& y) {
    add_scaled_(x, y, 1.0f);
}

void add_scaled_(Tensor& x, const Tensor& y, float s) {
    if (x.numel() != y.numel())
        throw std::invalid_argument("add: " + shape_str(x.shape()) + " vs " + shape_str(y.shape()));
    float* a = x.data();
    const float* b = y.data();
    const int64_t n = x.numel();
    constexpr int64_t kChunk = 16384;
    parallel_for((n + kChunk - 1) / kChunk, n > 65536, [&](int64_t c) {
        const int64_t end = std::min(n, (c + 1) * kChunk);
#pragma omp simd
        for (int64_t i = c * kChunk; i < end; ++i) a[i] += s * b[i];
    });
}

#ifdef __AVX512F__
// Horizontal max and sum through memory: GCC 12's _mm512_reduce_* trip -Wuninitialized.
static inline float lanes_max(__m512 v) {
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    return *std::max_element(l, l + 16);
}

static inline float lanes_sum(__m512 v) {
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    float s = 0.0f;
    for (float x : l) s += x;
    return s;
}

constexpr float kLog2e = 1.44269504088896341f;

// e^(x - m) to the precision a bf16 result keeps, as 2^t with t = x log2(e) - m log2(e) (one
// FMA), t = n + f, |f| <= 1/2, and 2^f by a cubic fitted here for the least maximal relative
// error (1.0e-4; bf16 rounds at 2e-3): half the instructions of exp16. Below e^-60, 0 as exp16.
static inline __m512 exp_to_bf16_precision(__m512 x, __m512 m_log2e) {
    const __m512 t = _mm512_fmsub_ps(x, _mm512_set1_ps(kLog2e), m_log2e);
    const __mmask16 kept = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-60.0f * kLog2e), _CMP_GE_OQ);
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.055008258670568466f), f,
                               _mm512_set1_ps(0.24220958352088928f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6932828426361084f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(kept, p, n);
}

// One row of softmax_numerators in 16-lane steps, the tail masked. The attention of the ViT
// encoders spends ~20 % of its time here: the compiler's vectorisation of the scalar loop below
// took 1.3 ns an element on ViT-B's scores.
static void softmax_numerators_row(float* row, int64_t cols, float* inv_sum, uint16_t* out,
                                   float* row_max) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + c));
    const __mmask16 tail = static_cast<__mmask16>((1u << (cols - c)) - 1);
    mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, row + c));
    const float m = row_max ? std::max(*row_max, lanes_max(mx)) : lanes_max(mx);
    if (row_max) *row_max = m;
    __m512 sum = _mm512_setzero_ps();
    if (out) {
        const __m512 m_log2e = _mm512_set1_ps(m * kLog2e);
        for (c = 0; c < cols; c += 16) {
            const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : tail;
            const __m512 e = exp_to_bf16_precision(_mm512_maskz_loadu_ps(k, row + c), m_log2e);
            sum = _mm512_mask_add_ps(sum, k, sum, e);
            _mm256_mask_storeu_epi16(out + c, k, bf16x16(e));
        }
    } else {
        const __m512 m16 = _mm512_set1_ps(m);
        for (c = 0; c < cols; c += 16) {
            const __mmask16 k = cols - c >= 16 ? __mmask16(0xFFFF) : tail;
            const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + c), m16));
            sum = _mm512_mask_add_ps(sum, k, sum, e);
            _mm512_mask_storeu_ps(row + c, k, e);
        }
    }
    *inv_sum = 1.0f / lanes_sum(sum);
}

// softmax_numerators_grid in 16-lane steps along each grid row, the row's tail masked.
static void softmax_numerators_grid_avx512(const float* row, int64_t S, const float* by_row,
                                           const float* by_col, float* inv_sum, uint16_t* out) {
    const __mmask16 tail = S % 16 ? __mmask16((1u << (S % 16)) - 1) : __mmask16(0xFFFF);
    auto biased = [&](int64_t y, int64_t x, __mmask16 m) {
        return _mm512_add_ps(
            _mm512_maskz_loadu_ps(m, row + y * S + x),
            _mm512_add_ps(_mm512_set1_ps(by_row[y]), _mm512_maskz_loadu_ps(m, by_col + x)));
    };
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; x += 16) {
            const __mmask16 m = x + 16 <= S ? __mmask16(0xFFFF) : tail;
            mx = _mm512_mask_max_ps(mx, m, mx, biased(y, x, m));
        }
    const __m512 m_log2e = _mm512_set1_ps(lanes_max(mx) * kLog2e);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; x += 16) {
            const __mmask16 m = x + 16 <= S ? __mmask16(0xFFFF) : tail;
            const __m512 e = exp_to_bf16_precision(biased(y, x, m), m_log2e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
            _mm256_mask_storeu_epi16(out + y * S + x, m, bf16x16(e));
        }
    *inv_sum = 1.0f / lanes_sum(sum);
}
#endif

void softmax_numerators(float* x, int64_t rows, int64_t cols, float* inv_sum, uint16_t* bf16,
                        float* row_max) {
#ifdef __AVX512F__
    for (int64_t r = 0; r < rows; ++r)
        softmax_numerators_row(x + r * cols, cols, inv_sum + r, bf16 ? bf16 + r * cols : nullptr,
                               row_max ? row_max + r : nullptr);
#else
    for (int64_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int64_t c = 1; c < cols; ++c) mx = row[c] > mx ? row[c] : mx;  // std::max: scalar
        if (row_max) row_max[r] = mx = std::max(row_max[r], mx);
        float sum = 0.0f;
        if (bf16) {
            uint16_t* out = bf16 + r * cols;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < cols; ++c) {
                const float e = exp_approx(row[c] - mx);
                sum += e;
                out[c] = f32_to_bf16_finite(e);
            }
        } else {
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < cols; ++c) {
                row[c] = exp_approx(row[c] - mx);
                sum += row[c];
            }
        }
        inv_sum[r] = 1.0f / sum;
    }
#endif
}

void softmax_numerators_grid(const float* row, int64_t S, const float* by_row, const float* by_col,
                             float* inv_sum, uint16_t* bf16) {
#ifdef __AVX512F__
    softmax_numerators_grid_avx512(row, S, by_row, by_col, inv_sum, bf16);
#else
    float mx = -INFINITY;
    for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; ++x) mx = std::max(mx, row[y * S + x] + (by_row[y] + by_col[x]));
    float sum = 0.0f;
    for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; ++x) {
            const float e = exp_approx(row[y * S + x] + (by_row[y] + by_col[x]) - mx);
            sum += e;
            bf16[y * S + x] = f32_to_bf16_finite(e);
        }
    *inv_sum = 1.0f / sum;
#endif
}

void softmax_rows(float* x, int64_t rows, int64_t cols) {
    // All rows at once: a call per row let GCC clone softmax_numerators for rows == 1, and the
    // clone lost its vectorisation (5 ns per element instead of 0.3).
    std::vector<float> inv_sum(rows);
    softmax_numerators(x, rows, cols, inv_sum.data());
    for (int64_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) row[c] *= inv_sum[r];
    }
}

void softmax_columns(float* x, int64_t rows, int64_t cols, const SoftmaxCopies& copies,
                     int64_t ld) {
    if (ld == 0) ld = cols;
    // Chunks of columns keep the running max and sum in registers/L1 and vectorise across columns.
    constexpr int64_t kChunk = 256;
    const int64_t chunks = (cols + kChunk - 1) / kChunk;
    parallel_for(chunks, rows * cols > 65536, [&](int64_t k) {
        const int64_t c0 = k * kChunk, n = std::min(kChunk, cols - c0);
        float mx[kChunk], sum[kChunk];
        std::copy(x + c0, x + c0 + n, mx);
        for (int64_t r = 1; r < rows; ++r) {
            const float* row = x + r * ld + c0;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) mx[j] = row[j] > mx[j] ? row[j] : mx[j];
        }
        std::fill(sum, sum + n, 0.0f);
        for (int64_t r = 0; r < rows; ++r) {
            float* row = x + r * ld + c0;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
                row[j] = exp_approx(row[j] - mx[j]);
                sum[j] += row[j];
            }
        }
        for (int64_t j = 0; j < n; ++j) sum[j] = 1.0f / sum[j];
        for (int64_t r = 0; r < rows; ++r) {
            float* row = x + r * ld + c0;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) row[j] *= sum[j];
            if (copies.f32)
                std::memcpy(copies.f32 + r * copies.f32_ld + c0, row, n * sizeof(float));
            if (copies.bf16) to_bf16(row, n, copies.bf16 + r * cols + c0);
        }
    });
}

// Depthwise convolution: one filter per channel, computed directly.
static Tensor conv2d_depthwise(const Tensor& x, const Tensor& weight, const Tensor& bias,
                               int stride, int padding) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const int64_t kh = weight.dim(2), kw = weight.dim(3);
    const int64_t OH = (H + 2 * padding - kh) / stride + 1,
                  OW = (W + 2 * padding - kw) / stride + 1;
    Tensor y({C, OH, OW});
#pragma omp parallel for
    for (int64_t c = 0; c < C; ++c) {
        const float* src = x.data() + c * H * W;
        const float* k = weight.data() + c * kh * kw;
        float* dst = y.data() + c * OH * OW;
        const float b0 = bias.empty() ? 0.0f : bias[c];
        for (int64_t oy = 0; oy < OH; ++oy)
            for (int64_t ox = 0; ox < OW; ++ox) {
                float acc = b0;
                for (int64_t ky = 0; ky < kh; ++ky) {
                    const int64_t iy = oy * stride - padding + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int64_t kx = 0; kx < kw; ++kx) {
                        const int64_t ix = ox * stride - padding + kx;
                        if (ix >= 0 && ix < W) acc += src[iy * W + ix] * k[ky * kw + kx];
                    }
                }
                dst[oy * OW + ox] = acc;
            }
    }
    return y;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding,
              int groups) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const int64_t O = weight.dim(0), Cg = weight.dim(1), kh = weight.dim(2), kw = weight.dim(3);
    if (Cg * groups != C || O % groups != 0)
        throw std::invalid_argument("conv2d: x " + shape_str(x.shape()) + " vs weight " +
                                    shape_str(weight.shape()));
    if (groups == C && Cg == 1 && O == C) return conv2d_depthwise(x, weight, bias, stride, padding);
    const int64_t OH = (H + 2 * padding - kh) / stride + 1,
                  OW = (W + 2 * padding - kw) / stride + 1;
    const int64_t Og = O / groups, L = OH * OW, KK = Cg * kh * kw;
    Tensor y({O, OH, OW});
    const bool pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    std::vector<float> cols(pointwise ? 0 : KK * L);
    for (int g = 0; g < groups; ++g) {
        const float* src = x.data() + g * Cg * H * W;
        const float* B = src;
        if (!pointwise) {
            // im2col: rows are (c, ky, kx), columns are output pixels.
#pragma omp parallel for
            for (int64_t r = 0; r < KK; ++r) {
                const int64_t c = r / (kh * kw), ky = (r / kw) % kh, kx = r % kw;
                float* dst = cols.data() + r * L;
                for (int64_t oy = 0; oy < OH; ++oy) {
                    const int64_t iy = oy * stride - padding + ky;
                    for (int64_t ox = 0; ox < OW; ++ox) {
                        const int64_t ix = ox * stride - padding + kx;
                        dst[oy * OW + ox] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                                ? src[(c * H + iy) * W + ix]
                                                : 0.0f;
                    }
                }
            }
            B = cols.data();
        }
        float* out = y.data() + g * Og * L;
        for (int64_t o = 0; o < Og; ++o) {
            const float b0 = bias.empty() ? 0.0f : bias[g * Og + o];
            std::fill(out + o * L, out + (o + 1) * L, b0);
        }
        gemm(false, false, Og, L, KK, 1.0f, weight.data() + g * Og * KK, KK, B, L, 1.0f, out, L);
    }
    return y;
}

static int64_t conv_out_size(int64_t in, int64_t kernel, int stride, int padding) {
    return (in + 2 * padding - kernel) / stride + 1;
}

#ifdef __AVX512F__
// A direct convolution's view of its input: element (c, y, x) is at data + c * c_step +
// y * y_step + x * x_step; planar [C, H, W] and channels-last [H, W, C] differ in the steps only.
struct ConvInput {
    const float* data;
    int64_t C, H, W, c_step, y_step, x_step;
};

// Output pixels [ox, ox + P) of one row, output channels [o0, o0 + 16 NV): sums over the given
// taps (tap t: input at origin + off[t] for the first pixel, weights w + wrow[t] * Op), bias
// first, GELU last where asked. Each input value is broadcast against NV weight vectors.
template <int NV, int P>
static void direct_conv_pixels(const float* origin, int64_t pixel_step, const int64_t* off,
                               const int64_t* wrow, int n, const float* w, int64_t Op,
                               const float* bias, int64_t o0, int64_t O, float* out,
                               bool then_gelu) {
    __m512 acc[P][NV];
    for (int v = 0; v < NV; ++v) {
        const __m512 b = _mm512_loadu_ps(bias + o0 + 16 * v);
        for (int j = 0; j < P; ++j) acc[j][v] = b;
    }
    for (int t = 0; t < n; ++t) {
        const float* wt = w + wrow[t] * Op + o0;
        __m512 wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wt + 16 * v);
        const float* src = origin + off[t];
        for (int j = 0; j < P; ++j) {
            const __m512 xv = _mm512_set1_ps(src[j * pixel_step]);
            for (int v = 0; v < NV; ++v) acc[j][v] = _mm512_fmadd_ps(wv[v], xv, acc[j][v]);
        }
    }
    for (int j = 0; j < P; ++j)
        for (int v = 0; v < NV; ++v) {
            const int64_t o = o0 + 16 * v;
            const __mmask16 m = lanes_left(O - o);
            _mm512_mask_storeu_ps(out + j * O + o, m, then_gelu ? gelu16(acc[j][v]) : acc[j][v]);
        }
}

// P pixels for every output channel, 64 at a time (6 pixels x 4 vectors: 24 accumulators).
template <int P>
static void direct_conv_span(const float* origin, int64_t pixel_step, const int64_t* off,
                             const int64_t* wrow, int n, const float* w, int64_t Op,
                             const float* bias, int64_t O, float* out, bool then_gelu) {
    int64_t o0 = 0;
    for (; o0 + 64 <= Op; o0 += 64)
        direct_conv_pixels<4, P>(origin, pixel_step, off, wrow, n, w, Op, bias, o0, O, out,
                                 then_gelu);
    for (; o0 + 32 <= Op; o0 += 32)
        direct_conv_pixels<2, P>(origin, pixel_step, off, wrow, n, w, Op, bias, o0, O, out,
                                 then_gelu);
    for (; o0 < Op; o0 += 16)
        direct_conv_pixels<1, P>(origin, pixel_step, off, wrow, n, w, Op, bias, o0, O, out,
                                 then_gelu);
}

// Direct convolution into a channels-last output [OH, OW, O]: the weights packed as
// [(c, ky, kx)][O rounded up to 16] and six output pixels at a time summed in registers. Pixels
// whose window leaves the image skip the taps outside (zero padding).
static Tensor direct_conv(const ConvInput& in, const Tensor& weight, const Tensor& bias, int stride,
                          int padding, bool then_gelu) {
    const int64_t O = weight.dim(0), C = in.C, kh = weight.dim(2), kw = weight.dim(3);
    const int64_t K = C * kh * kw, Op = (O + 15) / 16 * 16;
    const int64_t OH = conv_out_size(in.H, kh, stride, padding);
    const int64_t OW = conv_out_size(in.W, kw, stride, padding);
    std::vector<float> w(K * Op, 0.0f), b(Op, 0.0f);
    for (int64_t o = 0; o < O; ++o)
        for (int64_t k = 0; k < K; ++k) w[k * Op + o] = weight[o * K + k];
    if (!bias.empty()) std::copy(bias.data(), bias.data() + O, b.begin());
    // Output columns whose window lies inside the image.
    const int64_t x_lo = std::min<int64_t>(OW, (padding + stride - 1) / stride);
    const int64_t x_hi = std::max(x_lo, std::min<int64_t>(OW, (in.W - kw + padding) / stride + 1));
    const int64_t pixel_step = stride * in.x_step;
    Tensor y({OH, OW, O});
#pragma omp parallel for schedule(static)
    for (int64_t oy = 0; oy < OH; ++oy) {
        std::vector<int64_t> off(K), wrow(K);
        const int64_t iy0 = oy * stride - padding;
        // The row's taps (rows inside the image), and the same per edge pixel (columns too).
        auto gather = [&](int64_t ix0) {
            int n = 0;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t ky = 0; ky < kh; ++ky) {
                    if (iy0 + ky < 0 || iy0 + ky >= in.H) continue;
                    for (int64_t kx = 0; kx < kw; ++kx) {
                        if (ix0 + kx < 0 || ix0 + kx >= in.W) continue;
                        off[n] = c * in.c_step + (iy0 + ky) * in.y_step + (ix0 + kx) * in.x_step;
                        wrow[n++] = (c * kh + ky) * kw + kx;
                    }
                }
            return n;
        };
        float* out = y.data() + oy * OW * O;
        auto edge_pixel = [&](int64_t ox) {
            const int n = gather(ox * stride - padding);
            direct_conv_span<1>(in.data, 0, off.data(), wrow.data(), n, w.data(), Op, b.data(), O,
                                out + ox * O, then_gelu);
        };
        for (int64_t ox = 0; ox < x_lo; ++ox) edge_pixel(ox);
        for (int64_t ox = x_hi; ox < OW; ++ox) edge_pixel(ox);
        if (x_lo >= x_hi) continue;
        // The interior's taps, as offsets of its first pixel; the next pixels are pixel_step on.
        const int n = gather(x_lo * stride - padding);
        for (int64_t ox = x_lo; ox < x_hi;) {
            const float* origin = in.data + (ox - x_lo) * pixel_step;
            if (ox + 6 <= x_hi) {
                direct_conv_span<6>(origin, pixel_step, off.data(), wrow.data(), n, w.data(), Op,
                                    b.data(), O, out + ox * O, then_gelu);
                ox += 6;
            } else {
                direct_conv_span<1>(origin, 0, off.data(), wrow.data(), n, w.data(), Op, b.data(),
                                    O, out + ox * O, then_gelu);
                ox += 1;
            }
        }
    }
    return y;
}

// Weights up to this many floats (256 KiB) stay in L2 while a direct convolution streams them
// once per six pixels; larger ones (a neck's 256 -> 256 3x3) run faster as im2col + GEMM.
constexpr int64_t kDirectConvMaxWeights = 65536;
#endif

Tensor conv2d_planar_to_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                            int padding, bool then_gelu) {
    if (x.ndim() != 3 || weight.ndim() != 4 || weight.dim(1) != x.dim(0))
        throw std::invalid_argument("conv2d_planar_to_hwc: x " + shape_str(x.shape()) +
                                    " vs weight " + shape_str(weight.shape()));
#ifdef __AVX512F__
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    if (weight.numel() <= kDirectConvMaxWeights)
        return direct_conv({x.data(), C, H, W, H * W, W, 1}, weight, bias, stride, padding,
                           then_gelu);
#endif
    Tensor y = chw_to_hwc(conv2d(x, weight, bias, stride, padding));
    if (then_gelu) gelu(y);
    return y;
}

Tensor conv2d_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                  int padding, bool then_gelu) {
    if (x.ndim() != 3 || weight.ndim() != 4 || weight.dim(1) != x.dim(2))
        throw std::invalid_argument("conv2d_hwc: x " + shape_str(x.shape()) + " vs weight " +
                                    shape_str(weight.shape()));
    const int64_t H = x.dim(0), W = x.dim(1), C = x.dim(2);
    const int64_t O = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3), K = kh * kw * C;
#ifdef __AVX512F__
    if (weight.numel() <= kDirectConvMaxWeights)
        return direct_conv({x.data(), C, H, W, 1, W * C, C}, weight, bias, stride, padding,
                           then_gelu);
#endif
    const int64_t OH = conv_out_size(H, kh, stride, padding);
    const int64_t OW = conv_out_size(W, kw, stride, padding);
    // The weight as [O, (ky, kx, c)], the order of a channels-last patch.
    std::vector<float> wt(O * K);
    for (int64_t o = 0; o < O; ++o)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < kh * kw; ++t)
                wt[o * K + t * C + c] = weight[(o * C + c) * kh * kw + t];
    Tensor y({OH, OW, O});
    // About 1 MiB of patches per band, at least one output row.
    const int64_t band = std::max<int64_t>(1, (int64_t{1} << 18) / (K * OW));
    const int64_t nbands = (OH + band - 1) / band;
#pragma omp parallel
    {
        std::vector<float> patches(band * OW * K);
#pragma omp for schedule(dynamic)
        for (int64_t bi = 0; bi < nbands; ++bi) {
            const int64_t y0 = bi * band, y1 = std::min(OH, y0 + band), n = (y1 - y0) * OW;
            for (int64_t oy = y0; oy < y1; ++oy)
                for (int64_t ox = 0; ox < OW; ++ox) {
                    float* row = patches.data() + ((oy - y0) * OW + ox) * K;
                    for (int64_t ky = 0; ky < kh; ++ky)
                        for (int64_t kx = 0; kx < kw; ++kx) {
                            const int64_t iy = oy * stride - padding + ky;
                            const int64_t ix = ox * stride - padding + kx;
                            float* dst = row + (ky * kw + kx) * C;
                            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                std::memcpy(dst, x.data() + (iy * W + ix) * C, C * sizeof(float));
                            else
                                std::fill(dst, dst + C, 0.0f);
                        }
                }
            float* out = y.data() + y0 * OW * O;
            if (!bias.empty())
                for (int64_t i = 0; i < n; ++i)
                    std::memcpy(out + i * O, bias.data(), O * sizeof(float));
            gemm(false, true, n, O, K, 1.0f, patches.data(), K, wt.data(), K,
                 bias.empty() ? 0.0f : 1.0f, out, O);
        }
    }
    if (then_gelu) gelu(y);
    return y;
}

// One output pixel of depthwise_conv2d_hwc from its n taps (input pixel, weights), then GELU
// where asked. AVX-512: each 16 channels summed over the taps in one register (the plain loop
// read and wrote the output once per tap).
static void depthwise_pixel(float* out, int64_t C, const float* const* in, const float* const* k,
                            int n, const float* bias, bool then_gelu) {
#ifdef __AVX512F__
    for (int64_t c = 0; c < C; c += 16) {
        const __mmask16 m = lanes_left(C - c);
        __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
        for (int t = 0; t < n; ++t)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k[t] + c),
                                  _mm512_maskz_loadu_ps(m, in[t] + c), acc);
        _mm512_mask_storeu_ps(out + c, m, then_gelu ? gelu16(acc) : acc);
    }
#else
    for (int64_t c = 0; c < C; ++c) out[c] = bias ? bias[c] : 0.0f;
    for (int t = 0; t < n; ++t)
        for (int64_t c = 0; c < C; ++c) out[c] += k[t][c] * in[t][c];
    if (then_gelu) add_gelu(out, C, 0.0f, nullptr);  // while the pixel is in L1
#endif
}

#ifdef __AVX512F__
// Output pixels [x0, x1) of one row of a 3x3 depthwise convolution, padding 1, whose windows lie
// inside the image's width; rows[ky] is input row oy * stride - 1 + ky, or null above or below
// the image. Per 16 channels the nine taps stay in registers across a tile of pixels: per pixel,
// depthwise_pixel loads them again beside its inputs, and the loads bounded it. Same sums, in
// the same order.
static void depthwise3x3_inside(const float* const rows[3], int64_t C, int64_t stride,
                                const float* taps, const float* bias, int64_t x0, int64_t x1,
                                float* out, bool then_gelu) {
    constexpr int64_t kTile = 32;  // pixels: their inputs stay in L1 across the channel steps
    for (int64_t t0 = x0; t0 < x1; t0 += kTile) {
        const int64_t t1 = std::min(x1, t0 + kTile);
        for (int64_t c = 0; c < C; c += 16) {
            const __mmask16 m = lanes_left(C - c);
            __m512 w[9];
            for (int t = 0; t < 9; ++t) w[t] = _mm512_maskz_loadu_ps(m, taps + t * C + c);
            const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
            for (int64_t ox = t0; ox < t1; ++ox) {
                __m512 acc = b;
                for (int ky = 0; ky < 3; ++ky) {
                    if (!rows[ky]) continue;
                    const float* in = rows[ky] + (ox * stride - 1) * C + c;
                    for (int kx = 0; kx < 3; ++kx)
                        acc = _mm512_fmadd_ps(w[3 * ky + kx], _mm512_maskz_loadu_ps(m, in + kx * C),
                                              acc);
                }
                _mm512_mask_storeu_ps(out + ox * C + c, m, then_gelu ? gelu16(acc) : acc);
            }
        }
    }
}
#endif

Tensor depthwise_conv2d_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                            int padding, bool then_gelu) {
    if (x.ndim() != 3 || weight.ndim() != 4 || weight.dim(0) != x.dim(2) || weight.dim(1) != 1)
        throw std::invalid_argument("depthwise_conv2d_hwc: x " + shape_str(x.shape()) +
                                    " vs weight " + shape_str(weight.shape()));
    const int64_t H = x.dim(0), W = x.dim(1), C = x.dim(2);
    const int64_t kh = weight.dim(2), kw = weight.dim(3);
    const int64_t OH = conv_out_size(H, kh, stride, padding);
    const int64_t OW = conv_out_size(W, kw, stride, padding);
    // taps[(ky, kx), c]: each kernel position's weights contiguous over channels.
    std::vector<float> taps(kh * kw * C);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < kh * kw; ++t) taps[t * C + c] = weight[c * kh * kw + t];
    const float* b = bias.empty() ? nullptr : bias.data();
    // Columns whose 3x3 window lies inside the width, for depthwise3x3_inside; the rest (and
    // other kernels) go pixel by pixel.
    int64_t x_lo = 0, x_hi = 0;
#ifdef __AVX512F__
    if (kh == 3 && kw == 3 && padding == 1) {
        x_lo = std::min<int64_t>(1, OW);
        x_hi = std::max(x_lo, std::min<int64_t>(OW, W >= 2 ? (W - 2) / stride + 1 : 0));
    }
#endif
    Tensor y({OH, OW, C});
#pragma omp parallel for
    for (int64_t oy = 0; oy < OH; ++oy) {
        std::vector<const float*> in(kh * kw), k(kh * kw);  // the pixel's taps inside the image
        auto pixel = [&](int64_t ox) {
            int n = 0;
            for (int64_t ky = 0; ky < kh; ++ky) {
                const int64_t iy = oy * stride - padding + ky;
                if (iy < 0 || iy >= H) continue;
                for (int64_t kx = 0; kx < kw; ++kx) {
                    const int64_t ix = ox * stride - padding + kx;
                    if (ix < 0 || ix >= W) continue;
                    in[n] = x.data() + (iy * W + ix) * C;
                    k[n++] = taps.data() + (ky * kw + kx) * C;
                }
            }
            depthwise_pixel(y.data() + (oy * OW + ox) * C, C, in.data(), k.data(), n, b, then_gelu);
        };
        for (int64_t ox = 0; ox < x_lo; ++ox) pixel(ox);
        for (int64_t ox = x_hi; ox < OW; ++ox) pixel(ox);
#ifdef __AVX512F__
        if (x_lo < x_hi) {
            const float* rows[3];
            for (int64_t ky = 0; ky < 3; ++ky) {
                const int64_t iy = oy * stride - 1 + ky;
                rows[ky] = iy >= 0 && iy < H ? x.data() + iy * W * C : nullptr;
            }
            depthwise3x3_inside(rows, C, stride, taps.data(), b, x_lo, x_hi, y.data() + oy * OW * C,
                                then_gelu);
        }
#endif
    }
    return y;
}

Tensor conv_transpose2x2(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2), O = weight.dim(1);
    if (weight.dim(0) != C || weight.dim(2) != 2 || weight.dim(3) != 2)
        throw std::invalid_argument("conv_transpose2x2: weight " + shape_str(weight.shape()));
    // tmp[(o, ky, kx), pixel] = sum_c weight[c, (o, ky, kx)] * x[c, pixel]
    const int64_t HW = H * W;
    std::vector<float> tmp(O * 4 * HW);
    gemm(true, false, O * 4, HW, C, 1.0f, weight.data(), O * 4, x.data(), HW, 0.0f, tmp.data(), HW);
    Tensor y({O, 2 * H, 2 * W});
#pragma omp parallel for
    for (int64_t o = 0; o < O; ++o) {
        const float b0 = bias.empty() ? 0.0f : bias[o];
        for (int k = 0; k < 4; ++k) {
            const int ky = k / 2, kx = k % 2;
            const float* src = tmp.data() + (o * 4 + k) * HW;
            for (int64_t iy = 0; iy < H; ++iy)
                for (int64_t ix = 0; ix < W; ++ix)
                    y[(o * 2 * H + 2 * iy + ky) * 2 * W + 2 * ix + kx] = src[iy * W + ix] + b0;
        }
    }
    return y;
}

Tensor chw_to_hwc(const Tensor& x) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    Tensor y({H, W, C});
#pragma omp parallel for if (C * H * W > 65536)
    for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
            for (int64_t c = 0; c < C; ++c) y[(h * W + w) * C + c] = x[(c * H + h) * W + w];
    return y;
}

Tensor hwc_to_chw(const Tensor& x) {
    const int64_t H = x.dim(0), W = x.dim(1), C = x.dim(2);
    Tensor y({C, H, W});
#pragma omp parallel for if (C * H * W > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) y[(c * H + h) * W + w] = x[(h * W + w) * C + c];
    return y;
}

// Source indices and weights of one output coordinate, as PyTorch's
// compute_source_index_and_lambda with align_corners=false (float arithmetic; equal sizes copy).
struct LerpTap {
    int64_t i0, i1;
    float w0, w1;
};

static std::vector<LerpTap> lerp_taps(int64_t in, int64_t out) {
    std::vector<LerpTap> taps(out);
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (int64_t o = 0; o < out; ++o) {
        if (in == out) {
            taps[o] = {o, o, 1.0f, 0.0f};
            continue;
        }
        const float src = std::max((o + 0.5f) * scale - 0.5f, 0.0f);
        const int64_t i0 = std::min(static_cast<int64_t>(src), in - 1);
        const int64_t i1 = std::min(i0 + 1, in - 1);
        const float w1 = std::min(src - static_cast<float>(i0), 1.0f);
        taps[o] = {i0, i1, 1.0f - w1, w1};
    }
    return taps;
}

// The taps of the resize along a row, as arrays for the vector path of lerp_row.
struct RowTaps {
    std::vector<int32_t> i0, i1;
    std::vector<float> w0, w1;
    explicit RowTaps(const std::vector<LerpTap>& taps) {
        for (const LerpTap& t : taps) {
            i0.push_back(static_cast<int32_t>(t.i0));
            i1.push_back(static_cast<int32_t>(t.i1));
            w0.push_back(t.w0);
            w1.push_back(t.w1);
        }
    }
};

// dst[o] = w0[o] * src[i0[o]] + w1[o] * src[i1[o]] for the n outputs of a row of W inputs. When
// 16 outputs read fewer than 32 inputs (an upscaling, or a downscaling by up to 2: from 5 / 4 for
// a 4x one, 26 for 1024 -> 640), two loads and two permutes serve them, not 32 scalar loads.
static void lerp_row(const float* src, int64_t W, const RowTaps& t, int64_t n, float* dst) {
    int64_t o = 0;
#ifdef __AVX512F__
    for (; o + 16 <= n; o += 16) {
        const int32_t lo = t.i0[o];
        if (t.i1[o + 15] - lo >= 32) break;  // a downscaling by over 2: the scalar loop
        const int64_t left = W - lo;
        const __m512 v0 = _mm512_maskz_loadu_ps(lanes_left(left), src + lo);
        const __m512 v1 = _mm512_maskz_loadu_ps(lanes_left(left - 16), src + lo + 16);
        const __m512i base = _mm512_set1_epi32(lo);
        const __m512 a = _mm512_permutex2var_ps(
            v0, _mm512_sub_epi32(_mm512_loadu_si512(t.i0.data() + o), base), v1);
        const __m512 b = _mm512_permutex2var_ps(
            v0, _mm512_sub_epi32(_mm512_loadu_si512(t.i1.data() + o), base), v1);
        _mm512_storeu_ps(dst + o,
                         _mm512_fmadd_ps(_mm512_loadu_ps(t.w1.data() + o), b,
                                         _mm512_mul_ps(_mm512_loadu_ps(t.w0.data() + o), a)));
    }
#endif
    for (; o < n; ++o) dst[o] = t.w0[o] * src[t.i0[o]] + t.w1[o] * src[t.i1[o]];
}

// One resize of interpolate_bilinear, cropped to keep_h x keep_w: its taps down the height and
// along the width.
struct BilinearResize {
    std::vector<LerpTap> ty;
    RowTaps tx;
    int64_t in_w, out_w;
    bool copy_rows;  // the width is unchanged: the width pass would be the identity
    BilinearResize(int64_t H, int64_t W, int64_t oh, int64_t ow, int64_t keep_h, int64_t keep_w)
        : ty(lerp_taps(H, oh)),
          tx(kept(lerp_taps(W, ow), keep_w)),
          in_w(W),
          out_w(keep_w),
          copy_rows(W == ow) {
        if (H < 1 || W < 1 || keep_h < 1 || keep_w < 1 || keep_h > oh || keep_w > ow)
            throw std::invalid_argument("interpolate_bilinear: bad sizes " + std::to_string(H) +
                                        "x" + std::to_string(W) + " -> " + std::to_string(oh) +
                                        "x" + std::to_string(ow));
        ty.resize(keep_h);
    }
    static std::vector<LerpTap> kept(std::vector<LerpTap> taps, int64_t n) {
        taps.resize(std::min<size_t>(taps.size(), static_cast<size_t>(n)));
        return taps;
    }
};

// The output rows of one channel's resize, PyTorch's order of operations without a full-size
// intermediate: each input row it needs (input(r) returns row r) is lerped along the width once
// into a two-row cache (rows i0 and i0 + 1 differ in parity), then the rows are lerped down the
// height. cache: 2 * out_w floats.
template <typename InputRow>
class ResizedRows {
  public:
    ResizedRows(const BilinearResize& resize, InputRow input, float* cache)
        : resize_(resize), input_(input), cache_(cache) {}

    // Output row oy, each value through emit(v), into dst [out_w].
    template <typename T, typename Emit>
    void row(int64_t oy, T* dst, Emit emit) {
        const LerpTap t = resize_.ty[oy];
        const int64_t n = resize_.out_w;
        const float* r0 = width_lerped(t.i0);
        // omp simd: a byte output may alias the rows as far as the compiler knows.
        if (t.w1 == 0.0f) {
#pragma omp simd
            for (int64_t ox = 0; ox < n; ++ox) dst[ox] = emit(r0[ox]);
            return;
        }
        const float* r1 = width_lerped(t.i1);
#pragma omp simd
        for (int64_t ox = 0; ox < n; ++ox) dst[ox] = emit(t.w0 * r0[ox] + t.w1 * r1[ox]);
    }

  private:
    const float* width_lerped(int64_t r) {
        if (resize_.copy_rows) return input_(r);
        float* dst = cache_ + (r & 1) * resize_.out_w;
        if (cached_[r & 1] != r) {
            lerp_row(input_(r), resize_.in_w, resize_.tx, resize_.out_w, dst);
            cached_[r & 1] = r;
        }
        return dst;
    }

    const BilinearResize& resize_;
    InputRow input_;
    float* cache_;
    int64_t cached_[2] = {-1, -1};
};

// Blocks of output rows of every channel of an [C, rows, cols] output in parallel:
// block(c, first_row, end_row, cache) with cache_floats of its thread's own.
template <typename Block>
static void for_row_blocks(int64_t C, int64_t rows, int64_t cols, int64_t cache_floats,
                           const Block& block) {
    const int64_t per_block = 32, blocks = (rows + per_block - 1) / per_block;
    parallel_region(C * rows * cols > 65536, [&] {
        std::vector<float> cache(cache_floats);
#pragma omp for collapse(2) schedule(static)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t b = 0; b < blocks; ++b)
                block(c, b * per_block, std::min(rows, (b + 1) * per_block), cache.data());
    });
}

// The resize of interpolate_bilinear into out [C, keep_h, keep_w], each value through emit(v).
template <typename T, typename Emit>
static void interpolate_bilinear_into(const Tensor& x, int64_t oh, int64_t ow, int64_t keep_h,
                                      int64_t keep_w, T* out, Emit emit) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    keep_h = keep_h > 0 ? keep_h : oh;
    keep_w = keep_w > 0 ? keep_w : ow;
    const BilinearResize resize(H, W, oh, ow, keep_h, keep_w);
    for_row_blocks(C, keep_h, keep_w, 2 * keep_w,
                   [&](int64_t c, int64_t y0, int64_t y1, float* cache) {
                       auto input = [&](int64_t r) { return x.data() + (c * H + r) * W; };
                       ResizedRows<decltype(input)> rows(resize, input, cache);
                       for (int64_t oy = y0; oy < y1; ++oy)
                           rows.row(oy, out + (c * keep_h + oy) * keep_w, emit);
                   });
}

Tensor interpolate_bilinear(const Tensor& x, int64_t oh, int64_t ow, int64_t keep_h,
                            int64_t keep_w) {
    Tensor y({x.dim(0), keep_h > 0 ? keep_h : oh, keep_w > 0 ? keep_w : ow});
    interpolate_bilinear_into(x, oh, ow, keep_h, keep_w, y.data(), [](float v) { return v; });
    return y;
}

std::vector<uint8_t> interpolate_bilinear_positive(const Tensor& x, int64_t oh, int64_t ow,
                                                   int64_t keep_h, int64_t keep_w) {
    keep_h = keep_h > 0 ? keep_h : oh;
    keep_w = keep_w > 0 ? keep_w : ow;
    std::vector<uint8_t> masks(static_cast<size_t>(x.dim(0) * keep_h * keep_w));
    interpolate_bilinear_into(x, oh, ow, keep_h, keep_w, masks.data(),
                              [](float v) { return static_cast<uint8_t>(v > 0.0f); });
    return masks;
}

std::vector<uint8_t> interpolate_bilinear_twice_positive(const Tensor& x, int64_t oh, int64_t ow,
                                                         int64_t keep_h, int64_t keep_w,
                                                         int64_t oh2, int64_t ow2) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const BilinearResize first(H, W, oh, ow, keep_h, keep_w);
    const BilinearResize second(keep_h, keep_w, oh2, ow2, oh2, ow2);
    std::vector<uint8_t> masks(static_cast<size_t>(C * oh2 * ow2));
    // A thread's cache: the first resize's, the rows it made (by parity, as the second reads them
    // two at a time), the second's.
    const int64_t cache_floats = 4 * keep_w + 2 * ow2;
    for_row_blocks(C, oh2, ow2, cache_floats, [&](int64_t c, int64_t y0, int64_t y1, float* cache) {
        auto input = [&](int64_t r) { return x.data() + (c * H + r) * W; };
        ResizedRows<decltype(input)> inner(first, input, cache);
        float* const made = cache + 2 * keep_w;
        int64_t made_row[2] = {-1, -1};
        auto first_row = [&](int64_t r) -> const float* {
            float* dst = made + (r & 1) * keep_w;
            if (made_row[r & 1] != r) {
                inner.row(r, dst, [](float v) { return v; });
                made_row[r & 1] = r;
            }
            return dst;
        };
        ResizedRows<decltype(first_row)> outer(second, first_row, cache + 4 * keep_w);
        for (int64_t oy = y0; oy < y1; ++oy)
            outer.row(oy, masks.data() + (c * oh2 + oy) * ow2,
                      [](float v) { return static_cast<uint8_t>(v > 0.0f); });
    });
    return masks;
}

// Four source indices (clamped to the border) and weights of one output coordinate, as PyTorch's
// bicubic upsampling with align_corners=false: the source coordinate is not clamped, only its
// fraction is (guard_index_and_lambda).
struct CubicTaps {
    int64_t idx[4];
    float w[4];
};

static std::vector<CubicTaps> cubic_taps(int64_t in, int64_t out) {
    const float A = -0.75f;
    auto near = [A](float t) { return ((A + 2) * t - (A + 3)) * t * t + 1; };       // |t| <= 1
    auto far = [A](float t) { return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A; };  // 1 < |t| < 2
    std::vector<CubicTaps> taps(out);
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (int64_t o = 0; o < out; ++o) {
        const float src = scale * (o + 0.5f) - 0.5f;
        const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
        const float t = std::clamp(src - static_cast<float>(i0), 0.0f, 1.0f);
        CubicTaps& c = taps[o];
        c.w[0] = far(t + 1);
        c.w[1] = near(t);
        c.w[2] = near(1 - t);
        c.w[3] = far(2 - t);
        for (int k = 0; k < 4; ++k) c.idx[k] = std::clamp<int64_t>(i0 - 1 + k, 0, in - 1);
    }
    return taps;
}

Tensor interpolate_bicubic(const Tensor& x, int64_t oh, int64_t ow) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const std::vector<CubicTaps> ty = cubic_taps(H, oh), tx = cubic_taps(W, ow);
    // Separable: rows first, then columns, which is PyTorch's order of summation.
    Tensor rows({C, H, ow});
#pragma omp parallel for collapse(2) if (C * H * ow > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t iy = 0; iy < H; ++iy) {
            const float* src = x.data() + (c * H + iy) * W;
            float* dst = rows.data() + (c * H + iy) * ow;
            for (int64_t ox = 0; ox < ow; ++ox) {
                const CubicTaps& t = tx[ox];
                float acc = src[t.idx[0]] * t.w[0];
                for (int k = 1; k < 4; ++k) acc += src[t.idx[k]] * t.w[k];
                dst[ox] = acc;
            }
        }
    Tensor y({C, oh, ow});
#pragma omp parallel for collapse(2) if (C * oh * ow > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t oy = 0; oy < oh; ++oy) {
            const CubicTaps& t = ty[oy];
            const float* src = rows.data() + c * H * ow;
            float* dst = y.data() + (c * oh + oy) * ow;
            for (int64_t ox = 0; ox < ow; ++ox) {
                float acc = src[t.idx[0] * ow + ox] * t.w[0];
                for (int k = 1; k < 4; ++k) acc += src[t.idx[k] * ow + ox] * t.w[k];
                dst[ox] = acc;
            }
        }
    return y;
}

void attention(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
               int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads, int64_t D,
               const ScoreBias& bias) {
    // Blocks of query rows keep each score block in cache; (head, block) pairs run in parallel.
    const int64_t block = 128;
    const int64_t nblocks = (Lq + block - 1) / block;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const int64_t tasks = heads * nblocks;
    parallel_region(tasks > 1 && Lq * Lk * D > 32768, [&] {
        std::vector<float> scores(block * Lk), inv_sum(block);
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int h = static_cast<int>(t / nblocks);
            const int64_t q0 = (t % nblocks) * block, q1 = std::min(q0 + block, Lq), n = q1 - q0;
            gemm(false, true, n, Lk, D, scale, q + q0 * ldq + h * D, ldq, k + h * D, ldk, 0.0f,
                 scores.data(), Lk);
            if (bias) bias(h, q0, q1, scores.data(), Lk);
            // The softmax's normalising scale goes onto the [n, D] output, not the [n, Lk]
            // probabilities: one pass less over the scores (~15% of long attentions).
            softmax_numerators(scores.data(), n, Lk, inv_sum.data());
            float* o = out + q0 * ldo + h * D;
            gemm(false, false, n, D, Lk, 1.0f, scores.data(), Lk, v + h * D, ldv, 0.0f, o, ldo);
            for (int64_t r = 0; r < n; ++r)
                for (int64_t d = 0; d < D; ++d) o[r * ldo + d] *= inv_sum[r];
        }
    });
}

}  // namespace splitseg
