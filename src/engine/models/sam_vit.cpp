// SAM ViT image encoder (segment-anything's ImageEncoderViT, after ViTDet):
//   patch embed (conv P x P, stride P) -> [G, G, C] tokens + absolute positions
//   depth x { x += proj(attn(norm1(x)));  x += lin2(gelu(lin1(norm2(x)))) }
//     attention is windowed (S x S, padded) or global, with decomposed relative positions
//   neck: conv 1x1 -> LayerNorm2d -> conv 3x3 -> LayerNorm2d -> [out, G, G]
#include "engine/models/sam_vit.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "engine/amx.h"
#include "engine/attention.h"
#include "engine/ops.h"

namespace splitseg {

namespace {

constexpr float kLayerNormEps = 1e-6f;  // every LayerNorm of the encoder (build_sam.py)

std::string block_prefix(const std::string& prefix, int i) {
    return prefix + "blocks." + std::to_string(i) + ".";
}

[[noreturn]] void bad_shape(const std::string& name, const Shape& shape, const std::string& why) {
    throw FormatError("SAM ViT encoder: " + name + " has shape " + shape_str(shape) + ", " + why);
}

const Shape& shape_of(const std::map<std::string, Shape>& shapes, const std::string& name,
                      size_t rank) {
    auto it = shapes.find(name);
    if (it == shapes.end()) throw FormatError("SAM ViT encoder: missing tensor " + name);
    if (it->second.size() != rank)
        bad_shape(name, it->second, "expected " + std::to_string(rank) + " dimensions");
    return it->second;
}

// Copies one D-wide part (a head's q, k or v) of the S x S tokens at (y0, x0) of the G x G grid
// from qkv rows [G * G, parts, D] into out [S * S, D], where attention reads it contiguously (its
// products run about twice as fast as on rows strided through qkv). Tokens beyond the grid, the
// padding of windows, take the part's slice of `pad` [parts, D].
void gather_part(const float* qkv, int64_t G, int64_t parts, int64_t D, int64_t part, int64_t y0,
                 int64_t x0, int64_t S, const float* pad, float* out) {
    for (int64_t t = 0; t < S * S; ++t) {
        const int64_t y = y0 + t / S, x = x0 + t % S;
        const float* row = y < G && x < G ? qkv + (y * G + x) * parts * D : pad;
        std::memcpy(out + t * D, row + part * D, D * sizeof(float));
    }
}

}  // namespace

bool SamVitConfig::is_global(int block) const {
    return std::find(global_blocks.begin(), global_blocks.end(), block) != global_blocks.end();
}

SamVitConfig sam_vit_preset(const std::string& arch) {
    struct Size {
        const char* name;
        int dim, depth, heads;
        std::vector<int> global;
    };
    // build_sam.py: every size uses 16 x 16 patches, 1024 x 1024 input, 14 x 14 windows.
    static const Size sizes[] = {
        {"vit_b", 768, 12, 12, {2, 5, 8, 11}},
        {"vit_l", 1024, 24, 16, {5, 11, 17, 23}},
        {"vit_h", 1280, 32, 16, {7, 15, 23, 31}},
    };
    for (const Size& s : sizes) {
        if (arch != s.name) continue;
        SamVitConfig cfg;
        cfg.embed_dim = s.dim;
        cfg.depth = s.depth;
        cfg.num_heads = s.heads;
        cfg.mlp_dim = 4 * s.dim;
        cfg.patch_size = 16;
        cfg.image_size = 1024;
        cfg.window_size = 14;
        cfg.out_chans = 256;
        cfg.global_blocks = s.global;
        return cfg;
    }
    throw std::invalid_argument("unknown SAM ViT size '" + arch + "' (vit_b, vit_l, vit_h)");
}

std::vector<std::pair<std::string, Shape>> sam_vit_tensor_shapes(const SamVitConfig& cfg,
                                                                 const std::string& prefix) {
    const int64_t C = cfg.embed_dim, P = cfg.patch_size, G = cfg.grid(), D = cfg.head_dim();
    const int64_t M = cfg.mlp_dim, O = cfg.out_chans;
    std::vector<std::pair<std::string, Shape>> t = {
        {prefix + "pos_embed", {1, G, G, C}},
        {prefix + "patch_embed.proj.weight", {C, 3, P, P}},
        {prefix + "patch_embed.proj.bias", {C}},
    };
    for (int i = 0; i < cfg.depth; ++i) {
        const std::string b = block_prefix(prefix, i);
        const int64_t offsets = 2 * (cfg.is_global(i) ? G : cfg.window_size) - 1;
        t.insert(t.end(), {
                              {b + "norm1.weight", {C}},
                              {b + "norm1.bias", {C}},
                              {b + "attn.rel_pos_h", {offsets, D}},
                              {b + "attn.rel_pos_w", {offsets, D}},
                              {b + "attn.qkv.weight", {3 * C, C}},
                              {b + "attn.qkv.bias", {3 * C}},
                              {b + "attn.proj.weight", {C, C}},
                              {b + "attn.proj.bias", {C}},
                              {b + "norm2.weight", {C}},
                              {b + "norm2.bias", {C}},
                              {b + "mlp.lin1.weight", {M, C}},
                              {b + "mlp.lin1.bias", {M}},
                              {b + "mlp.lin2.weight", {C, M}},
                              {b + "mlp.lin2.bias", {C}},
                          });
    }
    t.insert(t.end(), {
                          {prefix + "neck.0.weight", {O, C, 1, 1}},
                          {prefix + "neck.1.weight", {O}},
                          {prefix + "neck.1.bias", {O}},
                          {prefix + "neck.2.weight", {O, O, 3, 3}},
                          {prefix + "neck.3.weight", {O}},
                          {prefix + "neck.3.bias", {O}},
                      });
    return t;
}

SamVitConfig infer_sam_vit_config(const std::map<std::string, Shape>& shapes,
                                  const std::string& prefix) {
    SamVitConfig cfg;
    const std::string patch_name = prefix + "patch_embed.proj.weight";
    const Shape& patch = shape_of(shapes, patch_name, 4);  // [C, 3, P, P]
    if (patch[2] != patch[3] || patch[2] <= 0) bad_shape(patch_name, patch, "patches not square");
    cfg.embed_dim = static_cast<int>(patch[0]);
    cfg.patch_size = static_cast<int>(patch[2]);

    const std::string pos_name = prefix + "pos_embed";
    const Shape& pos = shape_of(shapes, pos_name, 4);  // [1, G, G, C]
    if (pos[1] != pos[2] || pos[1] <= 0 || pos[3] != cfg.embed_dim)
        bad_shape(pos_name, pos, "expected [1, G, G, " + std::to_string(cfg.embed_dim) + "]");
    const int64_t G = pos[1];
    cfg.image_size = static_cast<int>(G * cfg.patch_size);

    while (shapes.count(block_prefix(prefix, cfg.depth) + "norm1.weight")) ++cfg.depth;
    if (cfg.depth == 0) throw FormatError("SAM ViT encoder: no blocks under " + prefix + "blocks.");

    // Relative-position tables are [2S - 1, head_dim]: S is the grid a block attends over, the
    // whole image for global blocks. Taking S from the table means each table fits its block,
    // so the reference's get_rel_pos interpolation (for tables of another size) never applies.
    // (A window as large as the image is attention over the whole image: it counts as global.)
    for (int i = 0; i < cfg.depth; ++i) {
        const std::string name = block_prefix(prefix, i) + "attn.rel_pos_h";
        const Shape& rel = shape_of(shapes, name, 2);
        if (i == 0) {
            if (rel[1] <= 0 || cfg.embed_dim % rel[1] != 0)
                bad_shape(name, rel, "head dim does not divide " + std::to_string(cfg.embed_dim));
            cfg.num_heads = static_cast<int>(cfg.embed_dim / rel[1]);
        } else if (rel[1] != cfg.head_dim()) {
            bad_shape(name, rel,
                      "head dim differs from block 0's " + std::to_string(cfg.head_dim()));
        }
        if (rel[0] == 2 * G - 1) {
            cfg.global_blocks.push_back(i);
            continue;
        }
        if (rel[0] <= 0 || rel[0] % 2 == 0) bad_shape(name, rel, "expected 2 * window - 1 rows");
        const int window = static_cast<int>((rel[0] + 1) / 2);
        if (cfg.window_size != 0 && window != cfg.window_size)
            bad_shape(name, rel, "window differs from " + std::to_string(cfg.window_size));
        cfg.window_size = window;
    }
    cfg.mlp_dim = static_cast<int>(shape_of(shapes, prefix + "blocks.0.mlp.lin1.weight", 2)[0]);
    cfg.out_chans = static_cast<int>(shape_of(shapes, prefix + "neck.0.weight", 4)[0]);
    return cfg;
}

SamVitEncoder SamVitEncoder::build(const SamVitConfig& cfg, const TensorSource& source,
                                   Precision precision, const std::string& prefix) {
    std::map<std::string, Tensor> t;
    for (const auto& [name, shape] : sam_vit_tensor_shapes(cfg, prefix))
        t.emplace(name, source(name, shape));
    auto take = [&](const std::string& name) { return std::move(t.at(prefix + name)); };
    // Each layer's f32 weights are freed as soon as they are packed: peak memory stays near one
    // copy of the model.
    auto linear = [&](const std::string& name) {
        return Linear(take(name + ".weight"), take(name + ".bias"), precision);
    };

    const int64_t C = cfg.embed_dim, G = cfg.grid();
    SamVitEncoder enc;
    enc.cfg_ = cfg;
    enc.precision_ = precision;
    Tensor patch_w = take("patch_embed.proj.weight");
    patch_w.reshape({C, -1});
    enc.patch_ = Linear(patch_w, take("patch_embed.proj.bias"), precision);
    enc.pos_embed_ = take("pos_embed");
    enc.pos_embed_.reshape({G, G, C});
    for (int i = 0; i < cfg.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        Block b;
        b.window = cfg.is_global(i) ? 0 : cfg.window_size;
        b.norm1_w = take(p + "norm1.weight");
        b.norm1_b = take(p + "norm1.bias");
        b.qkv_b = t.at(prefix + p + "attn.qkv.bias");  // a copy: the padding tokens' q, k, v
        b.qkv = linear(p + "attn.qkv");
        b.rel_pos_h = take(p + "attn.rel_pos_h");
        b.rel_pos_w = take(p + "attn.rel_pos_w");
        b.proj = linear(p + "attn.proj");
        b.norm2_w = take(p + "norm2.weight");
        b.norm2_b = take(p + "norm2.bias");
        b.lin1 = linear(p + "mlp.lin1");
        b.lin2 = linear(p + "mlp.lin2");
        enc.blocks_.push_back(std::move(b));
    }
    enc.neck_conv1_w_ = take("neck.0.weight");
    enc.neck_norm1_w_ = take("neck.1.weight");
    enc.neck_norm1_b_ = take("neck.1.bias");
    enc.neck_conv2_w_ = take("neck.2.weight");
    enc.neck_norm2_w_ = take("neck.3.weight");
    enc.neck_norm2_b_ = take("neck.3.bias");
    return enc;
}

SamVitEncoder SamVitEncoder::load(const WeightFile& w, Precision precision,
                                  const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const std::string& name : w.names())
        if (name.starts_with(prefix)) shapes.emplace(name, w.ref(name).shape);
    SamVitConfig cfg;
    try {
        cfg = infer_sam_vit_config(shapes, prefix);
    } catch (const FormatError& e) {
        throw FormatError(w.path() + ": " + e.what());
    }
    return build(
        cfg, [&](const std::string& name, const Shape& shape) { return w.get(name, shape); },
        precision, prefix);
}

SamVitEncoder SamVitEncoder::from_tensors(std::map<std::string, Tensor> tensors,
                                          Precision precision, const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, t] : tensors) shapes.emplace(name, t.shape());
    auto source = [&](const std::string& name, const Shape& shape) {
        auto it = tensors.find(name);
        if (it == tensors.end()) throw FormatError("SAM ViT encoder: missing tensor " + name);
        if (it->second.shape() != shape)
            bad_shape(name, it->second.shape(), "expected " + shape_str(shape));
        return std::move(it->second);
    };
    return build(infer_sam_vit_config(shapes, prefix), source, precision, prefix);
}

bool SamVitEncoder::detect(const WeightFile& w, const std::string& prefix) {
    return w.has(prefix + "patch_embed.proj.weight") && w.has(prefix + "blocks.0.attn.rel_pos_h");
}

SamVitEncoder::Workspace::Workspace(const SamVitConfig& cfg) {
    const int64_t N = static_cast<int64_t>(cfg.grid()) * cfg.grid(), C = cfg.embed_dim;
    normed = Tensor({N, C});
    qkv = Tensor({N, 3 * C});
    hidden = Tensor({N, cfg.mlp_dim});
}

Tensor SamVitEncoder::encode(const Tensor& image, const Trace& trace) const {
    const int64_t S = cfg_.image_size;
    if (image.shape() != Shape{3, S, S})
        throw std::invalid_argument("SAM ViT encoder: image is " + shape_str(image.shape()) +
                                    ", expected " + shape_str({3, S, S}));
    Tensor x = patch_embed(image);  // [G, G, C]
    add_(x, pos_embed_);
    trace("enc.embed", x);
    Workspace ws(cfg_);
    for (size_t i = 0; i < blocks_.size(); ++i) {
        run_block(blocks_[i], x, ws);
        trace("enc.block" + std::to_string(i), x);
    }
    return neck(x);
}

// The P x P, stride P convolution as one product: each patch becomes a row of its (channel, y, x)
// pixels, so the result comes out as tokens in HWC order.
Tensor SamVitEncoder::patch_embed(const Tensor& image) const {
    const int64_t P = cfg_.patch_size, G = cfg_.grid(), S = cfg_.image_size, K = 3 * P * P;
    Tensor patches({G * G, K});
#pragma omp parallel for
    for (int64_t py = 0; py < G; ++py)
        for (int64_t px = 0; px < G; ++px) {
            float* row = patches.data() + (py * G + px) * K;
            for (int64_t c = 0; c < 3; ++c)
                for (int64_t y = 0; y < P; ++y)
                    std::memcpy(row + (c * P + y) * P,
                                image.data() + (c * S + py * P + y) * S + px * P,
                                P * sizeof(float));
        }
    Tensor x = patch_(patches);  // [G * G, C]
    x.reshape({G, G, cfg_.embed_dim});
    return x;
}

void SamVitEncoder::run_block(const Block& b, Tensor& x, Workspace& ws) const {
    const int64_t C = cfg_.embed_dim, N = x.numel() / C;
    float* normed = ws.normed.data();

    // x += proj(attention(norm1(x)))
    layer_norm(x.data(), normed, N, C, b.norm1_w.data(), b.norm1_b.data(), kLayerNormEps);
    b.qkv.run(normed, N, ws.qkv.data());  // [N, 3C]
    if (b.window)
        windowed_attention(b, ws);  // -> normed
    else
        global_attention(b, ws);
    b.proj.run(normed, N, x.data(), Epilogue::Add);

    // x += lin2(gelu(lin1(norm2(x))))
    layer_norm(x.data(), normed, N, C, b.norm2_w.data(), b.norm2_b.data(), kLayerNormEps);
    b.lin1.run(normed, N, ws.hidden.data(), Epilogue::Gelu);  // [N, mlp]
    b.lin2.run(ws.hidden.data(), N, x.data(), Epilogue::Add);
}

// Attention over all G x G tokens, read in place from the qkv rows [N, 3C]: q, k, v.
void SamVitEncoder::global_attention(const Block& b, Workspace& ws) const {
    const int64_t G = cfg_.grid(), N = G * G, C = cfg_.embed_dim, D = cfg_.head_dim();
    const float* q = ws.qkv.data();
    attention_packed(q, 3 * C, q + C, 3 * C, q + 2 * C, 3 * C, ws.normed.data(), C, N,
                     cfg_.num_heads, D, precision_,
                     RelPos{b.rel_pos_h.data(), b.rel_pos_w.data(), G});
}

// Attention within S x S windows tiling the G x G grid, padded at the bottom and right as the
// reference's window_partition does; (window, head) pairs run in parallel. Padding tokens are
// zero after norm1, so their q, k, v are the qkv bias; as keys they take part in the softmax
// exactly as in the reference. As queries their outputs are dropped, so whole padding rows of
// queries are skipped.
void SamVitEncoder::windowed_attention(const Block& b, Workspace& ws) const {
    const int64_t G = cfg_.grid(), S = b.window, C = cfg_.embed_dim, D = cfg_.head_dim();
    const int64_t H = cfg_.num_heads, L = S * S, per_side = (G + S - 1) / S;
    // bf16 windows on AMX tiles; elsewhere in f32 (oneDNN's bf16 path would re-make its
    // primitives for every window).
    const bool on_tiles = precision_ == Precision::BF16 && amx::usable();
#pragma omp parallel
    {
        std::vector<float> qkv(3 * L * D), out(L * D);  // one head of one window
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < per_side * per_side * H; ++task) {
            const int64_t w = task / H, h = task % H;
            const int64_t y0 = w / per_side * S, x0 = w % per_side * S;
            for (int64_t j = 0; j < 3; ++j)  // q, k, v
                gather_part(ws.qkv.data(), G, 3 * H, D, j * H + h, y0, x0, S, b.qkv_b.data(),
                            qkv.data() + j * L * D);
            const int64_t rows = std::min(S, G - y0), cols = std::min(S, G - x0);
            const float* q = qkv.data();
            const RelPos rel{b.rel_pos_h.data(), b.rel_pos_w.data(), S};
            if (on_tiles)
                attention_packed(q, D, q + L * D, D, q + 2 * L * D, D, out.data(), D, rows * S, 1,
                                 D, precision_, rel);
            else
                attention(q, D, q + L * D, D, q + 2 * L * D, D, out.data(), D, rows * S, L, 1, D,
                          rel_pos_score_bias(q, D, D, rel));
            for (int64_t ty = 0; ty < rows; ++ty)
                for (int64_t tx = 0; tx < cols; ++tx)
                    std::memcpy(ws.normed.data() + ((y0 + ty) * G + x0 + tx) * C + h * D,
                                out.data() + (ty * S + tx) * D, D * sizeof(float));
        }
    }
}

Tensor SamVitEncoder::neck(const Tensor& x) const {
    const int64_t G = cfg_.grid(), N = G * G, C = cfg_.embed_dim, O = cfg_.out_chans;
    // The 1x1 convolution reads the HWC tokens directly: y[O, N] = W[O, C] * x[N, C]^T.
    Tensor y({O, G, G});
    gemm(false, true, O, N, C, 1.0f, neck_conv1_w_.data(), C, x.data(), C, 0.0f, y.data(), N);
    layer_norm_channels(y, neck_norm1_w_, neck_norm1_b_, kLayerNormEps);
    y = conv2d(y, neck_conv2_w_, Tensor(), 1, 1);
    layer_norm_channels(y, neck_norm2_w_, neck_norm2_b_, kLayerNormEps);
    return y;  // [O, G, G]
}

}  // namespace splitseg
