// SAM / MobileSAM / SAM 2.1 prompt encoder and mask decoder.
//
// decode(): prompts -> sparse tokens (random Fourier features + learned embeddings) and a dense
// prompt (downscaled mask or no_mask_embed) -> two-way transformer between the tokens and the
// 64x64 image tokens -> upscaled image features (SAM 2: plus the high-resolution features) ->
// one mask per mask token through its hypernetwork, IoU head (SAM 2: object-score head).
//
// Layouts: tokens are [T, C] rows; the image side stays [C, HW] (the embedding's own layout)
// from the embedding to the masks, so nothing is transposed per click. What depends on the image
// only (layer 0's projections, SAM 2's high-resolution terms) is computed once per image by
// prepare(), what depends on the model only (the dense positional encoding, the folds) at load.
// A mask prompt changes layer 0's projections by a term of rank 16 (mask_layer0), so every click
// reads the prepared ones.
#include "engine/models/sam_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include <omp.h>

#include "engine/ops.h"

namespace splitseg {

namespace {

constexpr float kLayerNormEps = 1e-5f;    // nn.LayerNorm in the transformer
constexpr float kLayerNorm2dEps = 1e-6f;  // LayerNorm2d in the mask convolutions

// A linear layer over the tokens (a few rows). w also serves the products over the image.
struct Linear {
    Tensor w, b;          // [out, in], [out]
    PanelWeights packed;  // w packed for the tokens' few rows
    Tensor operator()(const Tensor& x) const { return linear_panels(x, packed, b); }
};

struct Norm {
    Tensor w, b;
};

struct Conv {
    Tensor w, b;
};

// Linear layers with ReLU between them (the references' MLP and MLPBlock).
struct Mlp {
    std::vector<Linear> layers;
    Tensor operator()(Tensor x) const {
        for (size_t i = 0; i < layers.size(); ++i) {
            x = layers[i](x);
            if (i + 1 < layers.size()) relu(x);
        }
        return x;
    }
};

struct Attention {
    Linear q, k, v, out;
};

struct TwoWayLayer {
    Attention self_attn, token_to_image, image_to_token;
    Norm norm1, norm2, norm3, norm4;
    Mlp mlp;
};

}  // namespace

struct SamDecoderWeights {
    // Prompt encoder.
    Tensor pe_gaussian;                 // [2, C/2] random Fourier frequencies
    std::array<Tensor, 4> point_embed;  // [1, C] each: background, foreground, box corner 0 and 1
    Tensor not_a_point;                 // [1, C] padding token
    Tensor no_mask;                     // [1, C] dense prompt when no mask is given
    Conv mask_conv1, mask_conv2, mask_conv3;
    Norm mask_norm1, mask_norm2;
    // Mask decoder.
    Tensor output_tokens;  // [S + 1 + M, C]: (SAM 2: object score,) IoU, M mask tokens
    std::vector<TwoWayLayer> layers;
    Attention final_attn;
    Norm final_norm;
    Conv upscale1, upscale2;  // ConvTranspose2d, kernel 2, stride 2
    Norm upscale_norm;
    // bf16 compute: upscale2's weight [in, out, 2, 2] as the rounded [out * 4, in] (oneDNN's AMX
    // kernels take a row-major left operand only). upscale1 stays f32: in bf16 it took the golden
    // masks' IoU against f32 to 0.990, at the edge of the bar.
    std::vector<uint16_t> upscale2_bf16;
    // The first upscaling convolution W folded through the image side of the transformer
    // (fold_first_upscale): per layer l of L, G_l = W D_{L-1} ... D_l [O*4, C] (D: the layers'
    // norm4 weights), g_l = G_l 1, and c_l = G_l (its attention's output bias + the previous
    // norm4's bias) [O*4]; W b_{L-1}; G_0 of the mask's 1x1 convolution [O*4, Cm], of its bias
    // and of the no-mask embedding.
    struct {
        std::vector<Tensor> G, g, c;
        Tensor last_bias, mask_conv, mask_bias, no_mask;
    } fold;
    // A mask prompt changes layer 0's image tokens from the prepared ones (embedding + no_mask)
    // by M f + b_M - no_mask (M: the dense prompt's 1x1 convolution [C, Cm], b_M its bias, f the
    // mask's features [Cm, HW]), so a projection W of them by (W M) f + W (b_M - no_mask): W M
    // [D, Cm] for layer 0's token->image keys and values and image->token queries, and the
    // shifts of the values and queries [D] (the keys' cancels in the softmax).
    struct {
        Tensor keys, values, queries, value_shift, query_shift;
    } mask_layer0;
    std::vector<Mlp> hypernetworks;  // one per mask token: token -> [C/8] mask weights
    Mlp iou_head;
    Mlp obj_head;  // SAM 2
};

namespace {

// ---------------------------------------------------------------------------------------------
// Loading. One routine names every tensor; it reads from a checkpoint or lists names and shapes.

using TensorSource = std::function<Tensor(const std::string& name, const Shape& shape)>;

struct Prefixes {
    std::string prompt, decoder;
};

Prefixes prefixes(DecoderVariant v) {
    if (v == DecoderVariant::Sam) return {"prompt_encoder.", "mask_decoder."};
    return {"sam_prompt_encoder.", "sam_mask_decoder."};
}

Linear load_linear(const TensorSource& get, const std::string& name, int64_t in, int64_t out) {
    Linear l{get(name + ".weight", {out, in}), get(name + ".bias", {out}), {}};
    l.packed = pack_panels(l.w);
    return l;
}

Norm load_norm(const TensorSource& get, const std::string& name, int64_t dim) {
    return {get(name + ".weight", {dim}), get(name + ".bias", {dim})};
}

Conv load_conv(const TensorSource& get, const std::string& name, Shape weight_shape,
               int64_t bias_dim) {
    return {get(name + ".weight", weight_shape), get(name + ".bias", {bias_dim})};
}

// The references' MLP: name.layers.<i>, `depth` linear layers.
Mlp load_mlp(const TensorSource& get, const std::string& name, int64_t in, int64_t hidden,
             int64_t out, int depth) {
    Mlp m;
    for (int i = 0; i < depth; ++i)
        m.layers.push_back(load_linear(get, name + ".layers." + std::to_string(i),
                                       i == 0 ? in : hidden, i + 1 == depth ? out : hidden));
    return m;
}

Attention load_attention(const TensorSource& get, const std::string& name, int64_t dim,
                         int64_t inner) {
    return {load_linear(get, name + ".q_proj", dim, inner),
            load_linear(get, name + ".k_proj", dim, inner),
            load_linear(get, name + ".v_proj", dim, inner),
            load_linear(get, name + ".out_proj", inner, dim)};
}

Tensor concat_rows(const std::vector<const Tensor*>& parts) {
    int64_t rows = 0;
    const int64_t cols = parts.front()->dim(-1);
    for (const Tensor* p : parts) rows += p->numel() / cols;
    Tensor out({rows, cols});
    float* dst = out.data();
    for (const Tensor* p : parts) {
        if (p->numel()) std::memcpy(dst, p->data(), p->numel() * sizeof(float));
        dst += p->numel();
    }
    return out;
}

SamDecoderWeights load_weights(const SamDecoderConfig& c, const TensorSource& get) {
    const auto [pe, md] = prefixes(c.variant);
    const bool sam2 = c.variant == DecoderVariant::Sam2;
    const int64_t C = c.embed_dim, Cm = c.mask_in_chans, M = c.num_mask_tokens;
    SamDecoderWeights w;

    w.pe_gaussian = get(pe + "pe_layer.positional_encoding_gaussian_matrix", {2, C / 2});
    for (int i = 0; i < 4; ++i)
        w.point_embed[i] = get(pe + "point_embeddings." + std::to_string(i) + ".weight", {1, C});
    w.not_a_point = get(pe + "not_a_point_embed.weight", {1, C});
    w.mask_conv1 = load_conv(get, pe + "mask_downscaling.0", {Cm / 4, 1, 2, 2}, Cm / 4);
    w.mask_norm1 = load_norm(get, pe + "mask_downscaling.1", Cm / 4);
    w.mask_conv2 = load_conv(get, pe + "mask_downscaling.3", {Cm, Cm / 4, 2, 2}, Cm);
    w.mask_norm2 = load_norm(get, pe + "mask_downscaling.4", Cm);
    w.mask_conv3 = load_conv(get, pe + "mask_downscaling.6", {C, Cm, 1, 1}, C);
    w.no_mask = get(pe + "no_mask_embed.weight", {1, C});

    const std::string tf = md + "transformer.";
    for (int i = 0; i < c.depth; ++i) {
        const std::string p = tf + "layers." + std::to_string(i) + ".";
        TwoWayLayer l;
        l.self_attn = load_attention(get, p + "self_attn", C, C);
        l.norm1 = load_norm(get, p + "norm1", C);
        l.token_to_image = load_attention(get, p + "cross_attn_token_to_image", C, c.attn_dim);
        l.norm2 = load_norm(get, p + "norm2", C);
        if (sam2)  // SAM 2 uses its generic MLP, SAM an MLPBlock (lin1, lin2)
            l.mlp = load_mlp(get, p + "mlp", C, c.mlp_dim, C, 2);
        else
            l.mlp.layers = {load_linear(get, p + "mlp.lin1", C, c.mlp_dim),
                            load_linear(get, p + "mlp.lin2", c.mlp_dim, C)};
        l.norm3 = load_norm(get, p + "norm3", C);
        l.norm4 = load_norm(get, p + "norm4", C);
        l.image_to_token = load_attention(get, p + "cross_attn_image_to_token", C, c.attn_dim);
        w.layers.push_back(std::move(l));
    }
    w.final_attn = load_attention(get, tf + "final_attn_token_to_image", C, c.attn_dim);
    w.final_norm = load_norm(get, tf + "norm_final_attn", C);

    const Tensor iou_token = get(md + "iou_token.weight", {1, C});
    const Tensor mask_tokens = get(md + "mask_tokens.weight", {M, C});
    if (sam2) {
        const Tensor obj_token = get(md + "obj_score_token.weight", {1, C});
        w.output_tokens = concat_rows({&obj_token, &iou_token, &mask_tokens});
    } else {
        w.output_tokens = concat_rows({&iou_token, &mask_tokens});
    }

    w.upscale1 = load_conv(get, md + "output_upscaling.0", {C, C / 4, 2, 2}, C / 4);
    w.upscale_norm = load_norm(get, md + "output_upscaling.1", C / 4);
    w.upscale2 = load_conv(get, md + "output_upscaling.3", {C / 4, C / 8, 2, 2}, C / 8);
    for (int i = 0; i < M; ++i)
        w.hypernetworks.push_back(load_mlp(get,
                                           md + "output_hypernetworks_mlps." + std::to_string(i), C,
                                           C, C / 8, c.hyper_depth));
    w.iou_head = load_mlp(get, md + "iou_prediction_head", C, c.iou_head_dim, M, c.iou_head_depth);
    if (sam2) {
        if (c.obj_head_depth == 1)
            w.obj_head.layers = {load_linear(get, md + "pred_obj_score_head", C, 1)};
        else
            w.obj_head = load_mlp(get, md + "pred_obj_score_head", C, C, 1, c.obj_head_depth);
    }
    return w;
}

int64_t dim_of(const WeightFile& w, const std::string& name, int i) {
    const TensorRef& r = w.ref(name);
    if (r.shape.size() <= static_cast<size_t>(i))
        throw FormatError(w.path() + ": " + name + " has shape " + shape_str(r.shape));
    return r.shape[i];
}

// How many of prefix<i>suffix exist, for i = 0, 1, ...
int count_indexed(const WeightFile& w, const std::string& prefix, const std::string& suffix) {
    int n = 0;
    while (w.has(prefix + std::to_string(n) + suffix)) ++n;
    return n;
}

SamDecoderConfig infer_config(const WeightFile& w, DecoderVariant v) {
    const auto [pe, md] = prefixes(v);
    SamDecoderConfig c = SamDecoderConfig::full_size(v);
    const std::string layer0 = md + "transformer.layers.0.";
    c.embed_dim = static_cast<int>(dim_of(w, pe + "no_mask_embed.weight", 1));
    c.mask_in_chans = static_cast<int>(dim_of(w, pe + "mask_downscaling.3.weight", 0));
    c.depth = count_indexed(w, md + "transformer.layers.", ".norm1.weight");
    c.mlp_dim = static_cast<int>(dim_of(
        w, layer0 + (v == DecoderVariant::Sam ? "mlp.lin1.weight" : "mlp.layers.0.weight"), 0));
    c.attn_dim = static_cast<int>(dim_of(w, layer0 + "cross_attn_token_to_image.q_proj.weight", 0));
    c.num_mask_tokens = static_cast<int>(dim_of(w, md + "mask_tokens.weight", 0));
    c.hyper_depth = count_indexed(w, md + "output_hypernetworks_mlps.0.layers.", ".weight");
    c.iou_head_dim = static_cast<int>(dim_of(w, md + "iou_prediction_head.layers.0.weight", 0));
    c.iou_head_depth = count_indexed(w, md + "iou_prediction_head.layers.", ".weight");
    if (v == DecoderVariant::Sam2)
        c.obj_head_depth = w.has(md + "pred_obj_score_head.weight")
                               ? 1
                               : count_indexed(w, md + "pred_obj_score_head.layers.", ".weight");

    const bool ok = c.embed_dim > 0 && c.embed_dim % 8 == 0 && c.embed_dim % c.num_heads == 0 &&
                    c.attn_dim > 0 && c.attn_dim % c.num_heads == 0 && c.depth > 0 &&
                    c.mask_in_chans >= 4 && c.mask_in_chans % 4 == 0 && c.num_mask_tokens >= 2 &&
                    c.hyper_depth > 0 && c.iou_head_depth > 0 && c.obj_head_depth > 0;
    if (!ok)
        throw FormatError(w.path() + ": unsupported prompt decoder sizes (embed " +
                          std::to_string(c.embed_dim) + ", cross-attention " +
                          std::to_string(c.attn_dim) + ", depth " + std::to_string(c.depth) +
                          ", mask tokens " + std::to_string(c.num_mask_tokens) + ")");
    return c;
}

// ---------------------------------------------------------------------------------------------
// Small tensor helpers.

Tensor plus(const Tensor& a, const Tensor& b) {
    Tensor r = a;
    add_(r, b);
    return r;
}

// x [C, ...] += bias[c] on every element of channel c.
void add_channel_bias(Tensor& x, const float* bias) {
    const int64_t C = x.dim(0), n = x.numel() / C;
    float* d = x.data();
    parallel_for(C, x.numel() > 65536, [&](int64_t c) {
        for (int64_t i = 0; i < n; ++i) d[c * n + i] += bias[c];
    });
}

// Fills every row of x [rows, cols] with `row`.
void fill_rows(float* x, int64_t rows, int64_t cols, const float* row) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(x + r * cols, row, cols * sizeof(float));
}

// The short, wide products of the image side (M ~ 100-250 rows, N = 4096 columns: the per-image
// projections) with the columns split across the threads: the libraries parallelise these shapes
// poorly. product(n0, n) computes columns [n0, n0 + n).
template <class Product>
void split_columns(int64_t N, const Product& product) {
    parallel_region(true, [&] {
        const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t chunk = (N + threads * 16 - 1) / (threads * 16) * 16;
        const int64_t n0 = std::min(N, t * chunk), n1 = std::min(N, n0 + chunk);
        if (n1 > n0) product(n0, n1 - n0);
    });
}

void gemm_wide(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
    split_columns(N, [&](int64_t n0, int64_t n) {
        gemm(trans_a, trans_b, M, n, K, alpha, A, lda, B + (trans_b ? n0 * ldb : n0), ldb, beta,
             C + n0, ldc);
    });
}

Tensor row_of(const Tensor& x, int64_t r) {
    return Tensor::from({1, x.dim(1)}, x.data() + r * x.dim(1));
}

// The rows `rows` of x [R, C], in that order.
Tensor gather_rows(const Tensor& x, const std::vector<int64_t>& rows) {
    const int64_t C = x.dim(1);
    Tensor out({static_cast<int64_t>(rows.size()), C});
    for (size_t i = 0; i < rows.size(); ++i)
        std::memcpy(out.data() + i * C, x.data() + rows[i] * C, C * sizeof(float));
    return out;
}

// Random Fourier features of a point in [0, 1]^2: sin and cos of 2*pi * G^T (2p - 1), written to
// out[k * stride] for k < C.
void fourier_features(const Tensor& gaussian, float u, float v, float* out, int64_t stride) {
    const int64_t F = gaussian.dim(1);
    const float* g = gaussian.data();
    const float x = 2.0f * u - 1.0f, y = 2.0f * v - 1.0f;
    const float two_pi = 2.0f * std::numbers::pi_v<float>;
    for (int64_t k = 0; k < F; ++k) {
        const float a = two_pi * (x * g[k] + y * g[F + k]);
        out[k * stride] = std::sin(a);
        out[(F + k) * stride] = std::cos(a);
    }
}

// Leaves new elements uninitialised: the bf16 buffers of a click are written before they are read,
// and zero-filling them cost a pass over 4 MB per click.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = UninitializedAllocator<U>;
    };
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

using Bf16 = std::vector<uint16_t, UninitializedAllocator<uint16_t>>;

Bf16 rounded(const Tensor& t) {
    Bf16 r(t.numel());
    to_bf16(t.data(), t.numel(), r.data());
    return r;
}

// x in IEEE half, divided by *scale: the power of two (>= 1) that brings its largest magnitude
// within half's range.
std::vector<uint16_t> to_half(const Tensor& x, float* scale) {
    float largest = 0.0f;
    for (int64_t i = 0; i < x.numel(); ++i) largest = std::max(largest, std::fabs(x[i]));
    *scale = 1.0f;
    while (largest / *scale > 32768.0f) *scale *= 2.0f;
    std::vector<uint16_t> half(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) half[i] = f32_to_f16(x[i] / *scale);
    return half;
}

// x [R, C, ...] as the matrix [C*..., R].
Tensor transposed(const Tensor& x) {
    const int64_t R = x.dim(0), C = x.numel() / R;
    Tensor t({C, R});
    for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) t[c * R + r] = x[r * C + c];
    return t;
}

// Pixels per block of the image updates: the update [C, 256] f32 (256 KB, C = 256) stays in L2
// for the normalisation.
constexpr int64_t kImageBlock = 256;

// Image tokens per block of the upscaling: the largest power of two <= 512 dividing HW.
int64_t upscale_block(int64_t HW) {
    int64_t nb = 512;
    while (HW % nb) nb /= 2;
    return nb;
}

// The image side of the two-way transformer: the image tokens [C, HW], the same plus the dense
// positional encoding, and with bf16 compute both rounded for the products that read them. With
// bf16 compute there are no f32 tokens: layer 0 normalises the prepared embedding plus its update
// into the rounded copies, and a later layer normalises the rounding of its input (the products
// read nothing else, and the LayerNorm statistics over 256 channels hardly see the rounding).
// The tokens are stored in blocks of kImageBlock pixels, as the updates make them: block b, [C, n]
// for its n pixels, from element b * kImageBlock * C on (the products read it dense, in place).
struct ImageTokens {
    int64_t C = 0, HW = 0;
    Tensor keys, keys_pe;
    Bf16 keys_bf16, keys_pe_bf16;             // empty in f32
    const uint16_t* dense_pe_bf16 = nullptr;  // bf16: the positions added, in the same blocks
    bool bf16() const { return !keys_bf16.empty(); }
    // Per layer, how the image tokens changed: keys += vo^T p, then keys = LayerNorm(keys + bias)
    // with these per-token statistics. The folded first upscaling convolution reads them.
    struct Update {
        Tensor vo, p;                      // [heads*T, C], [heads*T, HW] (bf16: not the last's)
        std::vector<float> mean, inv_std;  // [HW]
    };
    std::vector<Update> updates;
    // With bf16 compute, the folded first upscaling's probability rows (FirstUpscale::
    // factors_bf16), written by the last layer's update (write_fold_rows).
    Bf16 fold_rows;
};

// The last layer's update writes the folded upscaling's probability rows for every layer while
// its block is in cache (fold_click would read every layer's [heads*T, HW] f32 probabilities back
// from memory): for the block's pixels [p0, p0 + n), row l * HT + j of upscale block b is
// p_l[j] * S_l, S_l the product of the layers' 1 / std from the last down to l (fold_click's
// arithmetic, in its order), rounded to bf16. p: the last layer's block [HT, n], rows p_ld apart;
// inv_std: its statistics [HW].
void write_fold_rows(ImageTokens& image, const float* p, int64_t p_ld, const float* inv_std,
                     int64_t HT, int64_t p0, int64_t n) {
    const int64_t L = static_cast<int64_t>(image.updates.size()) + 1, Kp = L * HT;
    const int64_t HW = image.HW, nb = upscale_block(HW);
    for (int64_t s0 = p0; s0 < p0 + n;) {  // the parts of the block in each upscale block
        const int64_t b = s0 / nb, t0 = s0 % nb, len = std::min(p0 + n - s0, nb - t0);
        uint16_t* rows = image.fold_rows.data() + b * Kp * nb + t0;
        float S[kImageBlock];
        for (int64_t i = 0; i < len; ++i) S[i] = 1.0f * inv_std[s0 + i];
        for (int64_t l = L - 1; l >= 0; --l) {
            if (l < L - 1)
                for (int64_t i = 0; i < len; ++i) S[i] *= image.updates[l].inv_std[s0 + i];
            for (int64_t j = 0; j < HT; ++j) {
                const float* pj =
                    l == L - 1 ? p + j * p_ld + (s0 - p0) : image.updates[l].p.data() + j * HW + s0;
                uint16_t* dst = rows + (l * HT + j) * nb;
#pragma omp simd
                for (int64_t i = 0; i < len; ++i) dst[i] = f32_to_bf16_finite(pj[i] * S[i]);
            }
        }
        s0 += len;
    }
}

// x [C, HW] in ImageTokens' layout: blocks of kImageBlock pixels, block b [C, n] from element
// b * kImageBlock * C on.
std::vector<uint16_t> in_pixel_blocks(const uint16_t* x, int64_t C, int64_t HW) {
    std::vector<uint16_t> blocks(C * HW);
    for (int64_t p0 = 0; p0 < HW; p0 += kImageBlock) {
        const int64_t n = std::min(kImageBlock, HW - p0);
        for (int64_t c = 0; c < C; ++c)
            std::memcpy(blocks.data() + p0 * C + c * n, x + c * HW + p0, n * sizeof(uint16_t));
    }
    return blocks;
}

// ---------------------------------------------------------------------------------------------
// Attention between T tokens (output tokens + prompts, ~10) and the HW = 4096 image tokens.
// The image side is either projected ([D, HW] queries, keys or values: layer 0, whose projections
// are cached per image when no mask is given) or raw ([C, HW]): the image projections are then
// folded into the token side, so the image is read by products of width heads*T instead of
// being projected to D (2 * heads*T < 2 * D for up to 15 tokens, and there are no D x HW
// intermediates).

// Multi-head attention among the tokens: q/k input [T, C], v input [T, C] -> [T, C].
Tensor self_attention(const Attention& a, const Tensor& qk_in, const Tensor& v_in, int heads) {
    const Tensor q = a.q(qk_in), k = a.k(qk_in), v = a.v(v_in);  // [T, D]
    const int64_t T = q.dim(0), D = q.dim(1);
    Tensor o({T, D});
    attention(q.data(), D, k.data(), D, v.data(), D, o.data(), D, T, T, heads, D / heads);
    return a.out(o);
}

// W x + b over image tokens x [C, HW] -> [D, HW].
Tensor project_image(const Linear& l, const Tensor& x) {
    const int64_t D = l.w.dim(0), C = l.w.dim(1), HW = x.numel() / C;
    Tensor y({D, HW});
    for (int64_t r = 0; r < D; ++r) std::fill(y.data() + r * HW, y.data() + (r + 1) * HW, l.b[r]);
    gemm_wide(false, false, D, HW, C, 1.0f, l.w.data(), C, x.data(), HW, 1.0f, y.data(), HW);
    return y;
}

float attention_scale(const Attention& a, int heads) {
    return 1.0f / std::sqrt(static_cast<float>(a.q.w.dim(0) / heads));
}

// A mask prompt in layer 0: its features f [Cm, HW], the dense prompt's 1x1 convolution M that
// adds them to the image tokens, and how they change the prepared projections
// (SamDecoderWeights::mask_layer0).
struct MaskTerm {
    const Tensor& f;
    const Conv& conv;
    const decltype(SamDecoderWeights::mask_layer0)& fold;
};

// Tokens attend to the image's projected keys and values [D, HW]. queries [T, C] -> [T, C]. With
// a mask prompt, per head h the keys gain (Wk M)_h f (q_h times it added to the scores) and the
// values (Wv M)_h f + shift_h (P_h f^T (Wv M)_h^T + shift_h added to the output, as the rows of
// P_h sum to 1).
Tensor tokens_to_projected_image(const Attention& a, const Tensor& queries, const Tensor& keys,
                                 const Tensor& values, int heads, const MaskTerm* mask) {
    const Tensor q = a.q(queries);  // [T, D]
    const int64_t T = q.dim(0), D = q.dim(1), d = D / heads, HW = keys.dim(1);
    const int64_t Cm = mask ? mask->f.dim(0) : 0;
    const float scale = attention_scale(a, heads);
    Tensor p({heads * T, HW});
    Tensor o({T, D});
    parallel_for(heads, true, [&](int64_t h) {
        float* ph = p.data() + h * T * HW;
        float* oh = o.data() + h * d;
        gemm(false, false, T, HW, d, scale, q.data() + h * d, D, keys.data() + h * d * HW, HW, 0.0f,
             ph, HW);
        std::vector<float> small(T * Cm);  // scale q_h (Wk M)_h, then P_h f^T
        if (mask) {
            gemm(false, false, T, Cm, d, scale, q.data() + h * d, D,
                 mask->fold.keys.data() + h * d * Cm, Cm, 0.0f, small.data(), Cm);
            gemm(false, false, T, HW, Cm, 1.0f, small.data(), Cm, mask->f.data(), HW, 1.0f, ph, HW);
        }
        softmax_rows(ph, T, HW);
        gemm(false, true, T, d, HW, 1.0f, ph, HW, values.data() + h * d * HW, HW, 0.0f, oh, D);
        if (mask) {
            gemm(false, true, T, Cm, HW, 1.0f, ph, HW, mask->f.data(), HW, 0.0f, small.data(), Cm);
            gemm(false, true, T, d, Cm, 1.0f, small.data(), Cm,
                 mask->fold.values.data() + h * d * Cm, Cm, 1.0f, oh, D);
            for (int64_t t = 0; t < T; ++t)
                for (int64_t i = 0; i < d; ++i) oh[t * D + i] += mask->fold.value_shift[h * d + i];
        }
    });
    return a.out(o);
}

// Tokens attend to the raw image x [C, HW] (keys x + dense_pe, values x). Per head h:
//   scores_h = q_h (Wk_h (x + pe) + bk_h) = (q_h Wk_h) (x + pe) + const, and the constant cancels
//   in softmax, so the image is read at depth C by qk = scale * q_h Wk_h [heads*T, C];
//   out_h = P_h (Wv_h x + bv_h)^T = (P_h x^T) Wv_h^T + bv_h, as the rows of P_h sum to 1.
Tensor image_key_queries(const Attention& a, const Tensor& q, int heads) {
    const int64_t T = q.dim(0), D = q.dim(1), d = D / heads, C = a.k.w.dim(1);
    Tensor qk({heads * T, C});
    for (int h = 0; h < heads; ++h)
        gemm(false, false, T, C, d, attention_scale(a, heads), q.data() + h * d, D,
             a.k.w.data() + h * d * C, C, 0.0f, qk.data() + h * T * C, C);
    return qk;
}

// The attention's output [T, C] from px = P_h x^T [heads*T, C].
Tensor output_from_image_sums(const Attention& a, const Tensor& px, int heads) {
    const int64_t D = a.v.w.dim(0), d = D / heads, C = px.dim(1), T = px.dim(0) / heads;
    Tensor o({T, D});
    fill_rows(o.data(), T, D, a.v.b.data());
    for (int h = 0; h < heads; ++h)
        gemm(false, true, T, d, C, 1.0f, px.data() + h * T * C, C, a.v.w.data() + h * d * C, C,
             1.0f, o.data() + h * d, D);
    return a.out(o);
}

// A dense product of a block, C [M, N] = A [M, K] op(B), op(B) = B [K, N] or B^T for B [N, K].
void block_product(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, const float* B,
                   float* C, float beta = 0.0f) {
    gemm(false, trans_b, M, N, K, 1.0f, A, K, B, trans_b ? K : N, beta, C, N);
}
void block_product(bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                   const uint16_t* B, float* C, float beta = 0.0f) {
    gemm_bf16(false, trans_b, M, N, K, A, K, B, trans_b ? K : N, beta, C, N);
}

// Tokens (queries [T, C], positional encoding added) attend to the image tokens, one block of
// pixels at a time as an image update makes the blocks: the update hands over each normalised
// block while it is in cache, so the attention reads no stored image, and after the last layer
// the tokens are never stored (8 MB a click less to write and read back in bf16). Flash
// attention's order: each thread keeps the numerators times x^T [heads*T, C] and their sums
// against a running max per row, rescaled when a block raises it, and finish() brings the
// threads' sums to the overall max. A thread's blocks come in the order of a static schedule, so
// a decode's result depends on its thread count only.
class TokensToImageBlocks {
  public:
    TokensToImageBlocks(const Attention& a, const Tensor& queries, int heads,
                        const ImageTokens& image)
        : a_(a),
          heads_(heads),
          qk_(image_key_queries(a, a.q(queries), heads)),
          qk_bf16_(image.bf16() ? rounded(qk_) : Bf16()),
          HT_(qk_.dim(0)),
          C_(image.C),
          sums_(std::max(1, omp_get_max_threads())) {}

    // A block of n pixels: the image tokens x and x + pe, [C, n] each, in bf16 when the image is.
    template <class T>
    void add(int64_t n, const T* x, const T* x_pe) {
        Sums& s = sums_[omp_get_thread_num()];
        if (s.px.numel() == 0) {
            s.px = Tensor::zeros({HT_, C_});
            s.max.assign(HT_, -INFINITY);
            s.sum.assign(HT_, 0.0f);
        }
        constexpr bool bf16 = std::is_same_v<T, uint16_t>;
        s.scores.resize(HT_ * n);
        s.p_bf16.resize(bf16 ? HT_ * n : 0);
        const T* qk;
        const T* p;  // the numerators: in place in f32, rounded into p_bf16 in bf16
        if constexpr (bf16) {
            qk = qk_bf16_.data();
            p = s.p_bf16.data();
        } else {
            qk = qk_.data();
            p = s.scores.data();
        }
        block_product(false, HT_, n, C_, qk, x_pe, s.scores.data());
        s.previous_max = s.max;
        s.inv_sum.resize(HT_);
        softmax_numerators(s.scores.data(), HT_, n, s.inv_sum.data(),
                           bf16 ? s.p_bf16.data() : nullptr, s.max.data());
        for (int64_t r = 0; r < HT_; ++r) {
            if (s.max[r] > s.previous_max[r]) {  // the sums so far, to the raised max
                const float k = std::exp(s.previous_max[r] - s.max[r]);
                float* row = s.px.data() + r * C_;
                for (int64_t c = 0; c < C_; ++c) row[c] *= k;
                s.sum[r] *= k;
            }
            s.sum[r] += 1.0f / s.inv_sum[r];  // 1 / inf = 0 when every numerator underflowed
        }
        block_product(true, HT_, C_, n, p, x, s.px.data(), 1.0f);
    }

    // The attention's output [T, C], once every block was added.
    Tensor finish() const {
        Tensor px = Tensor::zeros({HT_, C_});
        for (int64_t r = 0; r < HT_; ++r) {
            float top = -INFINITY, sum = 0.0f;
            for (const Sums& s : sums_)
                if (!s.max.empty()) top = std::max(top, s.max[r]);
            float* const row = px.data() + r * C_;
            for (const Sums& s : sums_) {
                if (s.max.empty()) continue;
                const float k = std::exp(s.max[r] - top);
                sum += k * s.sum[r];
                const float* part = s.px.data() + r * C_;
                for (int64_t c = 0; c < C_; ++c) row[c] += k * part[c];
            }
            for (int64_t c = 0; c < C_; ++c) row[c] /= sum;
        }
        return output_from_image_sums(a_, px, heads_);
    }

  private:
    // One thread's sums, and its scratch for a block.
    struct Sums {
        Tensor px;                    // the numerators times x^T [heads*T, C]
        std::vector<float> max, sum;  // per row: the running max, the numerators' sum
        std::vector<float> previous_max, inv_sum, scores;
        Bf16 p_bf16;
    };
    const Attention& a_;
    int heads_;
    Tensor qk_;  // scale * q_h Wk_h [heads*T, C]
    Bf16 qk_bf16_;
    int64_t HT_, C_;
    std::vector<Sums> sums_;  // per OpenMP thread
};

// Scores of the image's attention to the tokens for the pixels [p0, p0 + n): [heads*T, n] (row
// stride n), before the softmax over each head's T tokens.
using BlockScores = std::function<void(int64_t p0, int64_t n, float* scores)>;

// The image attends to the tokens: with P_h the softmax of head h's scores over its T tokens and
// v [T, D] the token values,
//   keys = LayerNorm(keys_in + sum_h (Wo_h v_h^T) P_h + bias),  keys_pe = keys + dense_pe
// (with bf16 compute both rounded; bias: the output bias, and whatever else keys_in lacks). keys_in
// is layer 0's input [C, HW], or null after layer 0: the image tokens themselves (with bf16
// compute their rounding, normalised in place). Wo is folded into the values (vo = v_h Wo_h^T,
// [heads*T, C]), and the pixels go in blocks: each block's scores stay in cache, and its update
// stays in L2 from the product that makes it to the normalisation that adds it: the image is read
// once and written once. The scores come per block from `scores`, or when it is empty, are in p_all
// [heads*T, HW]. A mask prompt (layer 0) adds M f to the update, its bias being in `bias`.
// Each normalised block goes to `next` (the next layer's token->image attention, or the final
// attention) while it is in cache, and into the image tokens when `keep` (the next layer's
// image->token attention reads them; after the last layer nothing does).
// Returns what the folded first upscaling reads: vo, P [heads*T, HW] and the pixel statistics;
// with bf16 compute the last layer writes the fold's probability rows instead of P
// (write_fold_rows: image.fold_rows sized for them).
ImageTokens::Update update_image(const Attention& a, const Tensor& v, int heads, Tensor p_all,
                                 const BlockScores& scores, const float* keys_in,
                                 const Tensor& bias, const Norm& norm, const Tensor& dense_pe,
                                 const MaskTerm* mask, ImageTokens& image,
                                 TokensToImageBlocks& next, bool keep) {
    const int64_t T = v.dim(0), D = v.dim(1), d = D / heads, HT = heads * T;
    const int64_t C = image.C, HW = image.HW;
    // With bf16 compute the last layer writes the fold's rows itself, and keeps no probabilities.
    const bool fold_rows = image.bf16() && !keep;
    if (scores && !fold_rows) p_all = Tensor({HT, HW});
    ImageTokens::Update u{Tensor({HT, C}), std::move(p_all), std::vector<float>(HW),
                          std::vector<float>(HW)};
    for (int h = 0; h < heads; ++h)  // Wo_h: the columns of head h
        gemm(false, true, T, C, d, 1.0f, v.data() + h * d, D, a.out.w.data() + h * d, D, 0.0f,
             u.vo.data() + h * T * C, C);
    // vo^T [C, heads*T] row-major: oneDNN would re-pack a transposed left operand in every call.
    // With bf16 compute a mask prompt's M [C, Cm] joins it, [vo^T | M], and its features the
    // probabilities below them: one product of depth heads*T + Cm instead of a second of depth Cm.
    const int64_t Cm = mask ? mask->f.dim(0) : 0, K = image.bf16() ? HT + Cm : HT;
    Bf16 vo_t_bf16;
    if (image.bf16()) {
        Tensor left({C, K});
        const Tensor vo_t = transposed(u.vo);
        for (int64_t c = 0; c < C; ++c) {
            std::memcpy(left.data() + c * K, vo_t.data() + c * HT, HT * sizeof(float));
            if (mask)
                std::memcpy(left.data() + c * K + HT, mask->conv.w.data() + c * Cm,
                            Cm * sizeof(float));
        }
        vo_t_bf16 = rounded(left);
    }
    ChannelNormExtras extras{.pe = &dense_pe, .mean = u.mean.data(), .inv_std = u.inv_std.data()};
    extras.src = keys_in;
    if (keep && !image.bf16() && image.keys_pe.numel() != image.keys.numel())
        image.keys_pe = Tensor(image.keys.shape());
    extras.add_first = bias.data();
    // Blocks of kImageBlock pixels, and the products write dense blocks, for which oneDNN takes
    // its AMX kernels (for a block of the [C, HW] image, ldc = HW, it took a kernel 2-3 times
    // slower).
    constexpr int64_t kBlock = kImageBlock;
    const int64_t blocks = (HW + kBlock - 1) / kBlock;
    parallel_region(true, [&] {
        Tensor p({HT, kBlock}), update({C, kBlock});
        Bf16 p_bf16(image.bf16() ? K * kBlock : 0);
        ChannelNormExtras block = extras;
        block.add = update.data();
        // Where the block's normalised tokens and the same plus pe go, [C, n] each, when the
        // image is not kept (in f32 the latter always: the image takes a copy).
        Tensor out_x, out_x_pe;
        Bf16 out_bf16;
        if (image.bf16() && !keep) out_bf16.resize(2 * C * kBlock);
        if (!image.bf16() && !keep) out_x = Tensor({C, kBlock});
        if (!image.bf16()) {
            out_x_pe = Tensor({C, kBlock});
            block.x_pe = &out_x_pe;
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t p0 = b * kBlock, n = std::min(kBlock, HW - p0);
            // The block's probabilities [HT, n], rows probs_ld apart: made from its scores in
            // p (and copied into u.p unless the fold's rows are written), or in place in u.p.
            if (scores) scores(p0, n, p.data());
            float* const probs = scores ? p.data() : u.p.data() + p0;
            const int64_t probs_ld = scores ? n : HW;
            for (int h = 0; h < heads; ++h)
                softmax_columns(
                    probs + h * T * probs_ld, T, n,
                    {.f32 = scores && !fold_rows ? u.p.data() + h * T * HW + p0 : nullptr,
                     .f32_ld = HW,
                     .bf16 = image.bf16() ? p_bf16.data() + h * T * n : nullptr},
                    probs_ld);
            if (image.bf16()) {
                for (int64_t j = 0; j < Cm; ++j)
                    to_bf16(mask->f.data() + j * HW + p0, n, p_bf16.data() + (HT + j) * n);
                gemm_bf16(false, false, C, n, K, vo_t_bf16.data(), K, p_bf16.data(), n, 0.0f,
                          update.data(), n);
            } else {
                gemm(true, false, C, n, HT, 1.0f, u.vo.data(), C, probs, probs_ld, 0.0f,
                     update.data(), n);
                if (mask)
                    gemm(false, false, C, n, Cm, 1.0f, mask->conv.w.data(), Cm, mask->f.data() + p0,
                         HW, 1.0f, update.data(), n);
            }
            block.add_ld = n;
            block.out_ld = n;
            // After layer 0 the source is the image's block, and a kept result replaces it.
            const int64_t at = p0 * C;
            if (image.bf16()) {  // the products read bf16 only
                block.pe_bf16 = image.dense_pe_bf16 + at;
                block.pe_ld = n;
            }
            if (!keys_in) {
                block.src_ld = n;
                if (image.bf16()) block.src_bf16 = image.keys_bf16.data() + at;
                if (!image.bf16()) block.src = image.keys.data() + at;
            }
            if (image.bf16()) {
                block.x_bf16 = keep ? image.keys_bf16.data() + at : out_bf16.data();
                block.x_pe_bf16 = keep ? image.keys_pe_bf16.data() + at : out_bf16.data() + C * n;
            }
            float* const x = image.bf16() ? nullptr : keep ? image.keys.data() + at : out_x.data();
            layer_norm_channels_block(x, C, HW, p0, n, norm.w.data(), norm.b.data(), kLayerNormEps,
                                      block);
            if (fold_rows) write_fold_rows(image, probs, probs_ld, u.inv_std.data(), HT, p0, n);
            if (image.bf16()) {
                next.add(n, block.x_bf16, block.x_pe_bf16);
            } else {
                next.add(n, x, out_x_pe.data());
                if (keep)
                    std::memcpy(image.keys_pe.data() + at, out_x_pe.data(), C * n * sizeof(float));
            }
        }
    });
    return u;
}

// Scores of the image's prepared queries [D, HW] (layer 0) against the token keys k [T, D]:
// [heads*T, HW], one product per head over the whole image (per block, they were 8 times as many
// calls of a size where each call's overhead counts).
// With a mask prompt the queries gain (Wq M) f + shift: per head, scale k_h (Wq M)_h times f,
// and each token's scale k_h shift_h (the softmax runs over the tokens: it does not cancel).
Tensor projected_image_scores(const Attention& a, const Tensor& queries, const Tensor& k, int heads,
                              const MaskTerm* mask) {
    const int64_t T = k.dim(0), D = k.dim(1), d = D / heads, HW = queries.dim(1);
    const int64_t Cm = mask ? mask->f.dim(0) : 0;
    const float scale = attention_scale(a, heads);
    Tensor scores({heads * T, HW});
    parallel_for(heads, true, [&](int64_t h) {
        float* sh = scores.data() + h * T * HW;
        gemm(false, false, T, HW, d, scale, k.data() + h * d, D, queries.data() + h * d * HW, HW,
             0.0f, sh, HW);
        if (!mask) return;
        std::vector<float> kq(T * Cm);  // scale k_h (Wq M)_h
        gemm(false, false, T, Cm, d, scale, k.data() + h * d, D,
             mask->fold.queries.data() + h * d * Cm, Cm, 0.0f, kq.data(), Cm);
        gemm(false, false, T, HW, Cm, 1.0f, kq.data(), Cm, mask->f.data(), HW, 1.0f, sh, HW);
        for (int64_t t = 0; t < T; ++t) {
            float shift = 0.0f;
            for (int64_t i = 0; i < d; ++i)
                shift += k[t * D + h * d + i] * mask->fold.query_shift[h * d + i];
            float* row = sh + t * HW;
            for (int64_t j = 0; j < HW; ++j) row[j] += scale * shift;
        }
    });
    return scores;
}

// Scores of the raw image, image.keys_pe (its blocks) as its queries, against the token keys k
// [T, D], per block of pixels p0 on (a multiple of kImageBlock). Per head h, x the image:
// scores_h = k_h (Wq_h x + bq_h) = (k_h Wq_h) x + k_h bq_h, so the image is read at depth C by
// kq = scale * k_h Wq_h [heads*T, C] (kept by the returned function).
BlockScores raw_image_scores(const Attention& a, const Tensor& k, int heads,
                             const ImageTokens& image) {
    const int64_t T = k.dim(0), D = k.dim(1), d = D / heads, HT = heads * T, C = image.C;
    const float scale = attention_scale(a, heads);
    Tensor kq({HT, C});
    std::vector<float> kq_bias(HT);  // scale * k_h bq_h
    for (int h = 0; h < heads; ++h) {
        gemm(false, false, T, C, d, scale, k.data() + h * d, D, a.q.w.data() + h * d * C, C, 0.0f,
             kq.data() + h * T * C, C);
        for (int64_t t = 0; t < T; ++t) {
            float bias = 0.0f;
            for (int64_t i = 0; i < d; ++i) bias += k[t * D + h * d + i] * a.q.b[h * d + i];
            kq_bias[h * T + t] = scale * bias;
        }
    }
    Bf16 kq_bf16 = image.bf16() ? rounded(kq) : Bf16();
    return [&image, HT, C, kq = std::move(kq), kq_bias = std::move(kq_bias),
            kq_bf16 = std::move(kq_bf16)](int64_t p0, int64_t n, float* scores) {
        for (int64_t r = 0; r < HT; ++r)
            std::fill(scores + r * n, scores + (r + 1) * n, kq_bias[r]);
        if (image.bf16()) {
            gemm_bf16(false, false, HT, n, C, kq_bf16.data(), C, image.keys_pe_bf16.data() + p0 * C,
                      n, 1.0f, scores, n);
        } else {
            gemm(false, false, HT, n, C, 1.0f, kq.data(), C, image.keys_pe.data() + p0 * C, n, 1.0f,
                 scores, n);
        }
    };
}

// Layer 0's image-side projections [D, HW]: token->image keys and values, image->token queries.
struct Layer0Projections {
    Tensor keys, values, queries;
};

// keys [C, HW] are layer 0's image tokens, keys_pe the same plus the dense positional encoding.
Layer0Projections project_layer0(const TwoWayLayer& l, const Tensor& keys, const Tensor& keys_pe) {
    return {project_image(l.token_to_image.k, keys_pe), project_image(l.token_to_image.v, keys),
            project_image(l.image_to_token.q, keys_pe)};
}

// The two-way transformer: the tokens [T, C] (their initial values are also their positional
// encoding) and the image tokens attend to each other. Returns the tokens `read` [R, C] (the
// output tokens that decode reads); image is updated. Layer 0 reads the image's prepared
// projections (prepared), with a mask prompt's features [Cm, HW] (or null) as a term of their
// rank; the later layers read the image tokens.
// A layer's update of the image hands each normalised block, while it is in cache, to what reads
// the image next: the next layer's token->image attention (its queries depend on the tokens only,
// so that layer's self-attention runs before the update), or after the last layer the final
// attention. The image tokens are stored only for the next layer's image->token attention.
Tensor two_way_transformer(const SamDecoderWeights& w, int heads, const Tensor& tokens,
                           const std::vector<int64_t>& read, const DecoderImage& prepared,
                           const Tensor* mask, const Tensor& dense_pe, ImageTokens& image) {
    const std::optional<MaskTerm> mask_term =
        mask ? std::optional<MaskTerm>({*mask, w.mask_conv3, w.mask_layer0}) : std::nullopt;
    const MaskTerm* const m = mask_term ? &*mask_term : nullptr;
    // Layer 0's self-attention replaces the tokens (no positional encoding, no residual), and its
    // token->image attention reads the prepared projections.
    const TwoWayLayer& l0 = w.layers.front();
    Tensor queries = self_attention(l0.self_attn, tokens, tokens, heads);
    layer_norm(queries, l0.norm1.w, l0.norm1.b, kLayerNormEps);
    add_(queries,
         tokens_to_projected_image(l0.token_to_image, plus(queries, tokens), prepared.layer0_keys,
                                   prepared.layer0_values, heads, m));
    Tensor out;
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const TwoWayLayer& l = w.layers[i];
        const bool last = i + 1 == w.layers.size();
        layer_norm(queries, l.norm2.w, l.norm2.b, kLayerNormEps);
        add_(queries, l.mlp(queries));
        layer_norm(queries, l.norm3.w, l.norm3.b, kLayerNormEps);
        // The image attends to the tokens.
        const Attention& a = l.image_to_token;
        const Tensor k = a.k(plus(queries, tokens)), v = a.v(queries);  // [T, D]
        // What reads the updated image. The final attention is the tokens' only: each token
        // attends to the image on its own, so the tokens nobody reads (the prompts', the unused
        // masks') are left out: a 5-point click asking for one mask attends with 2 of its 11.
        std::optional<TokensToImageBlocks> next;
        Tensor next_queries;
        if (last) {
            next.emplace(w.final_attn, plus(gather_rows(queries, read), gather_rows(tokens, read)),
                         heads, image);
        } else {
            const TwoWayLayer& n = w.layers[i + 1];
            next_queries = queries;
            add_(next_queries, self_attention(n.self_attn, plus(queries, tokens), queries, heads));
            layer_norm(next_queries, n.norm1.w, n.norm1.b, kLayerNormEps);
            next.emplace(n.token_to_image, plus(next_queries, tokens), heads, image);
        }
        if (last && image.bf16())  // write_fold_rows: every layer's probability rows
            image.fold_rows.resize(w.layers.size() * heads * queries.dim(0) * image.HW);
        // Layer 0's image tokens are the embedding plus the dense prompt (M f + its bias, or
        // no_mask), added here, and its image queries are prepared.
        if (i == 0) {
            Tensor bias = a.out.b;
            add_(bias, mask ? w.mask_conv3.b : w.no_mask);
            image.updates.push_back(update_image(
                a, v, heads, projected_image_scores(a, prepared.layer0_queries, k, heads, m),
                nullptr, prepared.image_embed.data(), bias, l.norm4, dense_pe, m, image, *next,
                !last));
        } else {
            image.updates.push_back(
                update_image(a, v, heads, Tensor(), raw_image_scores(a, k, heads, image), nullptr,
                             a.out.b, l.norm4, dense_pe, nullptr, image, *next, !last));
        }
        if (last) {
            out = gather_rows(queries, read);
            add_(out, next->finish());
        } else {  // the next layer's token->image attention, as in the references
            queries = std::move(next_queries);
            add_(queries, next->finish());
        }
    }
    layer_norm(out, w.final_norm.w, w.final_norm.b, kLayerNormEps);
    return out;
}

// ---------------------------------------------------------------------------------------------
// Output upscaling: two 2x2 stride-2 transposed convolutions (each a GEMM over the pixels) with
// LayerNorm2d + GELU between them and GELU after, then the mask product. Every output pixel
// depends on one image token only, so the work runs in independent blocks of image tokens
// without full-size intermediates, and the pixels stay in the order the GEMMs produce them,
// [sub-pixel][image token]; the masks are put in image order at the end.

// The first upscaling convolution of one click as a product (fold_first_upscale): its weights
// [O*4, K] times each token's K factors [K, HW], plus the image's term S_0 *
// DecoderImage::upscale_base. The factors' first L*heads*T rows are the layers' attention
// probabilities (scaled): with bf16 compute their columns and rows are in weights_bf16
// [O*4, L*heads*T] and factors_bf16 (per block of upscale_block(HW) tokens, [L*heads*T, nb]
// dense, written by the last layer's update) instead, and the f32 product keeps the rest, the
// token statistics whose terms nearly cancel (a mean term against the normalised values) and
// would not survive the rounding.
struct FirstUpscale {
    Tensor weights, factors;
    Bf16 weights_bf16, factors_bf16;
    std::vector<float> image_scale;  // S_0 [HW]
};

// mask: the mask prompt's features [Cm, HW], or null.
FirstUpscale fold_click(const SamDecoderWeights& w, ImageTokens& im, const Tensor* mask) {
    const auto& f = w.fold;
    const int64_t L = static_cast<int64_t>(im.updates.size()), O4 = f.G[0].dim(0);
    const int64_t C = im.C, HW = im.HW;
    const int64_t HT = im.updates[0].vo.dim(0), Cm = mask ? mask->dim(0) : 0;
    // Columns: per layer G_l vo_l^T against rows S_l p_l, then per layer [g_l | c_l] against
    // [-S_l m_l ; S_l], the last norm's bias against ones, and the mask's against S_0 f.
    const int64_t Kp = L * HT, ks = im.bf16() ? 0 : Kp, K = ks + 2 * L + 1 + Cm;
    FirstUpscale u{Tensor({O4, K}), Tensor({K, HW}), Bf16(), Bf16(), std::vector<float>(HW, 1.0f)};
    // The probabilities' columns: into weights in f32, rounded into weights_bf16 from gvo in bf16.
    Tensor gvo = im.bf16() ? Tensor({O4, Kp}) : Tensor();
    float* const p_cols = im.bf16() ? gvo.data() : u.weights.data();
    const int64_t p_ld = im.bf16() ? Kp : K;
    if (im.bf16()) u.factors_bf16 = std::move(im.fold_rows);  // the last update wrote them
    std::vector<float>& S = u.image_scale;                    // S_l, built from the last layer down
    for (int64_t l = L - 1; l >= 0; --l) {
        const ImageTokens::Update& up = im.updates[l];
        for (int64_t i = 0; i < HW; ++i) S[i] *= up.inv_std[i];
        gemm(false, true, O4, HT, C, 1.0f, f.G[l].data(), C, up.vo.data(), C, 0.0f, p_cols + l * HT,
             p_ld);
        if (!im.bf16())
            parallel_for(HT, true, [&](int64_t j) {
                const float* p = up.p.data() + j * HW;
                float* dst = u.factors.data() + (l * HT + j) * HW;
                for (int64_t i = 0; i < HW; ++i) dst[i] = p[i] * S[i];
            });
        Tensor c = f.c[l];
        if (l == 0) add_(c, mask ? f.mask_bias : f.no_mask);
        const int64_t k0 = ks + 2 * l;
        for (int64_t r = 0; r < O4; ++r) {
            u.weights[r * K + k0] = f.g[l][r];
            u.weights[r * K + k0 + 1] = c[r];
        }
        for (int64_t i = 0; i < HW; ++i) {
            u.factors[k0 * HW + i] = -S[i] * up.mean[i];
            u.factors[(k0 + 1) * HW + i] = S[i];
        }
    }
    if (im.bf16()) u.weights_bf16 = rounded(gvo);
    const int64_t k_bias = ks + 2 * L;
    for (int64_t r = 0; r < O4; ++r) u.weights[r * K + k_bias] = f.last_bias[r];
    std::fill(u.factors.data() + k_bias * HW, u.factors.data() + (k_bias + 1) * HW, 1.0f);
    if (mask) {
        for (int64_t r = 0; r < O4; ++r)
            std::memcpy(u.weights.data() + r * K + k_bias + 1, f.mask_conv.data() + r * Cm,
                        Cm * sizeof(float));
        float* rows = u.factors.data() + (k_bias + 1) * HW;
        for (int64_t j = 0; j < Cm; ++j)
            for (int64_t i = 0; i < HW; ++i) rows[j * HW + i] = (*mask)[j * HW + i] * S[i];
    }
    return u;
}

// For each pixel of the upscaling order after `levels` transposed convolutions of a g x g grid,
// its index in the (g << levels)^2 image.
std::vector<int32_t> upscaled_pixel_order(int64_t g, int levels) {
    std::vector<int32_t> order(g * g);
    for (int64_t i = 0; i < g * g; ++i) order[i] = static_cast<int32_t>(i);
    for (int l = 0; l < levels; ++l, g *= 2) {
        std::vector<int32_t> next(4 * order.size());
        const int64_t n = static_cast<int64_t>(order.size());
        for (int64_t k = 0; k < 4; ++k)  // sub-pixel (ky, kx)
            for (int64_t q = 0; q < n; ++q) {
                const int64_t y = order[q] / g, x = order[q] % g;
                next[k * n + q] = static_cast<int32_t>((2 * y + k / 2) * 2 * g + 2 * x + k % 2);
            }
        order = std::move(next);
    }
    return order;
}

// features [C, S, S] -> [C, S*S] in the upscaling order, plus bias[c].
Tensor to_upscaled_order(const Tensor& features, const std::vector<int32_t>& order,
                         const Tensor& bias) {
    const int64_t C = features.dim(0), n = static_cast<int64_t>(order.size());
    Tensor y({C, n});
    parallel_for(C, true, [&](int64_t c) {
        for (int64_t q = 0; q < n; ++q) y[c * n + q] = features[c * n + order[q]] + bias[c];
    });
    return y;
}

// The image tokens [C, g*g] and the mask weights hyper [M, C/8] -> masks [M, 4g, 4g]. prepared:
// the image's term of the first convolution (in f32 or half), SAM 2's high-resolution terms in
// the upscaling order (upscale_add_1, upscale_add_2; empty for SAM). With bf16 compute the second
// transposed convolution takes bf16 inputs.
Tensor upscale_to_masks(const SamDecoderWeights& w, const ImageTokens& image, const Tensor& hyper,
                        const FirstUpscale& first, const DecoderImage& prepared,
                        const std::vector<int32_t>& order, int64_t g) {
    const Tensor &terms_1 = prepared.upscale_add_1, &terms_2 = prepared.upscale_add_2;
    const int64_t n0 = g * g, M = hyper.dim(0), K = first.weights.dim(1);
    const int64_t Kp = static_cast<int64_t>(first.weights_bf16.size()) / first.weights.dim(0);
    const int64_t O1 = w.upscale1.w.dim(1), O2 = w.upscale2.w.dim(1);
    const int64_t nb = upscale_block(n0), blocks = n0 / nb;
    constexpr int64_t kNormBlock = 1024;  // layer_norm_channels_block's most pixels
    std::vector<float> row_bias(O1 * 4);  // y1's rows are [o1][k1]
    for (int64_t r = 0; r < O1 * 4; ++r) row_bias[r] = w.upscale1.b[r / 4];
    Tensor masks({M, 4 * g, 4 * g});
    parallel_region(true, [&] {
        Tensor y1({O1, 4 * nb});   // [o1][k1][token]
        Tensor y2({O2, 16 * nb});  // [o2][k2][k1][token]
        Tensor m({M, 16 * nb});    // [mask][k2][k1][token]
        Bf16 y1_bf16(image.bf16() ? y1.numel() : 0);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t p0 = b * nb;
            // S_0 G_0 x_0 + the folded f32 rest + the bias (or SAM 2's terms), then the bf16 rest.
            auto first_conv = [&](const auto* base) {  // the image's term in f32 or half
                scaled_plus_product(O1 * 4, nb, base + p0, prepared.upscale_base_scale, n0,
                                    first.image_scale.data() + p0, first.weights.data(), K,
                                    first.factors.data() + p0, n0, row_bias.data(),
                                    terms_1.empty() ? nullptr : terms_1.data() + p0, n0, y1.data(),
                                    nb);
            };
            if (prepared.upscale_base_f16.empty())
                first_conv(prepared.upscale_base.data());
            else
                first_conv(prepared.upscale_base_f16.data());
            if (Kp)
                gemm_bf16(false, false, O1 * 4, nb, Kp, first.weights_bf16.data(), Kp,
                          first.factors_bf16.data() + b * Kp * nb, nb, 1.0f, y1.data(), nb);
            // With bf16 compute only the rounding is read: y1 is not written back.
            for (int64_t i0 = 0; i0 < 4 * nb; i0 += kNormBlock)
                layer_norm_channels_block(image.bf16() ? nullptr : y1.data(), O1, 4 * nb, i0,
                                          std::min(kNormBlock, 4 * nb - i0),
                                          w.upscale_norm.w.data(), w.upscale_norm.b.data(),
                                          kLayerNorm2dEps,
                                          {.src = y1.data(),
                                           .gelu = true,
                                           .x_bf16 = image.bf16() ? y1_bf16.data() : nullptr});
            if (image.bf16()) {
                gemm_bf16(false, false, O2 * 4, 4 * nb, O1, w.upscale2_bf16.data(), O1,
                          y1_bf16.data(), 4 * nb, 0.0f, y2.data(), 4 * nb);
            } else {
                gemm(true, false, O2 * 4, 4 * nb, O1, 1.0f, w.upscale2.w.data(), O2 * 4, y1.data(),
                     4 * nb, 0.0f, y2.data(), 4 * nb);
            }
            for (int64_t s = 0; s < 16; ++s)  // the masks: GELU(y2 + bias or terms) by hyper
                gelu_mix(y2.data() + s * nb, 16 * nb, O2, nb, w.upscale2.b.data(),
                         terms_2.empty() ? nullptr : terms_2.data() + s * n0 + p0, 16 * n0,
                         hyper.data(), M, m.data() + s * nb, 16 * nb);
            for (int64_t i = 0; i < M; ++i)
                for (int64_t s = 0; s < 16; ++s) {  // s = 4 * k2 + k1
                    const float* src = m.data() + (i * 16 + s) * nb;
                    const int32_t* pos = order.data() + s * n0 + p0;
                    float* dst = masks.data() + i * 16 * n0;
                    for (int64_t j = 0; j < nb; ++j) dst[pos[j]] = src[j];
                }
        }
    });
    return masks;
}

// Stability of a mask: IoU of its masks thresholded at +delta and -delta.
float stability_score(const float* logits, int64_t n, float delta) {
    int64_t inner = 0, outer = 0;
    for (int64_t i = 0; i < n; ++i) {
        inner += logits[i] > delta;
        outer += logits[i] > -delta;
    }
    return outer > 0 ? static_cast<float>(inner) / static_cast<float>(outer) : 1.0f;
}

void check_prompt(const Prompt& p) {
    for (const PromptPoint& pt : p.points) {
        if (!std::isfinite(pt.x) || !std::isfinite(pt.y))
            throw std::invalid_argument("prompt point has a non-finite coordinate");
        if (pt.label != 0 && pt.label != 1)
            throw std::invalid_argument(
                "prompt point label must be 0 (background) or 1 "
                "(foreground), got " +
                std::to_string(pt.label));
    }
    if (p.box)
        for (float v : *p.box)
            if (!std::isfinite(v))
                throw std::invalid_argument("prompt box has a non-finite coordinate");
}

// t as [C, H, W]: accepts that shape or [1, C, H, W]; throws std::invalid_argument otherwise.
Tensor as_chw(Tensor t, const Shape& chw, const char* what) {
    if (t.numel() == shape_numel(chw) && (t.shape() == chw || (t.ndim() == 4 && t.dim(0) == 1))) {
        t.reshape(chw);
        return t;
    }
    throw std::invalid_argument(std::string(what) + " must be " + shape_str(chw) + ", got " +
                                shape_str(t.shape()));
}

}  // namespace

// -------------------------------------------------------------------------------------------------

SamDecoderConfig SamDecoderConfig::full_size(DecoderVariant variant) {
    SamDecoderConfig c;
    c.variant = variant;
    c.iou_sigmoid = variant == DecoderVariant::Sam2;
    return c;
}

SamDecoder::SamDecoder() = default;
SamDecoder::SamDecoder(SamDecoder&&) noexcept = default;
SamDecoder& SamDecoder::operator=(SamDecoder&&) noexcept = default;
SamDecoder::~SamDecoder() = default;

static bool has_variant(const WeightFile& w, DecoderVariant v) {
    const auto [pe, md] = prefixes(v);
    return w.has(pe + "pe_layer.positional_encoding_gaussian_matrix") &&
           w.has(md + "iou_token.weight");
}

bool SamDecoder::detect(const WeightFile& w) {
    return has_variant(w, DecoderVariant::Sam) || has_variant(w, DecoderVariant::Sam2);
}

namespace {

// A [R, K] times the vector x [K] -> [R].
Tensor times(const Tensor& A, const float* x) {
    const int64_t R = A.dim(0), K = A.dim(1);
    Tensor y({R});
    gemm(false, false, R, 1, K, 1.0f, A.data(), K, x, 1, 0.0f, y.data(), 1);
    return y;
}

// The first upscaling convolution (a matrix W [O*4, C] over each image token) reads the image
// tokens after the last layer's LayerNorm. Layer l changes them as
//   z_l = x_{l-1} + vo_l^T p_l + bo_l,  x_l = s_l * D_l (z_l - m_l) + b_l
// (s_l, m_l: each token's 1/std and mean, D_l = diag(norm4 weight), bo_l the attention's output
// bias), so that, with S_l = s_l s_{l+1} ... s_{L-1} per token,
//   W x_{L-1} = S_0 G_0 x_0 + sum_l S_l (G_l vo_l^T p_l - m_l g_l + c_l) + W b_{L-1}.
// G_0 x_0 is per image (prepare), and the rest is a product of depth sum_l (heads*T + 2) + 1
// per token: about half of W's 256 for a click or two.
void fold_first_upscale(SamDecoderWeights& w) {
    const Tensor& W1 = w.upscale1.w;  // [C, O, 2, 2]
    const int64_t C = W1.dim(0), O4 = W1.numel() / C, L = static_cast<int64_t>(w.layers.size());
    Tensor G({O4, C});
    for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < O4; ++r) G[r * C + c] = W1[c * O4 + r];
    auto& f = w.fold;
    f.last_bias = times(G, w.layers.back().norm4.b.data());
    f.G.resize(L);
    f.g.resize(L);
    f.c.resize(L);
    const Tensor ones = Tensor::filled({C}, 1.0f);
    for (int64_t l = L - 1; l >= 0; --l) {
        const TwoWayLayer& layer = w.layers[l];
        for (int64_t r = 0; r < O4; ++r)
            for (int64_t c = 0; c < C; ++c) G[r * C + c] *= layer.norm4.w[c];
        f.G[l] = G;
        f.g[l] = times(G, ones.data());
        f.c[l] = times(G, layer.image_to_token.out.b.data());
        if (l > 0) add_(f.c[l], times(G, w.layers[l - 1].norm4.b.data()));
    }
    const int64_t Cm = w.mask_conv3.w.dim(1);  // [C, Cm, 1, 1]
    f.mask_conv = Tensor({O4, Cm});
    gemm(false, false, O4, Cm, C, 1.0f, G.data(), C, w.mask_conv3.w.data(), Cm, 0.0f,
         f.mask_conv.data(), Cm);
    f.mask_bias = times(G, w.mask_conv3.b.data());
    f.no_mask = times(G, w.no_mask.data());
}

// SamDecoderWeights::mask_layer0: W M and W (b_M - no_mask) for layer 0's projections W.
void fold_mask_into_layer0(SamDecoderWeights& w) {
    const TwoWayLayer& l = w.layers.front();
    const Tensor& M = w.mask_conv3.w;  // [C, Cm, 1, 1]
    const int64_t C = M.dim(0), Cm = M.dim(1);
    Tensor shift = w.mask_conv3.b;  // [C]
    add_scaled_(shift, w.no_mask, -1.0f);
    auto times_m = [&](const Linear& proj) {
        Tensor wm({proj.w.dim(0), Cm});
        gemm(false, false, proj.w.dim(0), Cm, C, 1.0f, proj.w.data(), C, M.data(), Cm, 0.0f,
             wm.data(), Cm);
        return wm;
    };
    auto& m = w.mask_layer0;
    m.keys = times_m(l.token_to_image.k);
    m.values = times_m(l.token_to_image.v);
    m.queries = times_m(l.image_to_token.q);
    m.value_shift = times(l.token_to_image.v.w, shift.data());
    m.query_shift = times(l.image_to_token.q.w, shift.data());
}

}  // namespace

SamDecoder SamDecoder::load(const WeightFile& w, Precision precision) {
    DecoderVariant v;
    if (has_variant(w, DecoderVariant::Sam))
        v = DecoderVariant::Sam;
    else if (has_variant(w, DecoderVariant::Sam2))
        v = DecoderVariant::Sam2;
    else
        throw FormatError(w.path() + ": no SAM prompt encoder / mask decoder tensors");
    SamDecoder d;
    d.cfg_ = infer_config(w, v);
    d.w_ = std::make_unique<SamDecoderWeights>(load_weights(
        d.cfg_, [&](const std::string& name, const Shape& shape) { return w.get(name, shape); }));
    d.precision_ = precision;
    fold_first_upscale(*d.w_);
    fold_mask_into_layer0(*d.w_);
    if (precision == Precision::BF16) {
        // A transposed convolution's weight [in, out, 2, 2] as the rounded matrix [out * 4, in].
        const auto w2 = rounded(transposed(d.w_->upscale2.w));
        d.w_->upscale2_bf16.assign(w2.begin(), w2.end());
        // The tokens' linear layers stream their weights in half precision, but for the
        // attentions in the layers: golden bf16 lowest IoU 0.99050 / 0.99264 / 0.99788 (all of
        // them in half took it to 0.99006, the cross attentions too to 0.98973, all in bf16 to
        // 0.98226).
        SamDecoderWeights& dw = *d.w_;
        auto to_half = [](Mlp& m) {
            for (auto& l : m.layers) l.packed = pack_panels(l.w, /*half=*/true);
        };
        for (TwoWayLayer& l : dw.layers) to_half(l.mlp);
        for (Mlp& m : dw.hypernetworks) to_half(m);
        to_half(dw.iou_head);
        for (auto* l : {&dw.final_attn.q, &dw.final_attn.k, &dw.final_attn.v, &dw.final_attn.out})
            l->packed = pack_panels(l->w, /*half=*/true);
    }

    // Positional encoding of the embedding grid: the same for every image.
    const int64_t g = d.cfg_.grid;
    d.dense_pe_ = Tensor({d.cfg_.embed_dim, g, g});
    for (int64_t i = 0; i < g; ++i)
        for (int64_t j = 0; j < g; ++j)
            fourier_features(d.w_->pe_gaussian, (j + 0.5f) / g, (i + 0.5f) / g,
                             d.dense_pe_.data() + i * g + j, g * g);
    if (precision == Precision::BF16) {
        const auto pe = rounded(d.dense_pe_);
        d.dense_pe_bf16_ = in_pixel_blocks(pe.data(), d.cfg_.embed_dim, g * g);
    }
    d.upscale_order_1_ = upscaled_pixel_order(g, 1);
    d.upscale_order_2_ = upscaled_pixel_order(g, 2);
    return d;
}

DecoderImage SamDecoder::prepare(Tensor image_embed, Tensor high_res_0, Tensor high_res_1) const {
    const int64_t C = cfg_.embed_dim, g = cfg_.grid;
    const SamDecoderWeights& w = *w_;
    DecoderImage d;
    d.image_embed = as_chw(std::move(image_embed), {C, g, g}, "image_embed");
    if (cfg_.variant == DecoderVariant::Sam2) {
        d.upscale_add_1 =
            to_upscaled_order(as_chw(std::move(high_res_1), {C / 4, 2 * g, 2 * g}, "high_res_1"),
                              upscale_order_1_, w.upscale1.b);
        d.upscale_add_2 =
            to_upscaled_order(as_chw(std::move(high_res_0), {C / 8, 4 * g, 4 * g}, "high_res_0"),
                              upscale_order_2_, w.upscale2.b);
    } else if (!high_res_0.empty() || !high_res_1.empty()) {
        throw std::invalid_argument("the SAM decoder takes no high-resolution features");
    }
    const Tensor& G0 = w.fold.G[0];  // the first upscaling convolution's image term
    d.upscale_base = Tensor({G0.dim(0), g * g});
    gemm_wide(false, false, G0.dim(0), g * g, C, 1.0f, G0.data(), C, d.image_embed.data(), g * g,
              0.0f, d.upscale_base.data(), g * g);
    if (precision_ == Precision::BF16) {
        d.upscale_base_f16 = to_half(d.upscale_base, &d.upscale_base_scale);
        d.upscale_base = Tensor();
    }
    Tensor keys = d.image_embed;  // layer 0's image tokens without a mask
    add_channel_bias(keys, w.no_mask.data());
    Layer0Projections p = project_layer0(w.layers.front(), keys, plus(keys, dense_pe_));
    d.layer0_keys = std::move(p.keys);
    d.layer0_values = std::move(p.values);
    d.layer0_queries = std::move(p.queries);
    return d;
}

Tensor SamDecoder::embed_prompt(const Prompt& p) const {
    struct Labeled {
        float x, y;
        int label;  // -1 padding, 0 background, 1 foreground, 2 and 3 box corners
    };
    const bool sam2 = cfg_.variant == DecoderVariant::Sam2;
    std::vector<Labeled> seq;
    auto add_box = [&] {
        if (!p.box) return;
        const auto& b = *p.box;
        seq.push_back({b[0], b[1], 2});
        seq.push_back({b[2], b[3], 3});
    };
    // SAM 2's predictor passes the box as two points before the clicks, so it always pads;
    // SAM embeds the box after the clicks and pads only clicks without a box.
    if (sam2) add_box();
    for (const PromptPoint& pt : p.points) seq.push_back({pt.x, pt.y, pt.label});
    if (sam2 ? !seq.empty() : !p.points.empty() && !p.box) seq.push_back({0.0f, 0.0f, -1});
    if (!sam2) add_box();

    const int64_t C = cfg_.embed_dim;
    const float size = static_cast<float>(cfg_.image_size);
    Tensor out({static_cast<int64_t>(seq.size()), C});
    for (size_t i = 0; i < seq.size(); ++i) {
        float* row = out.data() + i * C;
        if (seq[i].label < 0) {
            std::memcpy(row, w_->not_a_point.data(), C * sizeof(float));
            continue;
        }
        // +0.5: the centre of the pixel.
        fourier_features(w_->pe_gaussian, (seq[i].x + 0.5f) / size, (seq[i].y + 0.5f) / size, row,
                         1);
        const float* e = w_->point_embed[seq[i].label].data();
        for (int64_t c = 0; c < C; ++c) row[c] += e[c];
    }
    return out;
}

Tensor SamDecoder::mask_features(const Tensor& mask) const {
    const int64_t S = cfg_.mask_size();
    if (mask.numel() != S * S)
        throw std::invalid_argument("mask_input must be [1, " + std::to_string(S) + ", " +
                                    std::to_string(S) + "], got " + shape_str(mask.shape()));
    for (int64_t i = 0; i < mask.numel(); ++i)
        if (!std::isfinite(mask[i])) throw std::invalid_argument("mask_input holds NaN or inf");
    const SamDecoderWeights& w = *w_;
    Tensor x = Tensor::from({1, S, S}, mask.data());
    x = conv2d(x, w.mask_conv1.w, w.mask_conv1.b, 2, 0);  // [Cm/4, S/2, S/2]
    layer_norm_channels(x, w.mask_norm1.w, w.mask_norm1.b, kLayerNorm2dEps, {.gelu = true});
    x = conv2d(x, w.mask_conv2.w, w.mask_conv2.b, 2, 0);  // [Cm, S/4, S/4]
    layer_norm_channels(x, w.mask_norm2.w, w.mask_norm2.b, kLayerNorm2dEps, {.gelu = true});
    return x;
}

DecoderOutput SamDecoder::decode(const DecoderImage& image, const Prompt& prompt,
                                 MaskChoice choice) const {
    check_prompt(prompt);
    const SamDecoderWeights& w = *w_;
    const bool sam2 = cfg_.variant == DecoderVariant::Sam2;
    const int64_t C = cfg_.embed_dim, g = cfg_.grid, M = cfg_.num_mask_tokens;
    const int heads = cfg_.num_heads;
    if (image.image_embed.shape() != Shape{C, g, g} || image.layer0_keys.empty() ||
        sam2 != !image.upscale_add_1.empty())
        throw std::invalid_argument("decode: the image was not prepared by this decoder");

    // Prompt encoder. Tokens: the decoder's output tokens, then the sparse prompt; their initial
    // values are also their positional encoding in every attention.
    const Tensor prompt_tokens = embed_prompt(prompt);
    const Tensor tokens = concat_rows({&w.output_tokens, &prompt_tokens});  // [T, C]
    ImageTokens im;  // the image tokens: embedding + dense prompt
    im.C = C;
    im.HW = g * g;
    if (precision_ == Precision::BF16) {
        im.keys_bf16.resize(image.image_embed.numel());
        im.keys_pe_bf16.resize(image.image_embed.numel());
        im.dense_pe_bf16 = dense_pe_bf16_.data();
    }
    // In f32 the layers write the image tokens here; in bf16 only the rounded copies.
    if (precision_ == Precision::F32) im.keys = Tensor(image.image_embed.shape());
    // The mask prompt's features [Cm, g*g]: through a 1x1 convolution, the dense prompt.
    Tensor f;
    if (prompt.mask_input) {
        f = mask_features(*prompt.mask_input);
        f.reshape({f.dim(0), g * g});
    }
    // The mask tokens that may be upscaled: the multimask tokens (for the best of them too), or
    // the single-mask token, which SAM 2 may replace by the best multimask output when it is
    // unstable (then all are upscaled, the single one to measure its stability).
    const bool dynamic = choice == MaskChoice::Single && cfg_.dynamic_multimask;
    std::vector<int64_t> candidates;
    if (choice != MaskChoice::Single || dynamic) {
        for (int64_t m = dynamic ? 0 : 1; m < M; ++m) candidates.push_back(m);
    } else {
        candidates.push_back(0);
    }
    // The output tokens read below, in this order: SAM 2's object-score token (its first), the
    // IoU token, the candidates' mask tokens.
    const int64_t first_token = sam2 ? 1 : 0;
    std::vector<int64_t> read;
    for (int64_t t = 0; t <= first_token; ++t) read.push_back(t);
    for (int64_t m : candidates) read.push_back(first_token + 1 + m);
    const Tensor out_tokens = two_way_transformer(w, heads, tokens, read, image,
                                                  prompt.mask_input ? &f : nullptr, dense_pe_, im);

    // Masks: each mask token's hypernetwork gives the weights of its mask over the upscaled
    // image's channels; SAM 2 adds its high-resolution features in the upscaling.
    Tensor iou = w.iou_head(row_of(out_tokens, first_token));  // [1, M]
    if (cfg_.iou_sigmoid)
        for (int64_t m = 0; m < M; ++m) iou[m] = 1.0f / (1.0f + std::exp(-iou[m]));
    const int64_t best_multimask = std::max_element(iou.data() + 1, iou.data() + M) - iou.data();
    std::vector<int64_t> upscaled = candidates;
    if (choice == MaskChoice::BestOfMultimask) upscaled = {best_multimask};
    const int64_t Cu = w.upscale2.w.dim(1), n = static_cast<int64_t>(upscaled.size());
    Tensor hyper({n, Cu});  // each token's hypernetwork: its mask's weights over the channels
    for (int64_t i = 0; i < n; ++i) {
        const int64_t m = upscaled[i];
        // The candidates are consecutive mask tokens: m's row follows from the first one.
        const Tensor h =
            w.hypernetworks[m](row_of(out_tokens, first_token + 1 + m - candidates.front()));
        std::memcpy(hyper.data() + i * Cu, h.data(), Cu * sizeof(float));
    }
    const FirstUpscale first = fold_click(w, im, prompt.mask_input ? &f : nullptr);
    Tensor masks = upscale_to_masks(w, im, hyper, first, image, upscale_order_2_, g);

    DecoderOutput out;
    if (dynamic) {
        const int64_t HWu = masks.numel() / n, side = cfg_.mask_size();
        const bool stable =
            stability_score(masks.data(), HWu, cfg_.stability_delta) >= cfg_.stability_thresh;
        const int64_t pick = stable ? 0 : best_multimask;
        out.low_res_logits = Tensor::from({1, side, side}, masks.data() + pick * HWu);
        out.iou.push_back(iou[pick]);
    } else {
        out.low_res_logits = std::move(masks);
        for (int64_t m : upscaled) out.iou.push_back(iou[m]);
    }
    if (sam2) out.object_score_logit = w.obj_head(row_of(out_tokens, 0))[0];
    return out;
}

std::vector<std::pair<std::string, Shape>> sam_decoder_tensor_shapes(const SamDecoderConfig& cfg) {
    std::vector<std::pair<std::string, Shape>> out;
    load_weights(cfg, [&](const std::string& name, const Shape& shape) {
        out.emplace_back(name, shape);
        return Tensor::zeros(shape);
    });
    if (cfg.variant == DecoderVariant::Sam2) {
        // The high-resolution projections: in the mask decoder's namespace, run by the encoder.
        const int64_t C = cfg.embed_dim;
        const std::string md = prefixes(cfg.variant).decoder;
        out.emplace_back(md + "conv_s0.weight", Shape{C / 8, C, 1, 1});
        out.emplace_back(md + "conv_s0.bias", Shape{C / 8});
        out.emplace_back(md + "conv_s1.weight", Shape{C / 4, C, 1, 1});
        out.emplace_back(md + "conv_s1.bias", Shape{C / 4});
    }
    return out;
}

std::vector<std::pair<std::string, Shape>> sam_decoder_tensor_shapes(DecoderVariant variant) {
    return sam_decoder_tensor_shapes(SamDecoderConfig::full_size(variant));
}

}  // namespace splitseg
