#include "engine/models/hiera.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/ops.h"

namespace splitseg {
namespace {

// A reduced model on a 64 x 64 image (grids 16, 8, 4, 2): two heads from stage 0 on, windows that
// exactly tile each grid, the neck at a quarter of its width.
HieraConfig tiny_config() {
    HieraConfig cfg;
    cfg.embed_dim = 8;
    cfg.num_heads = 2;
    cfg.stages = {1, 1, 2, 1};
    cfg.global_blocks = {3};
    cfg.window_spec = {8, 4, 2, 2};
    cfg.window_pos_embed_bkg[0] = 3;
    cfg.window_pos_embed_bkg[1] = 5;
    cfg.backbone_channels = {64, 32, 16, 8};
    cfg.fpn_dim = 64;
    return cfg;
}

std::map<std::string, std::string> tiny_metadata() {
    return {
        {"hiera.num_heads", "2"}, {"hiera.global_blocks", "3"}, {"hiera.window_spec", "8,4,2,2"}};
}

std::map<std::string, Shape> shape_map(const HieraConfig& cfg) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, shape] : hiera_tensor_shapes(cfg)) shapes[name] = shape;
    return shapes;
}

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale) {
    std::uniform_real_distribution<float> u(-scale, scale);
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = u(rng);
    return t;
}

std::map<std::string, Tensor> random_weights(const HieraConfig& cfg) {
    std::mt19937 rng(11);
    std::map<std::string, Tensor> tensors;
    for (const auto& [name, shape] : hiera_tensor_shapes(cfg))
        tensors.emplace(name, random_tensor(shape, rng, 0.3f));
    return tensors;
}

Tensor random_image(int64_t size) {
    std::mt19937 rng(5);
    return random_tensor({3, size, size}, rng, 2.0f);
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
    EXPECT_EQ(a.shape(), b.shape());
    float m = 0;
    for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i)
        m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// y[O, HW] = W[O, C] x[C, HW] + b, written plainly.
Tensor naive_conv1x1(const Tensor& x, const Tensor& W, const Tensor& b) {
    const int64_t C = x.dim(0), N = x.dim(1) * x.dim(2), O = W.dim(0);
    Tensor y({O, x.dim(1), x.dim(2)});
    for (int64_t o = 0; o < O; ++o)
        for (int64_t p = 0; p < N; ++p) {
            double acc = b[o];
            for (int64_t c = 0; c < C; ++c) acc += double(W[o * C + c]) * x[c * N + p];
            y[o * N + p] = static_cast<float>(acc);
        }
    return y;
}

TEST(HieraConfig, PresetsRoundTripThroughTheirTensorShapes) {
    for (const char* arch :
         {"sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"}) {
        const HieraConfig preset = hiera_preset(arch);
        EXPECT_EQ(infer_hiera_config(shape_map(preset)), preset) << arch;
    }
    EXPECT_THROW(hiera_preset("sam2.1_hiera_x"), std::invalid_argument);
}

TEST(HieraConfig, PresetsMatchTheOfficialYaml) {
    const HieraConfig t = hiera_preset("sam2.1_hiera_t");
    EXPECT_EQ(t.embed_dim, 96);
    EXPECT_EQ(t.num_heads, 1);
    EXPECT_EQ(t.stages, (std::vector<int>{1, 2, 7, 2}));
    EXPECT_EQ(t.global_blocks, (std::vector<int>{5, 7, 9}));
    EXPECT_EQ(t.window_spec, (std::vector<int>{8, 4, 14, 7}));
    EXPECT_EQ(t.backbone_channels, (std::vector<int>{768, 384, 192, 96}));
    const HieraConfig b = hiera_preset("sam2.1_hiera_b+");
    EXPECT_EQ(b.embed_dim, 112);
    EXPECT_EQ(b.num_heads, 2);
    EXPECT_EQ(b.global_blocks, (std::vector<int>{12, 16, 20}));
    EXPECT_EQ(b.window_pos_embed_bkg[0], 14);
    const HieraConfig l = hiera_preset("sam2.1_hiera_l");
    EXPECT_EQ(l.stages, (std::vector<int>{2, 6, 36, 4}));
    EXPECT_EQ(l.global_blocks, (std::vector<int>{23, 33, 43}));
    EXPECT_EQ(l.window_spec, (std::vector<int>{8, 4, 16, 8}));
    EXPECT_EQ(l.backbone_channels, (std::vector<int>{1152, 576, 288, 144}));
}

TEST(HieraConfig, FullSizeShapesAreTheCheckpointShapes) {
    std::map<std::string, Shape> s = shape_map(hiera_preset("sam2.1_hiera_t"));
    // 4 trunk tensors, 12 per block, 2 more in each of the 3 pooling blocks, 4 neck convs,
    // no_mem_embed and conv_s0/conv_s1.
    EXPECT_EQ(s.size(), 4u + 12u * 12u + 3u * 2u + 8u + 5u);
    EXPECT_EQ(s["image_encoder.trunk.pos_embed"], (Shape{1, 96, 7, 7}));
    EXPECT_EQ(s["image_encoder.trunk.pos_embed_window"], (Shape{1, 96, 8, 8}));
    EXPECT_EQ(s["image_encoder.trunk.blocks.1.attn.qkv.weight"], (Shape{576, 96}));
    EXPECT_EQ(s["image_encoder.trunk.blocks.1.proj.weight"], (Shape{192, 96}));
    EXPECT_EQ(s["image_encoder.trunk.blocks.11.mlp.layers.0.weight"], (Shape{3072, 768}));
    EXPECT_EQ(s["image_encoder.neck.convs.0.conv.weight"], (Shape{256, 768, 1, 1}));
    EXPECT_EQ(s["image_encoder.neck.convs.3.conv.weight"], (Shape{256, 96, 1, 1}));
    EXPECT_EQ(s["no_mem_embed"], (Shape{1, 1, 256}));
    EXPECT_EQ(s["sam_mask_decoder.conv_s0.weight"], (Shape{32, 256, 1, 1}));
    EXPECT_EQ(s["sam_mask_decoder.conv_s1.weight"], (Shape{64, 256, 1, 1}));
    EXPECT_EQ(s.count("image_encoder.trunk.blocks.0.proj.weight"), 0u);
}

TEST(HieraConfig, UnknownLayoutsGetTheDefaultRule) {
    // The golden model's layout: width 32, stages 1, 1, 2, 1.
    HieraConfig mini = hiera_preset("sam2.1_hiera_t");
    mini.embed_dim = 32;
    mini.stages = {1, 1, 2, 1};
    mini.global_blocks = {0};  // not what the shapes say: inference must not read it
    mini.backbone_channels = {256, 128, 64, 32};
    const HieraConfig cfg = infer_hiera_config(shape_map(mini));
    EXPECT_EQ(cfg.num_heads, 1);
    EXPECT_EQ(cfg.global_blocks, (std::vector<int>{3}));
    EXPECT_EQ(cfg.window_spec, (std::vector<int>{8, 4, 14, 7}));
    EXPECT_EQ(cfg.window_pos_embed_bkg[0], 7);
    EXPECT_EQ(cfg.depth(), 5);
    EXPECT_EQ(cfg.fpn_dim, 256);
}

TEST(HieraConfig, MetadataOverridesWhatTheShapesCannotTell) {
    const HieraConfig tiny = tiny_config();
    EXPECT_EQ(infer_hiera_config(shape_map(tiny), tiny_metadata()), tiny);

    auto with = [&](const std::string& key, const std::string& value) {
        std::map<std::string, std::string> m = tiny_metadata();
        m[key] = value;
        return infer_hiera_config(shape_map(tiny), m);
    };
    EXPECT_EQ(with("hiera.global_blocks", "1, 4").global_blocks, (std::vector<int>{1, 4}));
    EXPECT_THROW(with("hiera.global_blocks", "5"), FormatError);  // only 5 blocks
    EXPECT_THROW(with("hiera.global_blocks", "a"), FormatError);
    EXPECT_THROW(with("hiera.global_blocks", "3x"), FormatError);
    EXPECT_TRUE(with("hiera.global_blocks", "").global_blocks.empty());
    EXPECT_THROW(with("hiera.global_blocks", "1,,2"), FormatError);
    EXPECT_THROW(with("hiera.num_heads", "3"), FormatError);  // 8 channels, 3 heads
    EXPECT_THROW(with("hiera.num_heads", "1,2"), FormatError);
    EXPECT_THROW(with("hiera.window_spec", "8,4,2"), FormatError);         // one per stage
    EXPECT_THROW(with("hiera.window_spec", "4,4,2,2"), FormatError);       // pos_embed_window is 8
    EXPECT_THROW(with("hiera.window_spec", "8,3,2,2"), FormatError);       // block 2 pools 3 x 3
    EXPECT_THROW(with("hiera.window_spec", "8,4,100000,2"), FormatError);  // absurd window
    EXPECT_THROW(with("hiera.num_heads", "1048576"), FormatError);
}

TEST(HieraConfig, ContradictoryOrMissingTensorsAreFormatErrors) {
    const HieraConfig tiny = tiny_config();
    std::map<std::string, Shape> s = shape_map(tiny);
    s.erase("image_encoder.trunk.pos_embed_window");
    EXPECT_THROW(infer_hiera_config(s), FormatError);

    s = shape_map(tiny);
    s.erase("image_encoder.trunk.blocks.2.proj.weight");  // stages 1, 2, 1, 1... only 3 stages
    EXPECT_THROW(infer_hiera_config(s), FormatError);

    s = shape_map(tiny);
    s["image_encoder.trunk.pos_embed"] = {1, 9, 3, 5};
    EXPECT_THROW(infer_hiera_config(s), FormatError);

    std::map<std::string, Tensor> w = random_weights(tiny);
    w.erase("sam_mask_decoder.conv_s1.bias");
    EXPECT_THROW(HieraEncoder::from_tensors(std::move(w), tiny_metadata()), FormatError);

    w = random_weights(tiny);
    w["image_encoder.trunk.blocks.3.mlp.layers.0.weight"] = Tensor::zeros({64, 16});
    EXPECT_THROW(HieraEncoder::from_tensors(std::move(w), tiny_metadata()), FormatError);
}

TEST(HieraEncoder, TakesImagesWhoseSidesAreMultiplesOf32) {
    const HieraEncoder enc =
        HieraEncoder::from_tensors(random_weights(tiny_config()), tiny_metadata());
    EXPECT_THROW(enc.encode(Tensor::zeros({3, 64, 48})), std::invalid_argument);
    EXPECT_THROW(enc.encode(Tensor::zeros({3, 60, 64})), std::invalid_argument);
    EXPECT_THROW(enc.encode(Tensor::zeros({1, 64, 64})), std::invalid_argument);
    EXPECT_THROW(enc.encode(Tensor::zeros({64, 64})), std::invalid_argument);
    const Sam2Features f = enc.encode(Tensor::zeros({3, 64, 96}));
    EXPECT_EQ(f.image_embed.shape(), (Shape{64, 4, 6}));
    EXPECT_EQ(f.high_res_0.shape(), (Shape{8, 16, 24}));
}

// The neck and the extras, recomputed plainly from the traced stage outputs with the checkpoint's
// own tensors: lateral 1x1 convs, level 2 += nearest 2x of level 3, + no_mem_embed, and
// conv_s0/conv_s1 applied after the lateral convs of levels 0 and 1.
TEST(HieraEncoder, NeckAndExtrasMatchAPlainComputation) {
    const std::map<std::string, Tensor> w = random_weights(tiny_config());
    const HieraEncoder enc = HieraEncoder::from_tensors(w, tiny_metadata());
    std::map<std::string, Tensor> traced;
    const Sam2Features f =
        enc.encode(random_image(64),
                   Trace{[&](const std::string& n, const Tensor& t) { traced.emplace(n, t); }});

    ASSERT_EQ(traced.size(), 4u);
    EXPECT_EQ(traced["trunk.stage0"].shape(), (Shape{8, 16, 16}));
    EXPECT_EQ(traced["trunk.stage1"].shape(), (Shape{16, 8, 8}));
    EXPECT_EQ(traced["trunk.stage2"].shape(), (Shape{32, 4, 4}));
    EXPECT_EQ(traced["trunk.stage3"].shape(), (Shape{64, 2, 2}));

    auto lateral = [&](int conv, const Tensor& x) {
        const std::string p = "image_encoder.neck.convs." + std::to_string(conv) + ".conv.";
        return naive_conv1x1(x, w.at(p + "weight"), w.at(p + "bias"));
    };
    const Tensor s0 =
        naive_conv1x1(lateral(3, traced["trunk.stage0"]), w.at("sam_mask_decoder.conv_s0.weight"),
                      w.at("sam_mask_decoder.conv_s0.bias"));
    const Tensor s1 =
        naive_conv1x1(lateral(2, traced["trunk.stage1"]), w.at("sam_mask_decoder.conv_s1.weight"),
                      w.at("sam_mask_decoder.conv_s1.bias"));
    Tensor embed = lateral(1, traced["trunk.stage2"]);
    const Tensor top = lateral(0, traced["trunk.stage3"]);
    for (int64_t c = 0; c < 64; ++c)
        for (int64_t y = 0; y < 4; ++y)
            for (int64_t x = 0; x < 4; ++x)
                embed[(c * 4 + y) * 4 + x] +=
                    top[(c * 2 + y / 2) * 2 + x / 2] + w.at("no_mem_embed")[c];

    EXPECT_EQ(f.high_res_0.shape(), (Shape{8, 16, 16}));
    EXPECT_EQ(f.high_res_1.shape(), (Shape{16, 8, 8}));
    EXPECT_EQ(f.image_embed.shape(), (Shape{64, 4, 4}));
    EXPECT_LT(max_abs_diff(f.high_res_0, s0), 1e-4f);
    EXPECT_LT(max_abs_diff(f.high_res_1, s1), 1e-4f);
    EXPECT_LT(max_abs_diff(f.image_embed, embed), 1e-4f);
}

// Windows that cover the whole grid are global attention: the same weights run with every block
// global must give the same features (window partition, pooled windows and their reassembly).
TEST(HieraEncoder, GridSizedWindowsEqualGlobalAttention) {
    HieraConfig windowed = tiny_config();
    windowed.window_spec = {16, 8, 4, 2};
    windowed.global_blocks = {};
    std::map<std::string, std::string> meta = {{"hiera.num_heads", "2"},
                                               {"hiera.global_blocks", "0,1,2,3,4"},
                                               {"hiera.window_spec", "16,8,4,2"}};
    const HieraEncoder global = HieraEncoder::from_tensors(random_weights(windowed), meta);
    meta["hiera.global_blocks"] = "";
    const HieraEncoder win = HieraEncoder::from_tensors(random_weights(windowed), meta);
    ASSERT_TRUE(win.config().global_blocks.empty());
    const Tensor image = random_image(64);
    const Sam2Features a = global.encode(image), b = win.encode(image);
    EXPECT_LT(max_abs_diff(a.image_embed, b.image_embed), 1e-4f);
    EXPECT_LT(max_abs_diff(a.high_res_0, b.high_res_0), 1e-4f);
    EXPECT_LT(max_abs_diff(a.high_res_1, b.high_res_1), 1e-4f);
}

// Smaller windows than the grid change the result (the windows are really separate), and a
// window that does not divide the grid pads it: the output keeps the grid's size.
TEST(HieraEncoder, SmallerAndPaddedWindowsKeepTheGrid) {
    HieraConfig cfg = tiny_config();
    const std::map<std::string, std::string> tiled = tiny_metadata();
    std::map<std::string, std::string> padded = tiled;
    padded["hiera.window_spec"] = "8,6,6,3";  // 8 / 6 and 4 / 6 and 2 / 3: padded windows
    const HieraEncoder a = HieraEncoder::from_tensors(random_weights(cfg), tiled);
    const HieraEncoder b = HieraEncoder::from_tensors(random_weights(cfg), padded);
    const Tensor image = random_image(64);
    const Sam2Features fa = a.encode(image), fb = b.encode(image);
    EXPECT_EQ(fb.image_embed.shape(), (Shape{64, 4, 4}));
    EXPECT_EQ(fb.high_res_1.shape(), (Shape{16, 8, 8}));
    EXPECT_GT(max_abs_diff(fa.image_embed, fb.image_embed), 1e-3f);
    for (int64_t i = 0; i < fb.image_embed.numel(); ++i)
        ASSERT_TRUE(std::isfinite(fb.image_embed[i]));
}

// torch.nn.functional.interpolate(mode="bicubic", align_corners=False), which resizes pos_embed.
TEST(HieraEncoder, BicubicResizeMatchesPyTorch) {
    // [0, 1] -> 4 samples: Keys' kernel (A = -0.75) with repeated borders overshoots at the ends.
    const float ramp[2] = {0.0f, 1.0f};
    Tensor row = interpolate_bicubic(Tensor::from({1, 1, 2}, ramp), 1, 4);
    const float expected[4] = {-0.10546875f, 0.2265625f, 0.7734375f, 1.10546875f};
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(row[i], expected[i], 1e-6f) << i;

    // The same along the other axis, and per channel.
    const float two_columns[4] = {0, 1, 5, 5};
    Tensor col = interpolate_bicubic(Tensor::from({2, 2, 1}, two_columns), 4, 1);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(col[i], expected[i], 1e-6f) << i;
    for (int i = 4; i < 8; ++i) EXPECT_NEAR(col[i], 5.0f, 1e-6f) << i;

    // Same size: the identity.
    std::mt19937 rng(3);
    const Tensor x = random_tensor({2, 7, 7}, rng, 1.0f);
    EXPECT_EQ(max_abs_diff(interpolate_bicubic(x, 7, 7), x), 0.0f);
}

}  // namespace
}  // namespace splitseg
