// Kernels shared by every model: matrix products, norms, activations, convolutions, attention.
// Layouts: images are [C, H, W] (one image at a time, no batch dimension); token sequences are
// [N, C] row-major. Weights follow PyTorch: Linear [out, in], Conv2d [out, in/groups, kh, kw],
// ConvTranspose2d [in, out, kh, kw].
#pragma once

#include <omp.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace splitseg {

// Whether a parallel region entered here would run on more than one thread. A `#pragma omp
// parallel` that runs on one (its `if` false, one thread allowed, or nested in a team) still goes
// through libgomp: 1-3 us and two futex system calls each on this VM, and a click entered some
// 300 of them (the softmax of every head in every pixel block): 5-8 % of a one-thread decode,
// which is how a server runs its decodes side by side.
inline bool team_available() {
    return omp_get_max_threads() > 1 && !omp_in_parallel();
}

// body() on each thread of a team when `worth_it` and team_available(), else once on this
// thread; a `#pragma omp for` inside body then runs every iteration here. Inside a parallel
// region (even one of one thread), body gets a team of one of its own: a `#pragma omp for` in it
// would bind to the enclosing team, whose other threads never reach it, or inside the enclosing
// team's own worksharing loop, share that loop's state.
template <class Body>
void parallel_region(bool worth_it, const Body& body) {
    if (omp_get_level() > 0) {
#pragma omp parallel num_threads(1)
        body();
    } else if (worth_it && omp_get_max_threads() > 1) {
#pragma omp parallel
        body();
    } else {
        body();
    }
}

// body(i) for i < n, split across a team when `worth_it` and team_available().
template <class Body>
void parallel_for(int64_t n, bool worth_it, const Body& body) {
    if (worth_it && n > 1 && team_available()) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; ++i) body(i);
    } else {
        for (int64_t i = 0; i < n; ++i) body(i);
    }
}

// Threads used by every kernel (OpenMP and the GEMM library). n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();
// Caps the threads of the kernels the calling thread runs (its OpenMP team size, which oneDNN
// follows) while it lives: a server running several decodes at once gives each one thread
// instead of oversubscribing the cores with teams that spin-wait on each other.
class ThreadCap {
  public:
    explicit ThreadCap(int threads);
    ~ThreadCap();
    ThreadCap(const ThreadCap&) = delete;
    ThreadCap& operator=(const ThreadCap&) = delete;

  private:
    int previous_;
};

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, with op = transpose when trans_* is set.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// gemm() with both operands in bfloat16 (raw bits), accumulating in f32: C = op(A) op(B) + beta C
// with beta 0 or 1. Runs on AMX / AVX512-BF16 through oneDNN; the WASM build has no bf16 path
// and throws. Safe to call from several threads at once.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// out[i] = x[i] rounded to bfloat16 (x finite), i < n. With AVX512-BF16, denormals become 0.
void to_bf16(const float* x, int64_t n, uint16_t* out);

// y[M, N] = x[M, K] * W[N, K]^T + b[N] (b may be null).
void linear(const float* x, int64_t M, int64_t K, const float* W, const float* b, int64_t N,
            float* y);
// x [..., K] -> [..., N]; bias may be empty.
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b);
// y[M, N] += x[M, K] * W[N, K]^T + b[N] (b may be null): a linear layer onto a residual stream.
void linear_add(const float* x, int64_t M, int64_t K, const float* W, const float* b, int64_t N,
                float* y);
// y [..., N] += x [..., K] * W^T + b (b may be empty); checks the shapes.
void linear_add(Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b);

// A linear layer's weights W [N, K] packed for products with few rows (the prompt decoder's ~10
// tokens): panels of kPanelColumns output columns, each [K][kPanelColumns] contiguous, the last
// zero-padded. A panel's column block stays in registers for up to 8 rows while W streams through
// once. oneDNN's sgemm re-packs W in every call and took 5-10x longer from 16 rows on (K = 2048).
// Packed in IEEE half instead (half_panels), W streams half the bytes: a few rows hold W's
// products for too short a time to hide its load from memory.
struct PanelWeights {
    static constexpr int64_t kPanelColumns = 32;
    int64_t in = 0, out = 0;
    std::vector<float> panels;
    std::vector<uint16_t> half_panels;  // the same panels rounded to half, when packed so
};
PanelWeights pack_panels(const Tensor& W, bool half = false);  // W [N, K]
// y [M, N] = x [M, K] * W^T + b[N] (b may be null). Meant for M up to a few dozen rows.
void linear_panels(const float* x, int64_t M, const PanelWeights& w, const float* b, float* y);
// x [..., K] -> [..., N]; b may be empty.
Tensor linear_panels(const Tensor& x, const PanelWeights& w, const Tensor& b);

// In place over the last dimension of x [..., C].
void layer_norm(Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
// y[rows, C] = LayerNorm(x[rows, C]) over the last dimension; y may be x.
void layer_norm(const float* x, float* y, int64_t rows, int64_t C, const float* weight,
                const float* bias, float eps);
// What layer_norm_channels can do in the same pass over x (the prompt decoder's image tokens and
// its upscaling).
struct ChannelNormExtras {
    const float* add_first = nullptr;  // [C]: added to each channel before normalising
    const float* src = nullptr;        // [C, H*W]: normalised into x instead of x in place
    // layer_norm_channels_block: the source in bfloat16 instead [C, H*W]; it may be x_bf16 itself
    // (each block's rows are read before they are written).
    const uint16_t* src_bf16 = nullptr;
    // layer_norm_channels_block: when set, src or src_bf16 is the block's own [C, n] instead, row
    // stride src_ld from the block's first pixel (an image stored in blocks of pixels).
    int64_t src_ld = 0;
    // layer_norm_channels_block: [C, n] (row stride add_ld) added to the block's pixels before
    // normalising; left holding the block's input (src + add_first + add).
    float* add = nullptr;
    int64_t add_ld = 0;
    bool gelu = false;           // GELU after the affine (the result is then x's)
    const Tensor* pe = nullptr;  // with x_pe or x_pe_bf16: x + pe after normalising
    // layer_norm_channels_block: pe rounded to bfloat16 [C, H*W], read instead of pe for x_pe_bf16
    // (half the bytes of a pass that memory bounds); with pe_ld, the block's own [C, n] instead,
    // row stride pe_ld from the block's first pixel.
    const uint16_t* pe_bf16 = nullptr;
    int64_t pe_ld = 0;
    Tensor* x_pe = nullptr;
    uint16_t* x_bf16 = nullptr;     // the result rounded to bfloat16
    uint16_t* x_pe_bf16 = nullptr;  // x + pe rounded to bfloat16 (x_pe need not be asked for)
    float* mean = nullptr;          // [H*W]: each pixel's mean (of the input)
    float* inv_std = nullptr;       // [H*W]: 1 / its standard deviation (eps included)
    // layer_norm_channels_block: when set, the results (x, x_bf16, x_pe, x_pe_bf16) are a block
    // of their own, channel c's row at c * out_ld from the block's first pixel (a caller that
    // reads the block while it is in cache and never stores the image); src or src_bf16 must
    // then be given.
    int64_t out_ld = 0;
};
// LayerNorm2d: in place over channels of x [C, H, W] (per pixel).
void layer_norm_channels(Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         const ChannelNormExtras& extras = {});
// The same over the pixels [i0, i0 + n) of x [C, HW] only (n <= 1024), on the calling thread: for
// callers that produce x block by block and normalise each block while it is in L2. x_pe must
// have x's size already. x may be null when src or src_bf16 is given: the f32 result is then not
// stored, only what extras ask for (x_bf16, x_pe, x_pe_bf16).
void layer_norm_channels_block(float* x, int64_t C, int64_t HW, int64_t i0, int64_t n,
                               const float* weight, const float* bias, float eps,
                               const ChannelNormExtras& extras);

void gelu(Tensor& x);  // exact (erf) GELU, PyTorch's default
// x[i] = gelu(x[i] + bias + add[i]) over n values; add may be null.
void add_gelu(float* x, int64_t n, float bias, const float* add);
// Channels of GELU values mixed by weights w [M, C], the GELU values never stored:
//   out[m * ld_out + i] = sum_c w[m * C + c] * gelu(x[c * ldx + i] + a_c[i]),  i < n,
// a_c[i] = add[c * ld_add + i] when add is given, else bias[c]. One pass over x [C, n] per 4
// outputs (the masks' last step: 32 channels of the upscaled image, 1-4 masks).
void gelu_mix(const float* x, int64_t ldx, int64_t C, int64_t n, const float* bias,
              const float* add, int64_t ld_add, const float* w, int64_t M, float* out,
              int64_t ld_out);
// A short product on top of a matrix scaled per column, y written once:
//   y[r * ldy + i] = a_scale * a[r * lda + i] * s[i] + sum_k w[r * K + k] * f[k * ldf + i] + b_r[i]
// for r < R, i < n, with b_r[i] = add[r * ld_add + i] when add is given, else bias[r]. Meant for
// K up to a few dozen (the prompt decoder's first upscaling: the image's term scaled per token
// plus the token statistics' terms). a in f32, or in IEEE half (half the bytes of a matrix the
// pass reads from memory) with a_scale a power of two that keeps it in half's range.
void scaled_plus_product(int64_t R, int64_t n, const float* a, float a_scale, int64_t lda,
                         const float* s, const float* w, int64_t K, const float* f, int64_t ldf,
                         const float* bias, const float* add, int64_t ld_add, float* y,
                         int64_t ldy);
void scaled_plus_product(int64_t R, int64_t n, const uint16_t* a_f16, float a_scale, int64_t lda,
                         const float* s, const float* w, int64_t K, const float* f, int64_t ldf,
                         const float* bias, const float* add, int64_t ld_add, float* y,
                         int64_t ldy);
void relu(Tensor& x);
void add_(Tensor& x, const Tensor& y);                    // x += y, same numel
void add_scaled_(Tensor& x, const Tensor& y, float s);    // x += s * y
void softmax_rows(float* x, int64_t rows, int64_t cols);  // in place, numerically stable
// Row r of x [rows, cols] becomes exp(x - the row's max), in place, and inv_sum[r] 1 / its sum:
// softmax before the normalising scale, which attention applies to its narrower output instead.
// With bf16 given, the numerators go there instead, rounded to bfloat16 (x keeps its scores),
// and the AVX-512 path computes them (and inv_sum) only to that precision (1e-4 relative).
// row_max, when given, holds a floor for each row's max (-inf for none) and gets the max the
// numerators are relative to: the floor or the row's max, the larger (flash attention's running
// max). Numerators under e^-60 of it are 0, so with a floor a row's may all be (inv_sum is inf).
void softmax_numerators(float* x, int64_t rows, int64_t cols, float* inv_sum,
                        uint16_t* bf16 = nullptr, float* row_max = nullptr);
// softmax_numerators, bf16 out, of one row of scores over an S x S grid of keys with a separable
// bias added: row[y * S + x] + by_row[y] + by_col[x] (decomposed relative positions), without
// writing the sum back to row.
void softmax_numerators_grid(const float* row, int64_t S, const float* by_row, const float* by_col,
                             float* inv_sum, uint16_t* bf16);
// Where softmax_columns also writes the probabilities, row by row while each is in L1: f32 rows
// f32_ld apart, rows rounded to bf16 (cols apart).
struct SoftmaxCopies {
    float* f32 = nullptr;
    int64_t f32_ld = 0;
    uint16_t* bf16 = nullptr;
};
// In place over each column of x [rows, cols] (rows ld apart; 0: cols): softmax over the rows
// (few rows, many columns).
void softmax_columns(float* x, int64_t rows, int64_t cols, const SoftmaxCopies& copies = {},
                     int64_t ld = 0);

// x [C, H, W] -> [O, H', W']. weight [O, C/groups, kh, kw], bias [O] or empty.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding,
              int groups = 1);
// Convolution on a channels-last image: x [H, W, C] -> [H', W', O]; weight [O, C, kh, kw] as
// PyTorch, bias [O] or empty; GELU on the output where asked. Small weights (a stem's) run, on
// AVX-512, as a direct convolution that sums each output pixel in registers; larger ones as
// im2col + GEMM over bands of output rows, so the patch matrix stays in cache and the bands run
// in parallel.
Tensor conv2d_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                  int padding, bool then_gelu = false);
// The same from a planar image x [C, H, W] (a model's input) to [H', W', O]: a patch embedding
// without transposing the image first.
Tensor conv2d_planar_to_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                            int padding, bool then_gelu = false);
// Depthwise convolution on a channels-last image: x [H, W, C] -> [H', W', C]; weight
// [C, 1, kh, kw] as PyTorch, bias [C] or empty. Vectorises over channels. With then_gelu, GELU
// is applied to each output pixel as it is made.
Tensor depthwise_conv2d_hwc(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                            int padding, bool then_gelu = false);
// ConvTranspose2d with kernel 2, stride 2: x [C, H, W] -> [O, 2H, 2W]; weight [C, O, 2, 2].
Tensor conv_transpose2x2(const Tensor& x, const Tensor& weight, const Tensor& bias);

// [C, H, W] <-> [H, W, C]
Tensor chw_to_hwc(const Tensor& x);
Tensor hwc_to_chw(const Tensor& x);

// Bilinear resize of x [C, H, W] to [C, oh, ow] as torch.nn.functional.interpolate(mode="bilinear",
// align_corners=false, antialias=false), with PyTorch's arithmetic (rows lerped, then columns).
// keep_h/keep_w > 0 return only the top-left keep_h x keep_w corner of that result (a crop after
// the resize) and compute nothing else.
Tensor interpolate_bilinear(const Tensor& x, int64_t oh, int64_t ow, int64_t keep_h = 0,
                            int64_t keep_w = 0);
// interpolate_bilinear(x, oh, ow, keep_h, keep_w) > 0 as 0/1 bytes: masks from logits without
// the float image in between (a quarter of the bytes written, no second pass).
std::vector<uint8_t> interpolate_bilinear_positive(const Tensor& x, int64_t oh, int64_t ow,
                                                   int64_t keep_h = 0, int64_t keep_w = 0);
// interpolate_bilinear_positive(interpolate_bilinear(x, oh, ow, keep_h, keep_w), oh2, ow2): two
// resizes (SAM's masks to its input frame, cropped, then to the image's size) without the float
// image of the first in between; its rows are made as the second reads them.
std::vector<uint8_t> interpolate_bilinear_twice_positive(const Tensor& x, int64_t oh, int64_t ow,
                                                         int64_t keep_h, int64_t keep_w,
                                                         int64_t oh2, int64_t ow2);
// Bicubic resize of x [C, H, W] to [C, oh, ow] as torch.nn.functional.interpolate(mode="bicubic",
// align_corners=false, antialias=false): Keys' kernel with A = -0.75, border pixels repeated.
Tensor interpolate_bicubic(const Tensor& x, int64_t oh, int64_t ow);

// Adds a bias to a block of attention scores before softmax: scores [q1 - q0, Lk] for queries
// [q0, q1) of one head, rows ld floats apart.
using ScoreBias = std::function<void(int head, int64_t q0, int64_t q1, float* scores, int64_t ld)>;

// Multi-head scaled dot-product attention. q [Lq, heads*D] (row stride ldq), k and v [Lk, heads*D]
// (strides ldk, ldv), out [Lq, heads*D] (stride ldo). Scores are scaled by 1/sqrt(D).
// Runs in row blocks so the full score matrix is never materialised.
void attention(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
               int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads, int64_t D,
               const ScoreBias& bias = nullptr);

}  // namespace splitseg
