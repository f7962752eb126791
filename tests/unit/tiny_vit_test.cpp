#include "engine/models/tiny_vit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <utility>

#include "engine/ops.h"

namespace splitseg {
namespace {

// A reduced encoder that still has everything: an MBConv layer, three attention layers whose
// windows all need padding (128 = 19 * 7 - 5, 64 = 13 * 5 - 1, 32 = 11 * 3 - 1), several heads,
// patch merging between layers, a classification head to ignore.
TinyVitConfig tiny_config() {
    TinyVitConfig cfg;
    cfg.embed_dims = {8, 16, 24, 32};
    cfg.depths = {1, 2, 1, 1};
    cfg.num_heads = {0, 2, 3, 4};
    cfg.window_sizes = {0, 7, 5, 3};
    cfg.out_chans = 16;
    cfg.num_classes = 10;
    return cfg;
}

std::map<std::string, Shape> shape_map(const TinyVitConfig& cfg, const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, shape] : tiny_vit_tensor_shapes(cfg, prefix)) shapes[name] = shape;
    return shapes;
}

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = u(rng);
    return t;
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Random weights with BatchNorm statistics a trained model could have (positive variances).
std::map<std::string, Tensor> random_weights(const TinyVitConfig& cfg,
                                             const std::string& prefix = "image_encoder.") {
    std::mt19937 rng(7);
    std::map<std::string, Tensor> tensors;
    for (const auto& [name, shape] : tiny_vit_tensor_shapes(cfg, prefix)) {
        const bool positive = ends_with(name, "running_var") || ends_with(name, "bn.weight");
        tensors.emplace(name, positive ? random_tensor(shape, rng, 0.5f, 1.5f)
                                       : random_tensor(shape, rng, -0.3f, 0.3f));
    }
    return tensors;
}

Tensor random_image(unsigned seed) {
    std::mt19937 rng(seed);
    return random_tensor({3, 1024, 1024}, rng, -2.0f, 2.0f);
}

TEST(TinyVitConfig, MobileSamPresetHasTheCheckpointLayout) {
    const auto list = tiny_vit_tensor_shapes(tiny_vit_preset("mobilesam"));
    // 302 image_encoder tensors in the official checkpoint, in state_dict order.
    ASSERT_EQ(list.size(), 302u);
    EXPECT_EQ(list.front(), (std::pair<std::string, Shape>{
                                "image_encoder.patch_embed.seq.0.c.weight", {32, 3, 3, 3}}));
    EXPECT_EQ(list.back(), (std::pair<std::string, Shape>{"image_encoder.neck.3.bias", {256}}));
    std::map<std::string, Shape> shapes = shape_map(tiny_vit_preset("mobilesam"), "image_encoder.");
    const std::string p = "image_encoder.";
    EXPECT_EQ(shapes[p + "patch_embed.seq.0.bn.num_batches_tracked"], Shape{});
    EXPECT_EQ(shapes[p + "layers.0.blocks.1.conv2.c.weight"], (Shape{256, 1, 3, 3}));
    EXPECT_EQ(shapes[p + "layers.0.downsample.conv3.c.weight"], (Shape{128, 128, 1, 1}));
    EXPECT_EQ(shapes[p + "layers.1.blocks.0.attn.attention_biases"], (Shape{4, 49}));
    EXPECT_EQ(shapes[p + "layers.2.blocks.5.attn.attention_biases"], (Shape{5, 196}));
    EXPECT_EQ(shapes[p + "layers.2.blocks.5.mlp.fc1.weight"], (Shape{640, 160}));
    EXPECT_EQ(shapes[p + "layers.2.downsample.conv2.c.weight"], (Shape{320, 1, 3, 3}));
    EXPECT_EQ(shapes[p + "layers.3.blocks.1.attn.qkv.weight"], (Shape{960, 320}));
    EXPECT_EQ(shapes[p + "layers.3.blocks.1.local_conv.bn.running_var"], (Shape{320}));
    EXPECT_EQ(shapes[p + "head.weight"], (Shape{1000, 320}));
    EXPECT_EQ(shapes[p + "neck.2.weight"], (Shape{256, 256, 3, 3}));
    EXPECT_FALSE(shapes.contains(p + "layers.3.downsample.conv1.c.weight"));
    EXPECT_THROW(tiny_vit_preset("tiny_vit_21m"), std::invalid_argument);
}

TEST(TinyVitConfig, RoundTripsThroughItsTensorShapes) {
    const TinyVitConfig preset = tiny_vit_preset("mobilesam");
    EXPECT_EQ(infer_tiny_vit_config(shape_map(preset, "image_encoder.")), preset);
    EXPECT_EQ(infer_tiny_vit_config(shape_map(tiny_config(), "enc."), "enc."), tiny_config());
    EXPECT_THROW(infer_tiny_vit_config(shape_map(tiny_config(), "enc."), "image_encoder."),
                 FormatError);
}

TEST(TinyVitConfig, RejectsContradictoryShapes) {
    const std::string p = "image_encoder.";
    std::map<std::string, Shape> shapes = shape_map(tiny_config(), p);
    shapes[p + "layers.1.blocks.0.attn.attention_biases"] = {2, 50};  // not a square window
    EXPECT_THROW(infer_tiny_vit_config(shapes), FormatError);
    shapes[p + "layers.1.blocks.0.attn.attention_biases"] = {3, 49};  // 3 heads for width 16
    EXPECT_THROW(infer_tiny_vit_config(shapes), FormatError);
    shapes[p + "layers.1.blocks.0.attn.attention_biases"] = {2, 1000 * 1000};  // a huge window
    EXPECT_THROW(infer_tiny_vit_config(shapes), FormatError);
    shapes = shape_map(tiny_config(), p);
    shapes.erase(p + "neck.0.weight");
    EXPECT_THROW(infer_tiny_vit_config(shapes), FormatError);
    shapes = shape_map(tiny_config(), p);
    shapes[p + "layers.2.blocks.0.conv1.c.weight"] = {96, 24, 1, 1};  // MBConv after attention
    EXPECT_THROW(infer_tiny_vit_config(shapes), FormatError);
}

TEST(TinyVitAttentionBias, IndexMatchesTheReferenceFirstSeenNumbering) {
    for (int window = 1; window <= 14; ++window) {
        // The reference: every (p1, p2) pair in order, a new number for each unseen offset.
        std::map<std::pair<int, int>, int> offsets;
        std::vector<int> expected;
        for (int a = 0; a < window * window; ++a)
            for (int b = 0; b < window * window; ++b) {
                const std::pair<int, int> off{std::abs(a / window - b / window),
                                              std::abs(a % window - b % window)};
                auto it = offsets.try_emplace(off, static_cast<int>(offsets.size())).first;
                expected.push_back(it->second);
            }
        EXPECT_EQ(offsets.size(), static_cast<size_t>(window * window));
        EXPECT_EQ(tiny_vit_attention_bias_index(window), expected) << "window " << window;
    }
}

TEST(TinyVitEncoder, LoadsSyntheticWeightsAndInfersTheirConfig) {
    const TinyVitEncoder enc = TinyVitEncoder::from_tensors(random_weights(tiny_config()));
    EXPECT_EQ(enc.config(), tiny_config());
}

TEST(TinyVitEncoder, NeedsNeitherTheClassifierNorTheBatchCounters) {
    std::map<std::string, Tensor> w = random_weights(tiny_config());
    std::erase_if(w, [](const auto& kv) {
        return ends_with(kv.first, "num_batches_tracked") ||
               kv.first.find("head") != std::string::npos;
    });
    const TinyVitEncoder enc = TinyVitEncoder::from_tensors(std::move(w));
    EXPECT_EQ(enc.config().num_classes, 0);
}

TEST(TinyVitEncoder, NamesAMissingTensor) {
    std::map<std::string, Tensor> w = random_weights(tiny_config());
    w.erase("image_encoder.layers.2.blocks.0.local_conv.bn.running_mean");
    try {
        TinyVitEncoder::from_tensors(std::move(w));
        FAIL() << "expected FormatError";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("layers.2.blocks.0.local_conv.bn.running_mean"),
                  std::string::npos)
            << e.what();
    }
}

TEST(TinyVitEncoder, NamesAMisShapedTensor) {
    std::map<std::string, Tensor> w = random_weights(tiny_config());
    w["image_encoder.layers.0.downsample.conv3.c.weight"] = Tensor::zeros({16, 8, 1, 1});
    try {
        TinyVitEncoder::from_tensors(std::move(w));
        FAIL() << "expected FormatError";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("layers.0.downsample.conv3.c.weight"),
                  std::string::npos)
            << e.what();
    }
}

TEST(TinyVitEncoder, EncodesToTheNeckWidthAndTracesEveryLayer) {
    const TinyVitEncoder enc = TinyVitEncoder::from_tensors(random_weights(tiny_config()));
    std::vector<std::pair<std::string, Shape>> traced;
    Trace trace{[&](const std::string& name, const Tensor& t) {
        traced.push_back({name, t.shape()});
    }};
    const Tensor out = enc.encode(random_image(3), trace);
    // 1024 -> 256 (patch embedding) -> 128 -> 64 -> 32 (patch merging, stride 2 at these widths).
    EXPECT_EQ(traced, (std::vector<std::pair<std::string, Shape>>{{"enc.layer0", {128 * 128, 16}},
                                                                  {"enc.layer1", {64 * 64, 24}},
                                                                  {"enc.layer2", {32 * 32, 32}},
                                                                  {"enc.layer3", {32 * 32, 32}}}));
    EXPECT_EQ(out.shape(), (Shape{16, 32, 32}));
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
    EXPECT_THROW(enc.encode(Tensor::zeros({3, 512, 512})), std::invalid_argument);
}

// Folding gamma, beta, mean and var (with BatchNorm's eps) into the convolution must give what
// a plain convolution computes with the same per-channel affine already applied to its weights.
TEST(TinyVitEncoder, FoldsBatchNormExactly) {
    const std::map<std::string, Tensor> w = random_weights(tiny_config());
    std::map<std::string, Tensor> prefolded = w;
    const float eps = 1e-5f;
    for (auto& [name, t] : prefolded) {
        if (!ends_with(name, ".c.weight")) continue;
        const std::string bn = name.substr(0, name.size() - 8) + "bn.";
        Tensor& gamma = prefolded.at(bn + "weight");
        Tensor& beta = prefolded.at(bn + "bias");
        Tensor& mean = prefolded.at(bn + "running_mean");
        Tensor& var = prefolded.at(bn + "running_var");
        const int64_t per_out = t.numel() / t.dim(0);
        for (int64_t o = 0; o < t.dim(0); ++o) {
            const float s = gamma[o] / std::sqrt(var[o] + eps);
            for (int64_t i = 0; i < per_out; ++i) t[o * per_out + i] *= s;
            beta[o] -= mean[o] * s;
            gamma[o] = 1.0f;
            mean[o] = 0.0f;
            var[o] = 1.0f - eps;  // an identity BatchNorm
        }
    }
    const Tensor image = random_image(4);
    const Tensor a = TinyVitEncoder::from_tensors(w).encode(image);
    const Tensor b = TinyVitEncoder::from_tensors(std::move(prefolded)).encode(image);
    ASSERT_EQ(a.shape(), b.shape());
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a[i], b[i], 1e-3f) << i;
}

TEST(TinyVitEncoder, ResultDoesNotDependOnTheThreadCount) {
    const TinyVitEncoder enc = TinyVitEncoder::from_tensors(random_weights(tiny_config()));
    const Tensor image = random_image(5);
    const int threads = num_threads();
    set_num_threads(1);
    const Tensor one = enc.encode(image);
    set_num_threads(2);
    const Tensor two = enc.encode(image);
    set_num_threads(threads);
    ASSERT_EQ(one.numel(), two.numel());
    for (int64_t i = 0; i < one.numel(); ++i) ASSERT_NEAR(one[i], two[i], 1e-4f) << i;
}

// The channels-last depthwise kernel TinyViT runs on tokens against the channels-first grouped
// convolution, with a stride and padding as in patch merging, with and without its bias and the
// GELU that follows, over channel counts below and across the 16-lane steps, and a width whose
// inside pixels span several of the kernel's 32-pixel tiles.
TEST(DepthwiseConv2dHwc, MatchesGroupedConv2d) {
    std::mt19937 rng(11);
    for (auto [C, W] : {std::pair<int64_t, int64_t>{5, 7}, {37, 7}, {21, 70}}) {
        const Tensor x = random_tensor({C, 9, W}, rng, -1.0f, 1.0f);  // [C, H, W]
        const Tensor weight = random_tensor({C, 1, 3, 3}, rng, -1.0f, 1.0f);
        const Tensor bias = random_tensor({C}, rng, -1.0f, 1.0f);
        for (int stride : {1, 2})
            for (bool with_bias : {true, false})
                for (bool then_gelu : {false, true}) {
                    SCOPED_TRACE("C " + std::to_string(C) + " W " + std::to_string(W) + " stride " +
                                 std::to_string(stride) + (with_bias ? " bias" : "") +
                                 (then_gelu ? " gelu" : ""));
                    const Tensor b = with_bias ? bias : Tensor();
                    Tensor expected = conv2d(x, weight, b, stride, 1, static_cast<int>(C));
                    if (then_gelu) gelu(expected);
                    const Tensor actual = hwc_to_chw(
                        depthwise_conv2d_hwc(chw_to_hwc(x), weight, b, stride, 1, then_gelu));
                    ASSERT_EQ(actual.shape(), expected.shape());
                    for (int64_t i = 0; i < expected.numel(); ++i)
                        EXPECT_NEAR(actual[i], expected[i], 1e-5f) << i;
                }
    }
    const Tensor x = random_tensor({5, 9, 7}, rng, -1.0f, 1.0f);
    EXPECT_THROW(depthwise_conv2d_hwc(chw_to_hwc(x), Tensor::zeros({4, 1, 3, 3}),
                                      random_tensor({5}, rng, -1.0f, 1.0f), 1, 1),
                 std::invalid_argument);
}

// The channels-last convolutions (from channels-last and from planar input) against the
// channels-first one, with the shapes of TinyViT's and Hiera's patch embeddings and of a neck:
// the direct kernel (output channels below, at and across its 16- and 64-channel steps; 7x7
// windows that leave the image on both sides) and the im2col path of large weights, with and
// without a bias and the GELU that follows, over several bands of rows.
TEST(Conv2dHwc, MatchesConv2d) {
    struct Case {
        int64_t C, O, k, H, W;
        int stride, padding;
    };
    const Case cases[] = {{6, 10, 3, 75, 33, 1, 1}, {6, 10, 3, 75, 33, 2, 1},
                          {3, 37, 7, 41, 30, 4, 3}, {3, 112, 7, 16, 16, 4, 3},
                          {3, 32, 3, 23, 40, 2, 1}, {5, 64, 3, 6, 2, 1, 1},
                          {96, 80, 3, 20, 13, 1, 1}};  // 69,120 weights: im2col + GEMM
    std::mt19937 rng(13);
    for (const Case& c : cases) {
        const Tensor x = random_tensor({c.C, c.H, c.W}, rng, -1.0f, 1.0f);
        const Tensor weight = random_tensor({c.O, c.C, c.k, c.k}, rng, -1.0f, 1.0f);
        const Tensor bias = random_tensor({c.O}, rng, -1.0f, 1.0f);
        for (bool with_bias : {true, false})
            for (bool then_gelu : {false, true}) {
                SCOPED_TRACE("C " + std::to_string(c.C) + " O " + std::to_string(c.O) + " k " +
                             std::to_string(c.k) + " stride " + std::to_string(c.stride) +
                             (with_bias ? " bias" : "") + (then_gelu ? " gelu" : ""));
                const Tensor b = with_bias ? bias : Tensor();
                Tensor expected = conv2d(x, weight, b, c.stride, c.padding);
                if (then_gelu) gelu(expected);
                const Tensor from_hwc = hwc_to_chw(
                    conv2d_hwc(chw_to_hwc(x), weight, b, c.stride, c.padding, then_gelu));
                const Tensor from_planar =
                    hwc_to_chw(conv2d_planar_to_hwc(x, weight, b, c.stride, c.padding, then_gelu));
                ASSERT_EQ(from_hwc.shape(), expected.shape());
                ASSERT_EQ(from_planar.shape(), expected.shape());
                const float tolerance = 1e-5f * static_cast<float>(c.C * c.k * c.k);
                for (int64_t i = 0; i < expected.numel(); ++i) {
                    ASSERT_NEAR(from_hwc[i], expected[i], tolerance) << i;
                    ASSERT_NEAR(from_planar[i], expected[i], tolerance) << i;
                }
            }
    }
    const Tensor x = random_tensor({6, 75, 33}, rng, -1.0f, 1.0f);
    EXPECT_THROW(conv2d_hwc(chw_to_hwc(x), Tensor::zeros({10, 5, 3, 3}), Tensor(), 1, 1),
                 std::invalid_argument);
    EXPECT_THROW(conv2d_planar_to_hwc(x, Tensor::zeros({10, 5, 3, 3}), Tensor(), 1, 1),
                 std::invalid_argument);
}

}  // namespace
}  // namespace splitseg
