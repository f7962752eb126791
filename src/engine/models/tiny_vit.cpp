#include "engine/models/tiny_vit.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>

#include "engine/ops.h"

namespace splitseg {

using tiny_vit::AttentionBlock;
using tiny_vit::Bottleneck;
using tiny_vit::ConvBn;
using tiny_vit::Layer;

namespace {

constexpr float kBatchNormEps = 1e-5f;  // torch.nn.BatchNorm2d default
constexpr float kLayerNormEps = 1e-5f;  // torch.nn.LayerNorm default (attention and MLP norms)
constexpr float kNeckNormEps = 1e-6f;   // SAM's LayerNorm2d in the neck
constexpr int kInChans = 3;
// TinyViT's windows are 7 to 32 wide; the expanded bias table grows as window^4.
constexpr int kMaxWindow = 64;

// PatchMerging halves the resolution, except into the widths of the last layer of MobileSAM's
// TinyViT variants (5M: 320, 11M: 448, 21M: 576): there it keeps 64x64 tokens for SAM's neck.
// A stride is not stored in a checkpoint, so this is the reference's own table.
int patch_merging_stride(int out_dim) {
    return out_dim == 320 || out_dim == 448 || out_dim == 576 ? 1 : 2;
}

std::string layer_key(const std::string& prefix, size_t layer) {
    return prefix + "layers." + std::to_string(layer) + ".";
}

std::string block_key(const std::string& prefix, size_t layer, int block) {
    return layer_key(prefix, layer) + "blocks." + std::to_string(block) + ".";
}

int scaled(int dim, float ratio) {
    return static_cast<int>(std::lround(dim * ratio));
}

// ---- tensor names and shapes of an official checkpoint ----

using ShapeList = std::vector<std::pair<std::string, Shape>>;

// Conv2d_BN: a bias-free convolution and a BatchNorm2d with its running statistics.
void add_conv_bn(ShapeList& out, const std::string& name, int out_ch, int in_per_group, int k) {
    out.push_back({name + "c.weight", {out_ch, in_per_group, k, k}});
    for (const char* s : {"weight", "bias", "running_mean", "running_var"})
        out.push_back({name + "bn." + s, {out_ch}});
    out.push_back({name + "bn.num_batches_tracked", {}});
}

void add_bottleneck(ShapeList& out, const std::string& name, int in, int hidden, int out_ch) {
    add_conv_bn(out, name + "conv1.", hidden, in, 1);
    add_conv_bn(out, name + "conv2.", hidden, 1, 3);
    add_conv_bn(out, name + "conv3.", out_ch, hidden, 1);
}

void add_linear(ShapeList& out, const std::string& name, int out_f, int in_f) {
    out.push_back({name + "weight", {out_f, in_f}});
    out.push_back({name + "bias", {out_f}});
}

void add_norm(ShapeList& out, const std::string& name, int dim) {
    out.push_back({name + "weight", {dim}});
    out.push_back({name + "bias", {dim}});
}

void add_attention_block(ShapeList& out, const std::string& name, int dim, int heads, int window,
                         float mlp_ratio) {
    out.push_back({name + "attn.attention_biases", {heads, window * window}});
    add_norm(out, name + "attn.norm.", dim);
    add_linear(out, name + "attn.qkv.", 3 * dim, dim);
    add_linear(out, name + "attn.proj.", dim, dim);
    add_norm(out, name + "mlp.norm.", dim);
    add_linear(out, name + "mlp.fc1.", scaled(dim, mlp_ratio), dim);
    add_linear(out, name + "mlp.fc2.", dim, scaled(dim, mlp_ratio));
    add_conv_bn(out, name + "local_conv.", dim, 1, 3);
}

// ---- configuration from the tensor shapes ----

[[noreturn]] void bad_shape(const std::string& name, const Shape& shape, const std::string& why) {
    throw FormatError("TinyViT encoder: " + name + " has shape " + shape_str(shape) + ": " + why);
}

const Shape& shape_of(const std::map<std::string, Shape>& shapes, const std::string& name,
                      size_t ndim) {
    auto it = shapes.find(name);
    if (it == shapes.end()) throw FormatError("TinyViT encoder: missing tensor " + name);
    if (it->second.size() != ndim)
        bad_shape(name, it->second, "expected " + std::to_string(ndim) + " dimensions");
    for (int64_t d : it->second)
        if (d <= 0) bad_shape(name, it->second, "empty dimension");
    return it->second;
}

int count_blocks(const std::map<std::string, Shape>& shapes, const std::string& prefix,
                 size_t layer, const std::string& leaf) {
    int n = 0;
    while (shapes.contains(block_key(prefix, layer, n) + leaf)) ++n;
    return n;
}

float ratio(int64_t a, int64_t b) {
    return static_cast<float>(a) / static_cast<float>(b);
}

// Reads tensors by name through a source, checking each against the shape the config implies.
// Only what the encoder uses is read: BatchNorm's num_batches_tracked and the classification
// head may be absent.
struct Reader {
    const std::function<Tensor(const std::string&, const Shape&)>& source;
    Precision precision;
    std::map<std::string, Shape> shapes;

    Tensor get(const std::string& name) const { return source(name, shapes.at(name)); }
    Linear linear(const std::string& name) const {
        return Linear(get(name + "weight"), get(name + "bias"), precision);
    }

    // Folds the BatchNorm into the convolution: w' = w * s, b' = beta - mean * s with
    // s = gamma / sqrt(var + eps). A 1x1 convolution becomes a Linear.
    ConvBn conv_bn(const std::string& name, int stride) const {
        ConvBn cb{get(name + "c.weight"), Tensor(), Linear(), stride};
        const Tensor gamma = get(name + "bn.weight"), beta = get(name + "bn.bias");
        const Tensor mean = get(name + "bn.running_mean"), var = get(name + "bn.running_var");
        const int64_t out = cb.weight.dim(0), per_out = cb.weight.numel() / out;
        cb.bias = Tensor({out});
        for (int64_t o = 0; o < out; ++o) {
            const float s = gamma[o] / std::sqrt(var[o] + kBatchNormEps);
            for (int64_t i = 0; i < per_out; ++i) cb.weight[o * per_out + i] *= s;
            cb.bias[o] = beta[o] - mean[o] * s;
        }
        if (cb.weight.dim(2) == 1 && cb.weight.dim(3) == 1) {
            cb.weight.reshape({out, per_out});
            cb.linear = Linear(cb.weight, cb.bias, precision);
            cb.weight = cb.bias = Tensor();
        }
        return cb;
    }

    Bottleneck bottleneck(const std::string& name, int depthwise_stride) const {
        return {conv_bn(name + "conv1.", 1), conv_bn(name + "conv2.", depthwise_stride),
                conv_bn(name + "conv3.", 1)};
    }

    AttentionBlock attention_block(const std::string& name, int heads, int window) const;
};

// The reference's qkv output holds, per head, [q, k, v]; regroup the rows to [q of every head;
// k; v] so that q, k and v are each a strided [N, heads * D] view for attention().
void regroup_qkv_rows(Tensor& t, int heads) {
    const int64_t rows = t.dim(0), cols = t.numel() / rows, D = rows / (3 * heads);
    Tensor src = t;
    for (int h = 0; h < heads; ++h)
        for (int part = 0; part < 3; ++part)
            std::memcpy(t.data() + (part * heads * D + h * D) * cols,
                        src.data() + (h * 3 * D + part * D) * cols, D * cols * sizeof(float));
}

AttentionBlock Reader::attention_block(const std::string& name, int heads, int window) const {
    AttentionBlock b;
    b.heads = heads;
    b.window = window;
    b.attn_norm_w = get(name + "attn.norm.weight");
    b.attn_norm_b = get(name + "attn.norm.bias");
    Tensor qkv_w = get(name + "attn.qkv.weight"), qkv_b = get(name + "attn.qkv.bias");
    regroup_qkv_rows(qkv_w, heads);
    regroup_qkv_rows(qkv_b, heads);
    b.qkv = Linear(qkv_w, qkv_b, precision);
    b.proj = linear(name + "attn.proj.");
    // Expand the per-offset biases to a [heads, L, L] table once, as the reference's eval `ab`.
    const Tensor biases = get(name + "attn.attention_biases");  // [heads, window^2]
    const std::vector<int> index = tiny_vit_attention_bias_index(window);
    const int64_t L = static_cast<int64_t>(window) * window;
    b.bias = Tensor({heads, L, L});
    for (int h = 0; h < heads; ++h)
        for (int64_t i = 0; i < L * L; ++i) b.bias[h * L * L + i] = biases[h * L + index[i]];
    b.local_conv = conv_bn(name + "local_conv.", 1);
    b.mlp_norm_w = get(name + "mlp.norm.weight");
    b.mlp_norm_b = get(name + "mlp.norm.bias");
    b.fc1 = linear(name + "mlp.fc1.");
    b.fc2 = linear(name + "mlp.fc2.");
    return b;
}

// ---- forward pieces; activations are channels-last images [H, W, C] ----

// Hidden activations per band of a bottleneck (about 4 MiB): what stays in cache while the next
// layer reads it.
constexpr int64_t kBandFloats = int64_t{1} << 20;

// 1x1 conv -> GELU -> depthwise 3x3 -> GELU -> 1x1 conv: [H, W, C] -> [H', W', C'], and for
// MBConv (residual) then x + that -> GELU. The hidden activations are 4x wider than x, so the
// bottleneck runs over bands of output rows, each expanding just the input rows its depthwise
// conv reads: they never exist at full size, and the bands run in parallel.
Tensor bottleneck(const Tensor& x, const Bottleneck& b, bool residual) {
    const int64_t H = x.dim(0), W = x.dim(1), C = x.dim(2), s = b.depthwise.stride;
    const int64_t hidden = b.expand.linear.out_features(), O = b.project.linear.out_features();
    const int64_t OH = (H - 1) / s + 1, OW = (W - 1) / s + 1;  // 3x3, padding 1
    Tensor out({OH, OW, O});
    // Output rows per band: the budget less the two halo rows, and at least 8 bands so that
    // the threads share small maps evenly.
    const int64_t rows = std::clamp<int64_t>(kBandFloats / (W * hidden) / s - 2, 1, (OH + 7) / 8);
    const int64_t bands = (OH + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic)
    for (int64_t band = 0; band < bands; ++band) {
        const int64_t y0 = band * rows, y1 = std::min(OH, y0 + rows);
        // Input rows [i0, i1): from one stride above the first output row's centre (so that the
        // band's depthwise output row r + skip is output row y0 + r) to the last one's window.
        const int64_t i0 = std::max<int64_t>(0, s * (y0 - 1)), i1 = std::min(H, s * (y1 - 1) + 2);
        const int64_t skip = y0 - i0 / s;
        Tensor h({i1 - i0, W, hidden});
        b.expand.linear.run(x.data() + i0 * W * C, (i1 - i0) * W, h.data(), Epilogue::Gelu);
        // Zero padding at the band's edges only reaches rows the band does not use.
        h = depthwise_conv2d_hwc(h, b.depthwise.weight, b.depthwise.bias, s, 1, /*then_gelu=*/true);
        const int64_t n = (y1 - y0) * OW;
        float* o = out.data() + y0 * OW * O;
        b.project.linear.run(h.data() + skip * OW * hidden, n, o);
        if (residual) {
            const float* r = x.data() + y0 * OW * O;
            for (int64_t i = 0; i < n * O; ++i) o[i] += r[i];
        }
    }
    if (residual) gelu(out);
    return out;
}

int64_t windows_along(int64_t n, int window) {
    return (n + window - 1) / window;
}

// Where window w (windows in row-major order) lies in x [H, W, C]: its top-left pixel and how many
// of its rows and columns are inside the image (the rest is padding).
struct WindowInImage {
    int64_t y0, x0, rows, cols;
};
WindowInImage window_in_image(const Tensor& x, int window, int64_t w) {
    const int64_t nw = windows_along(x.dim(1), window), y0 = (w / nw) * window,
                  x0 = (w % nw) * window;
    return {y0, x0, std::min<int64_t>(window, x.dim(0) - y0),
            std::min<int64_t>(window, x.dim(1) - x0)};
}

// Window w's tokens of x [H, W, C] into out [window^2, C]; the bottom/right padding up to a
// multiple of the window is zero.
void window_tokens(const Tensor& x, int window, int64_t w, float* out) {
    const int64_t W = x.dim(1), C = x.dim(2), ws = window;
    const WindowInImage r = window_in_image(x, window, w);
    for (int64_t ty = 0; ty < ws; ++ty) {
        float* row = out + ty * ws * C;
        const int64_t filled = ty < r.rows ? r.cols * C : 0;
        if (filled)
            std::memcpy(row, x.data() + ((r.y0 + ty) * W + r.x0) * C, filled * sizeof(float));
        std::fill(row + filled, row + ws * C, 0.0f);
    }
}

// x += window w's rows of `update` [window^2, C], the padding dropped.
void add_window_tokens(Tensor& x, int window, int64_t w, const float* update) {
    const int64_t W = x.dim(1), C = x.dim(2), ws = window;
    const WindowInImage r = window_in_image(x, window, w);
    for (int64_t ty = 0; ty < r.rows; ++ty) {
        float* dst = x.data() + ((r.y0 + ty) * W + r.x0) * C;
        const float* src = update + ty * ws * C;
        for (int64_t i = 0; i < r.cols * C; ++i) dst[i] += src[i];
    }
}

// Tokens of windowed attention per group of windows: the group's qkv (3x wider) stays in L2
// from its product through the attention and the projection.
constexpr int64_t kWindowGroupTokens = 256;

// x += windowed multi-head attention with learned biases, x [H, W, C]. Padding tokens are not
// masked: as in the reference they are zeros going into the LayerNorm, so they attend and are
// attended to with the norm's bias as their value. Groups of windows run in parallel, each from
// its tokens through LayerNorm, qkv, attention and the projection to its rows of x: the whole
// image's qkv (27 MB in MobileSAM's first attention layer) is never written.
void add_window_attention(Tensor& x, const AttentionBlock& b) {
    const int64_t C = x.dim(2), L = static_cast<int64_t>(b.window) * b.window;
    const int64_t nwin = windows_along(x.dim(0), b.window) * windows_along(x.dim(1), b.window);
    const int64_t per_group = std::max<int64_t>(1, kWindowGroupTokens / L);
    const int64_t groups = (nwin + per_group - 1) / per_group;
    const float* table = b.bias.data();
    const ScoreBias add_bias = [table, L](int head, int64_t q0, int64_t q1, float* scores,
                                          int64_t ld) {
        const float* src = table + (head * L + q0) * L;
        for (int64_t r = 0; r < q1 - q0; ++r)
            for (int64_t c = 0; c < L; ++c) scores[r * ld + c] += src[r * L + c];
    };
#pragma omp parallel for schedule(dynamic)
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t w0 = g * per_group, n = std::min(per_group, nwin - w0);
        Tensor tokens({n * L, C}), qkv({n * L, 3 * C});
        for (int64_t i = 0; i < n; ++i)
            window_tokens(x, b.window, w0 + i, tokens.data() + i * L * C);
        layer_norm(tokens, b.attn_norm_w, b.attn_norm_b, kLayerNormEps);
        b.qkv.run(tokens.data(), n * L, qkv.data());  // [n * L, 3C]: q | k | v
        for (int64_t i = 0; i < n; ++i) {  // each window's attention into its tokens' rows
            const float* q = qkv.data() + i * L * 3 * C;
            attention(q, 3 * C, q + C, 3 * C, q + 2 * C, 3 * C, tokens.data() + i * L * C, C, L, L,
                      b.heads, C / b.heads, add_bias);
        }
        b.proj.run(tokens.data(), n * L, qkv.data());  // the projection, padding rows included
        for (int64_t i = 0; i < n; ++i)
            add_window_tokens(x, b.window, w0 + i, qkv.data() + i * L * C);
    }
}

// TinyViTBlock: x + attention, then a depthwise 3x3 conv, then x + MLP. x [H, W, C].
Tensor attention_block(Tensor x, const AttentionBlock& b) {
    add_window_attention(x, b);
    x = depthwise_conv2d_hwc(x, b.local_conv.weight, b.local_conv.bias, 1, 1);
    add_mlp(x.data(), x.dim(0) * x.dim(1), x.dim(2), b.mlp_norm_w, b.mlp_norm_b, kLayerNormEps,
            b.fc1, b.fc2);
    return x;
}

}  // namespace

TinyVitConfig tiny_vit_preset(const std::string& arch) {
    if (arch != "mobilesam")
        throw std::invalid_argument("unknown TinyViT preset '" + arch + "' (known: mobilesam)");
    TinyVitConfig cfg;
    cfg.embed_dims = {64, 128, 160, 320};
    cfg.depths = {2, 2, 6, 2};
    cfg.num_heads = {0, 4, 5, 10};
    cfg.window_sizes = {0, 7, 14, 7};
    return cfg;
}

std::vector<std::pair<std::string, Shape>> tiny_vit_tensor_shapes(const TinyVitConfig& cfg,
                                                                  const std::string& prefix) {
    ShapeList out;
    const int dim0 = cfg.embed_dims.at(0);
    add_conv_bn(out, prefix + "patch_embed.seq.0.", dim0 / 2, kInChans, 3);
    add_conv_bn(out, prefix + "patch_embed.seq.2.", dim0, dim0 / 2, 3);
    const size_t layers = cfg.embed_dims.size();
    for (size_t i = 0; i < layers; ++i) {
        const int dim = cfg.embed_dims[i];
        for (int j = 0; j < cfg.depths.at(i); ++j) {
            const std::string name = block_key(prefix, i, j);
            if (static_cast<int>(i) < cfg.num_conv_layers)
                add_bottleneck(out, name, dim, scaled(dim, cfg.mbconv_expand_ratio), dim);
            else
                add_attention_block(out, name, dim, cfg.num_heads.at(i), cfg.window_sizes.at(i),
                                    cfg.mlp_ratio);
        }
        if (i + 1 < layers)
            add_bottleneck(out, layer_key(prefix, i) + "downsample.", dim, cfg.embed_dims[i + 1],
                           cfg.embed_dims[i + 1]);
    }
    const int last = cfg.embed_dims.back();
    if (cfg.num_classes > 0) {
        add_norm(out, prefix + "norm_head.", last);
        add_linear(out, prefix + "head.", cfg.num_classes, last);
    }
    out.push_back({prefix + "neck.0.weight", {cfg.out_chans, last, 1, 1}});
    add_norm(out, prefix + "neck.1.", cfg.out_chans);
    out.push_back({prefix + "neck.2.weight", {cfg.out_chans, cfg.out_chans, 3, 3}});
    add_norm(out, prefix + "neck.3.", cfg.out_chans);
    return out;
}

std::vector<int> tiny_vit_attention_bias_index(int window) {
    // The reference walks every (p1, p2) pair of window positions and gives each new offset
    // (|dy|, |dx|) the next index. The first p1 is (0, 0), whose pairs already meet every offset
    // in row-major order, so the index of (|dy|, |dx|) is |dy| * window + |dx|.
    const int L = window * window;
    std::vector<int> index(static_cast<size_t>(L) * L);
    for (int a = 0; a < L; ++a)
        for (int b = 0; b < L; ++b)
            index[a * L + b] =
                std::abs(a / window - b / window) * window + std::abs(a % window - b % window);
    return index;
}

TinyVitConfig infer_tiny_vit_config(const std::map<std::string, Shape>& shapes,
                                    const std::string& p) {
    TinyVitConfig cfg;
    cfg.num_conv_layers = 0;
    for (size_t i = 0;; ++i) {
        const std::string b0 = block_key(p, i, 0);
        if (shapes.contains(b0 + "conv1.c.weight")) {  // MBConv layer
            if (cfg.num_conv_layers != static_cast<int>(i))
                throw FormatError("TinyViT encoder: MBConv layer " + std::to_string(i) +
                                  " follows an attention layer");
            const Shape& conv1 = shape_of(shapes, b0 + "conv1.c.weight", 4);  // [4C, C, 1, 1]
            cfg.embed_dims.push_back(static_cast<int>(conv1[1]));
            cfg.depths.push_back(count_blocks(shapes, p, i, "conv1.c.weight"));
            cfg.num_heads.push_back(0);
            cfg.window_sizes.push_back(0);
            cfg.mbconv_expand_ratio = ratio(conv1[0], conv1[1]);
            ++cfg.num_conv_layers;
        } else if (shapes.contains(b0 + "attn.qkv.weight")) {  // attention layer
            const std::string name = b0 + "attn.attention_biases";
            const Shape& biases = shape_of(shapes, name, 2);  // [heads, window^2]
            const int window = static_cast<int>(std::lround(std::sqrt(biases[1])));
            if (window * window != biases[1]) bad_shape(name, biases, "not a square window");
            if (window > kMaxWindow) bad_shape(name, biases, "window larger than any TinyViT's");
            const int dim = static_cast<int>(shape_of(shapes, b0 + "attn.norm.weight", 1)[0]);
            if (dim % biases[0] != 0) bad_shape(name, biases, "heads do not divide the width");
            cfg.embed_dims.push_back(dim);
            cfg.depths.push_back(count_blocks(shapes, p, i, "attn.qkv.weight"));
            cfg.num_heads.push_back(static_cast<int>(biases[0]));
            cfg.window_sizes.push_back(window);
            cfg.mlp_ratio = ratio(shape_of(shapes, b0 + "mlp.fc1.weight", 2)[0], dim);
        } else {
            break;
        }
    }
    if (cfg.embed_dims.empty()) throw FormatError("TinyViT encoder: no layers under " + p);
    cfg.out_chans = static_cast<int>(shape_of(shapes, p + "neck.0.weight", 4)[0]);
    cfg.num_classes = shapes.contains(p + "head.weight")
                          ? static_cast<int>(shape_of(shapes, p + "head.weight", 2)[0])
                          : 0;
    return cfg;
}

bool TinyVitEncoder::detect(const WeightFile& w, const std::string& prefix) {
    return w.has(prefix + "patch_embed.seq.0.c.weight");
}

TinyVitEncoder TinyVitEncoder::build(const TinyVitConfig& cfg, const TensorSource& source,
                                     Precision precision, const std::string& prefix) {
    Reader r{source, precision, {}};
    for (auto& [name, shape] : tiny_vit_tensor_shapes(cfg, prefix)) r.shapes[name] = shape;

    TinyVitEncoder enc;
    enc.cfg_ = cfg;
    enc.embed0_ = r.conv_bn(prefix + "patch_embed.seq.0.", 2);
    enc.embed1_ = r.conv_bn(prefix + "patch_embed.seq.2.", 2);
    for (size_t i = 0; i < cfg.embed_dims.size(); ++i) {
        Layer layer;
        for (int j = 0; j < cfg.depths[i]; ++j) {
            const std::string name = block_key(prefix, i, j);
            if (static_cast<int>(i) < cfg.num_conv_layers)
                layer.conv_blocks.push_back(r.bottleneck(name, 1));
            else
                layer.attn_blocks.push_back(
                    r.attention_block(name, cfg.num_heads[i], cfg.window_sizes[i]));
        }
        if (i + 1 < cfg.embed_dims.size())
            layer.downsample = r.bottleneck(layer_key(prefix, i) + "downsample.",
                                            patch_merging_stride(cfg.embed_dims[i + 1]));
        enc.layers_.push_back(std::move(layer));
    }
    Tensor neck_conv1 = r.get(prefix + "neck.0.weight");
    neck_conv1.reshape({cfg.out_chans, cfg.embed_dims.back()});
    enc.neck_conv1_ = Linear(neck_conv1, Tensor(), precision);
    enc.neck_norm1_w_ = r.get(prefix + "neck.1.weight");
    enc.neck_norm1_b_ = r.get(prefix + "neck.1.bias");
    enc.neck_conv2_ = r.get(prefix + "neck.2.weight");
    enc.neck_norm2_w_ = r.get(prefix + "neck.3.weight");
    enc.neck_norm2_b_ = r.get(prefix + "neck.3.bias");
    return enc;
}

TinyVitEncoder TinyVitEncoder::load(const WeightFile& w, Precision precision,
                                    const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const std::string& name : w.names())
        if (name.starts_with(prefix)) shapes.emplace(name, w.ref(name).shape);
    TinyVitConfig cfg;
    try {
        cfg = infer_tiny_vit_config(shapes, prefix);
    } catch (const FormatError& e) {
        throw FormatError(w.path() + ": " + e.what());
    }
    return build(
        cfg, [&](const std::string& name, const Shape& shape) { return w.get(name, shape); },
        precision, prefix);
}

TinyVitEncoder TinyVitEncoder::from_tensors(std::map<std::string, Tensor> tensors,
                                            Precision precision, const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, t] : tensors) shapes.emplace(name, t.shape());
    auto source = [&](const std::string& name, const Shape& shape) {
        auto it = tensors.find(name);
        if (it == tensors.end()) throw FormatError("TinyViT encoder: missing tensor " + name);
        if (it->second.shape() != shape)
            bad_shape(name, it->second.shape(), "expected " + shape_str(shape));
        return std::move(it->second);
    };
    return build(infer_tiny_vit_config(shapes, prefix), source, precision, prefix);
}

Tensor TinyVitEncoder::encode(const Tensor& image, const Trace& trace) const {
    const Shape expected{kInChans, cfg_.image_size, cfg_.image_size};
    if (image.shape() != expected)
        throw std::invalid_argument("TinyViT encode: image " + shape_str(image.shape()) +
                                    ", expected " + shape_str(expected));
    // Patch embedding: two stride-2 3x3 convs, [1024, 1024, 3] -> [256, 256, C0]. Channels-last
    // from here on: a token sequence is the image's [H * W, C] view.
    Tensor x = conv2d_planar_to_hwc(image, embed0_.weight, embed0_.bias, 2, 1, /*then_gelu=*/true);
    x = conv2d_hwc(x, embed1_.weight, embed1_.bias, 2, 1);

    for (size_t i = 0; i < layers_.size(); ++i) {
        const Layer& layer = layers_[i];
        for (const Bottleneck& b : layer.conv_blocks) x = bottleneck(x, b, true);  // MBConv
        for (const AttentionBlock& b : layer.attn_blocks) x = attention_block(std::move(x), b);
        if (layer.downsample) x = bottleneck(x, *layer.downsample, false);  // PatchMerging
        const Shape hwc = x.shape();
        trace("enc.layer" + std::to_string(i), x.reshape({-1, hwc[2]}));  // tokens [N, C]
        x.reshape(hwc);
    }

    // Neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d -> [256, 64, 64]. On channels-last
    // tokens the 1x1 conv is a linear and LayerNorm2d a LayerNorm over the last dimension.
    x = neck_conv1_(x);
    layer_norm(x, neck_norm1_w_, neck_norm1_b_, kNeckNormEps);
    x = conv2d_hwc(x, neck_conv2_, Tensor(), 1, 1);
    layer_norm(x, neck_norm2_w_, neck_norm2_b_, kNeckNormEps);
    return hwc_to_chw(x);
}

}  // namespace splitseg
