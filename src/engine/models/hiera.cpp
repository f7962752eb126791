// SAM 2.1 image encoder (sam2's Hiera trunk + FpnNeck, and what SAM2ImagePredictor.set_image adds):
//   patch embed (conv 7x7, stride 4) -> [H/4, W/4, E] tokens + positions
//     (pos_embed resized bicubically to the grid + pos_embed_window tiled over it)
//   4 stages of blocks { x = shortcut + proj(attn(norm1(x)));  x += mlp(norm2(x)) }
//     attention is windowed (padded) or global; the first block of stages 1..3 doubles the width
//     and max-pools the query and the projected shortcut 2x2, halving the grid
//   neck: 1x1 lateral convs to 256 channels; level 2 += nearest 2x upsampling of level 3
//   image_embed = level 2 + no_mem_embed; high_res_0/1 = conv_s0/conv_s1 of levels 0/1
#include "engine/models/hiera.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "engine/ops.h"

namespace splitseg {

namespace {

constexpr float kLayerNormEps = 1e-6f;  // every LayerNorm of the trunk (MultiScaleBlock)
constexpr int kNumStages = 4;           // the predictor keeps levels at strides 4, 8 and 16
constexpr int kMlpRatio = 4;
constexpr int kPatchKernel = 7, kPatchStride = 4, kPatchPadding = 3;
// Sanity bounds on what a file can ask for (official models: width <= 144, windows <= 16).
constexpr int64_t kMaxEmbedDim = 1 << 16, kMaxWindow = 256;

const std::string kTrunk = "image_encoder.trunk.";
const std::string kNeck = "image_encoder.neck.";

std::string block_prefix(int i) {
    return kTrunk + "blocks." + std::to_string(i) + ".";
}

// Neck conv j reads stage kNumStages - 1 - j: the yaml lists the lowest resolution first.
std::string lateral_prefix(int stage) {
    return kNeck + "convs." + std::to_string(kNumStages - 1 - stage) + ".conv.";
}

[[noreturn]] void bad_shape(const std::string& name, const Shape& shape, const std::string& why) {
    throw FormatError("SAM 2.1 Hiera encoder: " + name + " has shape " + shape_str(shape) + ", " +
                      why);
}

const Shape& shape_of(const std::map<std::string, Shape>& shapes, const std::string& name,
                      size_t rank) {
    auto it = shapes.find(name);
    if (it == shapes.end()) throw FormatError("SAM 2.1 Hiera encoder: missing tensor " + name);
    if (it->second.size() != rank)
        bad_shape(name, it->second, "expected " + std::to_string(rank) + " dimensions");
    return it->second;
}

// The official configs (sam2/configs/sam2.1/*.yaml; b+ uses Hiera's defaults).
struct Preset {
    const char* arch;
    int embed_dim, num_heads;
    std::vector<int> stages, global_blocks, window_spec;
    int bkg;  // window_pos_embed_bkg_spatial_size, square
};

const std::vector<Preset>& presets() {
    static const std::vector<Preset> table = {
        {"sam2.1_hiera_t", 96, 1, {1, 2, 7, 2}, {5, 7, 9}, {8, 4, 14, 7}, 7},
        {"sam2.1_hiera_s", 96, 1, {1, 2, 11, 2}, {7, 10, 13}, {8, 4, 14, 7}, 7},
        {"sam2.1_hiera_b+", 112, 2, {2, 3, 16, 3}, {12, 16, 20}, {8, 4, 14, 7}, 14},
        {"sam2.1_hiera_l", 144, 2, {2, 6, 36, 4}, {23, 33, 43}, {8, 4, 16, 8}, 7},
    };
    return table;
}

std::vector<int> backbone_channels(int embed_dim) {
    std::vector<int> c;
    for (int s = kNumStages - 1; s >= 0; --s) c.push_back(embed_dim << s);
    return c;
}

// "5,7,9" -> {5, 7, 9}, "" -> {}; throws FormatError naming the metadata key.
std::vector<int> parse_int_list(const std::string& key, const std::string& value) {
    std::vector<int> out;
    std::stringstream ss(value);
    std::string item;
    while (std::getline(ss, item, ',')) {
        size_t used = 0;
        int v = -1;
        try {
            v = std::stoi(item, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || item.find_first_not_of(" ", used) != std::string::npos || v < 0)
            throw FormatError("SAM 2.1 Hiera encoder: metadata " + key + " = '" + value +
                              "' is not a list of non-negative integers");
        out.push_back(v);
    }
    return out;
}

void check_config(const HieraConfig& cfg) {
    auto fail = [](const std::string& why) { throw FormatError("SAM 2.1 Hiera encoder: " + why); };
    if (cfg.num_heads <= 0 || cfg.num_heads > cfg.embed_dim)
        fail("num_heads must be in 1.." + std::to_string(cfg.embed_dim));
    if (cfg.window_spec.size() != kNumStages)
        fail("window_spec needs " + std::to_string(kNumStages) + " entries");
    for (int g : cfg.global_blocks)
        if (g < 0 || g >= cfg.depth())
            fail("global block " + std::to_string(g) + " outside 0.." +
                 std::to_string(cfg.depth() - 1));
    int first = 0;
    for (int s = 0; s < kNumStages; ++s) {
        const int dim = cfg.embed_dim << s, heads = cfg.num_heads << s;
        if (dim % heads != 0)
            fail("stage " + std::to_string(s) + " width " + std::to_string(dim) +
                 " is not divisible by " + std::to_string(heads) + " heads");
        if (cfg.window_spec[s] <= 0 || cfg.window_spec[s] > kMaxWindow)
            fail("window sizes must be in 1.." + std::to_string(kMaxWindow));
        // A pooling block halves its windows: the reference cannot unpartition odd ones.
        const bool global =
            std::count(cfg.global_blocks.begin(), cfg.global_blocks.end(), first) > 0;
        if (s > 0 && !global && cfg.window_spec[s - 1] % 2 != 0)
            fail("block " + std::to_string(first) + " pools a window of odd size " +
                 std::to_string(cfg.window_spec[s - 1]));
        first += cfg.stages[s];
    }
}

// out[O, h, w] = W[O, C] * x[h, w, C]^T + b: a 1x1 convolution of HWC tokens, producing CHW.
Tensor conv1x1_hwc(const Tensor& x, const Tensor& W, const Tensor& b) {
    const int64_t h = x.dim(0), w = x.dim(1), C = x.dim(2), O = W.dim(0), N = h * w;
    Tensor y({O, h, w});
    for (int64_t o = 0; o < O; ++o) std::fill(y.data() + o * N, y.data() + (o + 1) * N, b[o]);
    gemm(false, true, O, N, C, 1.0f, W.data(), C, x.data(), C, 1.0f, y.data(), N);
    return y;
}

// 2x2 max pooling, stride 2, floor (MaxPool2d(2, 2)) of an h x w grid of c channels whose rows
// are ld floats apart; dst is [h / 2, w / 2, c].
void max_pool2x2(const float* src, int64_t h, int64_t w, int64_t c, int64_t ld, float* dst) {
    const int64_t oh = h / 2, ow = w / 2;
    for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x) {
            const float* a = src + ((2 * y) * w + 2 * x) * ld;
            const float* b = a + ld;
            const float* c0 = a + w * ld;
            const float* d = c0 + ld;
            float* out = dst + (y * ow + x) * c;
            for (int64_t k = 0; k < c; ++k)
                out[k] = std::max(std::max(a[k], b[k]), std::max(c0[k], d[k]));
        }
}

// x [C, h, w] += nearest 2x upsampling of y [C, h / 2, w / 2].
void add_upsampled2x(Tensor& x, const Tensor& y) {
    const int64_t C = x.dim(0), h = x.dim(1), w = x.dim(2), yh = y.dim(1), yw = y.dim(2);
    if (y.dim(0) != C || 2 * yh != h || 2 * yw != w)
        throw std::invalid_argument("add_upsampled2x: " + shape_str(x.shape()) + " vs " +
                                    shape_str(y.shape()));
#pragma omp parallel for if (C * h * w > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < h; ++i) {
            float* row = x.data() + (c * h + i) * w;
            const float* src = y.data() + (c * yh + i / 2) * yw;
            for (int64_t j = 0; j < w; ++j) row[j] += src[j / 2];
        }
}

// a [M, K] * b [K, N] -> [M, N]
Tensor matmul(const Tensor& a, const Tensor& b) {
    const int64_t M = a.dim(0), K = a.dim(1), N = b.dim(1);
    Tensor y({M, N});
    gemm(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, y.data(), N);
    return y;
}

}  // namespace

int HieraConfig::depth() const {
    int d = 0;
    for (int n : stages) d += n;
    return d;
}

HieraConfig hiera_preset(const std::string& arch) {
    for (const Preset& p : presets()) {
        if (arch != p.arch) continue;
        HieraConfig cfg;
        cfg.embed_dim = p.embed_dim;
        cfg.num_heads = p.num_heads;
        cfg.stages = p.stages;
        cfg.global_blocks = p.global_blocks;
        cfg.window_spec = p.window_spec;
        cfg.window_pos_embed_bkg[0] = cfg.window_pos_embed_bkg[1] = p.bkg;
        cfg.backbone_channels = backbone_channels(p.embed_dim);
        cfg.fpn_dim = 256;
        return cfg;
    }
    throw std::invalid_argument("unknown SAM 2.1 Hiera size '" + arch +
                                "' (sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+, "
                                "sam2.1_hiera_l)");
}

std::vector<std::pair<std::string, Shape>> hiera_tensor_shapes(const HieraConfig& cfg) {
    const int64_t E = cfg.embed_dim, F = cfg.fpn_dim, ws = cfg.window_spec.at(0);
    std::vector<std::pair<std::string, Shape>> t = {
        {kTrunk + "pos_embed", {1, E, cfg.window_pos_embed_bkg[0], cfg.window_pos_embed_bkg[1]}},
        {kTrunk + "pos_embed_window", {1, E, ws, ws}},
        {kTrunk + "patch_embed.proj.weight", {E, 3, kPatchKernel, kPatchKernel}},
        {kTrunk + "patch_embed.proj.bias", {E}},
    };
    int64_t dim = E;
    int i = 0;
    for (size_t s = 0; s < cfg.stages.size(); ++s)
        for (int j = 0; j < cfg.stages[s]; ++j, ++i) {
            const std::string b = block_prefix(i);
            const int64_t out = s > 0 && j == 0 ? 2 * dim : dim, M = kMlpRatio * out;
            t.insert(t.end(), {
                                  {b + "norm1.weight", {dim}},
                                  {b + "norm1.bias", {dim}},
                                  {b + "attn.qkv.weight", {3 * out, dim}},
                                  {b + "attn.qkv.bias", {3 * out}},
                                  {b + "attn.proj.weight", {out, out}},
                                  {b + "attn.proj.bias", {out}},
                                  {b + "norm2.weight", {out}},
                                  {b + "norm2.bias", {out}},
                                  {b + "mlp.layers.0.weight", {M, out}},
                                  {b + "mlp.layers.0.bias", {M}},
                                  {b + "mlp.layers.1.weight", {out, M}},
                                  {b + "mlp.layers.1.bias", {out}},
                              });
            if (out != dim)
                t.insert(t.end(), {{b + "proj.weight", {out, dim}}, {b + "proj.bias", {out}}});
            dim = out;
        }
    for (size_t j = 0; j < cfg.backbone_channels.size(); ++j) {
        const std::string c = kNeck + "convs." + std::to_string(j) + ".conv.";
        t.insert(t.end(), {{c + "weight", {F, cfg.backbone_channels[j], 1, 1}}, {c + "bias", {F}}});
    }
    // The mask decoder's high-resolution projections: transformer_dim / 8 and / 4 channels.
    t.insert(t.end(), {
                          {"no_mem_embed", {1, 1, F}},
                          {"sam_mask_decoder.conv_s0.weight", {F / 8, F, 1, 1}},
                          {"sam_mask_decoder.conv_s0.bias", {F / 8}},
                          {"sam_mask_decoder.conv_s1.weight", {F / 4, F, 1, 1}},
                          {"sam_mask_decoder.conv_s1.bias", {F / 4}},
                      });
    return t;
}

HieraConfig infer_hiera_config(const std::map<std::string, Shape>& shapes,
                               const std::map<std::string, std::string>& metadata) {
    HieraConfig cfg;
    const std::string patch_name = kTrunk + "patch_embed.proj.weight";
    const Shape& patch = shape_of(shapes, patch_name, 4);  // [E, 3, 7, 7]
    if (patch[1] != 3 || patch[2] != kPatchKernel || patch[3] != kPatchKernel || patch[0] <= 0 ||
        patch[0] > kMaxEmbedDim)
        bad_shape(patch_name, patch, "expected [E, 3, 7, 7], E <= " + std::to_string(kMaxEmbedDim));
    cfg.embed_dim = static_cast<int>(patch[0]);

    const std::string pos_name = kTrunk + "pos_embed";
    const Shape& pos = shape_of(shapes, pos_name, 4);  // [1, E, h, w]
    if (pos[0] != 1 || pos[1] != cfg.embed_dim || pos[2] <= 0 || pos[3] <= 0 ||
        pos[2] > kMaxWindow || pos[3] > kMaxWindow)
        bad_shape(pos_name, pos, "expected [1, " + std::to_string(cfg.embed_dim) + ", h, w]");
    cfg.window_pos_embed_bkg[0] = static_cast<int>(pos[2]);
    cfg.window_pos_embed_bkg[1] = static_cast<int>(pos[3]);

    const std::string win_name = kTrunk + "pos_embed_window";
    const Shape& win = shape_of(shapes, win_name, 4);  // [1, E, S, S]
    if (win[0] != 1 || win[1] != cfg.embed_dim || win[2] != win[3] || win[2] <= 0 ||
        win[2] > kMaxWindow)
        bad_shape(win_name, win, "expected [1, " + std::to_string(cfg.embed_dim) + ", S, S]");

    // A stage starts where a block projects its shortcut to the doubled width.
    for (int i = 0; shapes.count(block_prefix(i) + "norm1.weight"); ++i) {
        if (i == 0 || shapes.count(block_prefix(i) + "proj.weight")) cfg.stages.push_back(0);
        ++cfg.stages.back();
    }
    if (cfg.stages.size() != kNumStages)
        throw FormatError("SAM 2.1 Hiera encoder: found " + std::to_string(cfg.stages.size()) +
                          " stages under " + kTrunk + "blocks., expected " +
                          std::to_string(kNumStages));

    auto preset = std::find_if(presets().begin(), presets().end(),
                               [&](const Preset& p) { return p.stages == cfg.stages; });
    if (preset != presets().end()) {
        cfg.num_heads = preset->num_heads;
        cfg.global_blocks = preset->global_blocks;
        cfg.window_spec = preset->window_spec;
    } else {
        cfg.num_heads = 1;
        cfg.global_blocks = {cfg.stages[0] + cfg.stages[1] + cfg.stages[2] - 1};
        cfg.window_spec = {8, 4, 14, 7};
    }
    cfg.window_spec[0] = static_cast<int>(win[2]);

    auto meta = [&](const std::string& key) -> const std::string* {
        auto it = metadata.find(key);
        return it == metadata.end() ? nullptr : &it->second;
    };
    if (const std::string* v = meta("hiera.num_heads")) {
        const std::vector<int> heads = parse_int_list("hiera.num_heads", *v);
        if (heads.size() != 1)
            throw FormatError("SAM 2.1 Hiera encoder: metadata hiera.num_heads = '" + *v +
                              "' is not one integer");
        cfg.num_heads = heads[0];
    }
    if (const std::string* v = meta("hiera.global_blocks"))
        cfg.global_blocks = parse_int_list("hiera.global_blocks", *v);
    if (const std::string* v = meta("hiera.window_spec")) {
        cfg.window_spec = parse_int_list("hiera.window_spec", *v);
        if (cfg.window_spec.size() == kNumStages && cfg.window_spec[0] != win[2])
            bad_shape(
                win_name, win,
                "but metadata hiera.window_spec starts with " + std::to_string(cfg.window_spec[0]));
    }

    cfg.backbone_channels = backbone_channels(cfg.embed_dim);
    const std::string neck_name = lateral_prefix(0) + "weight";
    const Shape& neck = shape_of(shapes, neck_name, 4);  // [F, E, 1, 1]
    if (neck[0] <= 0 || neck[0] % 8 != 0 || neck[0] > kMaxEmbedDim)
        bad_shape(neck_name, neck, "the neck width must be a positive multiple of 8");
    cfg.fpn_dim = static_cast<int>(neck[0]);
    check_config(cfg);
    return cfg;
}

HieraEncoder HieraEncoder::build(const HieraConfig& cfg, const TensorSource& source) {
    std::map<std::string, Tensor> t;
    for (const auto& [name, shape] : hiera_tensor_shapes(cfg)) t.emplace(name, source(name, shape));
    auto take = [&](const std::string& name) { return std::move(t.at(name)); };
    // f32 only: bf16 products moved a golden mask below IoU 0.99 (0.986, img0.point1).
    auto linear_layer = [&](const std::string& name) {
        return Linear(take(name + "weight"), take(name + "bias"), Precision::F32);
    };
    const int64_t E = cfg.embed_dim, F = cfg.fpn_dim;

    HieraEncoder enc;
    enc.cfg_ = cfg;
    enc.patch_w_ = take(kTrunk + "patch_embed.proj.weight");
    enc.patch_b_ = take(kTrunk + "patch_embed.proj.bias");
    enc.pos_embed_ = take(kTrunk + "pos_embed");
    enc.pos_embed_.reshape({E, cfg.window_pos_embed_bkg[0], cfg.window_pos_embed_bkg[1]});
    enc.pos_embed_window_ = take(kTrunk + "pos_embed_window");
    enc.pos_embed_window_.reshape({E, cfg.window_spec[0], cfg.window_spec[0]});

    int i = 0;
    for (int s = 0; s < kNumStages; ++s)
        for (int j = 0; j < cfg.stages[s]; ++j, ++i) {
            const std::string p = block_prefix(i);
            Block b;
            b.dim_out = static_cast<int>(E << s);
            b.heads = cfg.num_heads << s;
            b.pool = s > 0 && j == 0;
            // The first block of a stage still uses the previous stage's window (then pooled).
            const bool global =
                std::count(cfg.global_blocks.begin(), cfg.global_blocks.end(), i) > 0;
            b.window = global ? 0 : cfg.window_spec[b.pool ? s - 1 : s];
            b.norm1_w = take(p + "norm1.weight");
            b.norm1_b = take(p + "norm1.bias");
            b.qkv_b = t.at(p + "attn.qkv.bias");  // a copy: the padding tokens' q, k, v
            b.qkv = linear_layer(p + "attn.qkv.");
            b.attn_proj = linear_layer(p + "attn.proj.");
            b.norm2_w = take(p + "norm2.weight");
            b.norm2_b = take(p + "norm2.bias");
            b.mlp0 = linear_layer(p + "mlp.layers.0.");
            b.mlp1 = linear_layer(p + "mlp.layers.1.");
            if (b.pool) b.proj = linear_layer(p + "proj.");
            enc.blocks_.push_back(std::move(b));
        }

    auto lateral = [&](int stage, Tensor& w, Tensor& b) {
        w = take(lateral_prefix(stage) + "weight");
        w.reshape({F, cfg.backbone_channels[kNumStages - 1 - stage]});
        b = take(lateral_prefix(stage) + "bias");
    };
    // conv_s(lateral(x)) = (Ws * Wl) x + (Ws * bl + bs)
    auto fold_high_res = [&](int stage, const std::string& conv, Tensor& w, Tensor& b) {
        Tensor lw, lb;
        lateral(stage, lw, lb);
        Tensor sw = take("sam_mask_decoder." + conv + ".weight");
        sw.reshape({sw.dim(0), F});
        b = linear(lb, sw, take("sam_mask_decoder." + conv + ".bias"));
        w = matmul(sw, lw);
    };
    fold_high_res(0, "conv_s0", enc.high_res_0_w_, enc.high_res_0_b_);
    fold_high_res(1, "conv_s1", enc.high_res_1_w_, enc.high_res_1_b_);
    lateral(2, enc.level2_w_, enc.level2_b_);
    add_(enc.level2_b_, take("no_mem_embed"));
    lateral(3, enc.level3_w_, enc.level3_b_);
    return enc;
}

bool HieraEncoder::detect(const WeightFile& w) {
    return w.has(kTrunk + "patch_embed.proj.weight");
}

HieraEncoder HieraEncoder::load(const WeightFile& w) {
    std::map<std::string, Shape> shapes;
    for (const std::string& name : w.names()) shapes.emplace(name, w.ref(name).shape);
    HieraConfig cfg;
    try {
        cfg = infer_hiera_config(shapes, w.metadata());
    } catch (const FormatError& e) {
        throw FormatError(w.path() + ": " + e.what());
    }
    return build(cfg,
                 [&](const std::string& name, const Shape& shape) { return w.get(name, shape); });
}

HieraEncoder HieraEncoder::from_tensors(std::map<std::string, Tensor> tensors,
                                        const std::map<std::string, std::string>& metadata) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, t] : tensors) shapes.emplace(name, t.shape());
    auto source = [&](const std::string& name, const Shape& shape) {
        auto it = tensors.find(name);
        if (it == tensors.end()) throw FormatError("SAM 2.1 Hiera encoder: missing tensor " + name);
        if (it->second.shape() != shape)
            bad_shape(name, it->second.shape(), "expected " + shape_str(shape));
        return std::move(it->second);
    };
    return build(infer_hiera_config(shapes, metadata), source);
}

Sam2Features HieraEncoder::encode(const Tensor& image, const Trace& trace) const {
    const std::vector<Tensor> stages = trunk(image, trace);  // [h_s, w_s, E << s]
    Sam2Features f;
    f.high_res_0 = conv1x1_hwc(stages[0], high_res_0_w_, high_res_0_b_);  // [F / 8, H/4, W/4]
    f.high_res_1 = conv1x1_hwc(stages[1], high_res_1_w_, high_res_1_b_);  // [F / 4, H/8, W/8]
    f.image_embed = conv1x1_hwc(stages[2], level2_w_, level2_b_);         // [F, H/16, W/16]
    add_upsampled2x(f.image_embed, conv1x1_hwc(stages[3], level3_w_, level3_b_));
    return f;
}

std::vector<Tensor> HieraEncoder::trunk(const Tensor& image, const Trace& trace) const {
    const int64_t H = image.ndim() == 3 ? image.dim(1) : 0,
                  W = image.ndim() == 3 ? image.dim(2) : 0;
    const int64_t tile = kPatchStride * cfg_.window_spec[0];
    if (image.ndim() != 3 || image.dim(0) != 3 || H <= 0 || W <= 0 || H % 32 || W % 32 ||
        H % tile || W % tile)
        throw std::invalid_argument("SAM 2.1 Hiera encoder: image is " + shape_str(image.shape()) +
                                    ", expected [3, H, W] with H and W multiples of 32 and of " +
                                    std::to_string(tile) + " (normally [3, 1024, 1024])");
    Tensor x = conv2d_planar_to_hwc(image, patch_w_, patch_b_, kPatchStride,
                                    kPatchPadding);  // [H/4, W/4, E]
    add_(x, chw_to_hwc(positional_embedding(x.dim(0), x.dim(1))));

    std::vector<Tensor> outputs;
    size_t i = 0;
    for (int s = 0; s < kNumStages; ++s) {
        for (int j = 0; j < cfg_.stages[s]; ++j) run_block(blocks_[i++], x);
        if (trace.fn) trace("trunk.stage" + std::to_string(s), hwc_to_chw(x));
        outputs.push_back(x);
    }
    return outputs;
}

// pos_embed resized to the grid plus pos_embed_window repeated over it: [E, h, w].
Tensor HieraEncoder::positional_embedding(int64_t h, int64_t w) const {
    Tensor pe = interpolate_bicubic(pos_embed_, h, w);
    const int64_t E = cfg_.embed_dim, S = cfg_.window_spec[0];
#pragma omp parallel for if (E * h * w > 65536)
    for (int64_t c = 0; c < E; ++c)
        for (int64_t y = 0; y < h; ++y) {
            float* row = pe.data() + (c * h + y) * w;
            const float* tile = pos_embed_window_.data() + (c * S + y % S) * S;
            for (int64_t x = 0; x < w; ++x) row[x] += tile[x % S];
        }
    return pe;
}

// x [h, w, dim] -> [h', w', dim_out] (h' = h / 2 in pooling blocks).
void HieraEncoder::run_block(const Block& b, Tensor& x) const {
    // x = shortcut + proj(attention(norm1(x))); a pooling block's shortcut comes from norm1(x).
    Tensor h = b.pool ? std::move(x) : x;
    layer_norm(h, b.norm1_w, b.norm1_b, kLayerNormEps);
    const Tensor qkv = b.qkv(h);  // [h, w, 3 * dim_out]
    if (b.pool) {
        // The shortcut is projected from the normalised input, then pooled as the query is.
        const Tensor shortcut = b.proj(h);  // [h, w, dim_out]
        x = Tensor({shortcut.dim(0) / 2, shortcut.dim(1) / 2, b.dim_out});
        max_pool2x2(shortcut.data(), shortcut.dim(0), shortcut.dim(1), b.dim_out, b.dim_out,
                    x.data());
    }
    const Tensor attended = window_attention(b, qkv);
    b.attn_proj.run(attended.data(), x.numel() / b.dim_out, x.data(), Epilogue::Add);

    // x += mlp(norm2(x))
    add_mlp(x.data(), x.numel() / b.dim_out, b.dim_out, b.norm2_w, b.norm2_b, kLayerNormEps, b.mlp0,
            b.mlp1);
}

// Attention within windows tiling the grid (one window covering it for global blocks), padded at
// the bottom and right as the reference's window_partition does: padding tokens are zero after
// norm1, so their q, k, v are the qkv bias, and as keys they take part in the softmax. In pooling
// blocks each window's query is max-pooled 2x2, so each window yields half-size output tiles.
// qkv [h, w, 3 * dim_out] -> [h', w', dim_out].
Tensor HieraEncoder::window_attention(const Block& b, const Tensor& qkv) const {
    const int64_t h = qkv.dim(0), w = qkv.dim(1), C = b.dim_out, C3 = 3 * C;
    const int64_t wh = b.window ? b.window : h, ww = b.window ? b.window : w;  // window
    const int64_t ny = (h + wh - 1) / wh, nx = (w + ww - 1) / ww;
    const int64_t stride = b.pool ? 2 : 1;
    const int64_t qh = wh / stride, qw = ww / stride;  // a window's output tile
    const int64_t oh = h / stride, ow = w / stride;
    Tensor out({oh, ow, C});
#pragma omp parallel if (ny * nx > 1)
    {
        std::vector<float> win(wh * ww * C3), pooled(b.pool ? qh * qw * C : 0), tile(qh * qw * C);
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < ny * nx; ++t) {
            const int64_t y0 = t / nx * wh, x0 = t % nx * ww;
            const int64_t rows = std::min(wh, h - y0), cols = std::min(ww, w - x0);
            for (int64_t ty = 0; ty < wh; ++ty) {
                float* dst = win.data() + ty * ww * C3;
                const int64_t valid = ty < rows ? cols : 0;
                if (valid)
                    std::memcpy(dst, qkv.data() + ((y0 + ty) * w + x0) * C3,
                                valid * C3 * sizeof(float));
                for (int64_t tx = valid; tx < ww; ++tx)
                    std::memcpy(dst + tx * C3, b.qkv_b.data(), C3 * sizeof(float));
            }
            const float* q = win.data();
            int64_t ldq = C3;
            if (b.pool) {
                max_pool2x2(win.data(), wh, ww, C, C3, pooled.data());
                q = pooled.data();
                ldq = C;
            }
            attention(q, ldq, win.data() + C, C3, win.data() + 2 * C, C3, tile.data(), C, qh * qw,
                      wh * ww, b.heads, C / b.heads);
            const int64_t oy0 = y0 / stride, ox0 = x0 / stride;
            const int64_t out_rows = std::min(qh, oh - oy0), out_cols = std::min(qw, ow - ox0);
            for (int64_t ty = 0; ty < out_rows; ++ty)
                std::memcpy(out.data() + ((oy0 + ty) * ow + ox0) * C, tile.data() + ty * qw * C,
                            out_cols * C * sizeof(float));
        }
    }
    return out;
}

}  // namespace splitseg
