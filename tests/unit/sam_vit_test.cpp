#include "engine/models/sam_vit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/ops.h"
#include "engine/weights/safetensors.h"

namespace splitseg {
namespace {

// A reduced encoder that still has everything: padded windows (10 = 3 * 4 - 2), a global block,
// several heads.
SamVitConfig tiny_config() {
    SamVitConfig cfg;
    cfg.embed_dim = 32;
    cfg.depth = 3;
    cfg.num_heads = 2;
    cfg.mlp_dim = 64;
    cfg.patch_size = 4;
    cfg.image_size = 40;
    cfg.window_size = 4;
    cfg.out_chans = 16;
    cfg.global_blocks = {1};
    return cfg;
}

std::map<std::string, Shape> shape_map(const SamVitConfig& cfg, const std::string& prefix) {
    std::map<std::string, Shape> shapes;
    for (const auto& [name, shape] : sam_vit_tensor_shapes(cfg, prefix)) shapes[name] = shape;
    return shapes;
}

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale = 0.2f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = u(rng);
    return t;
}

std::map<std::string, Tensor> random_weights(const SamVitConfig& cfg,
                                             const std::string& prefix = "image_encoder.") {
    std::mt19937 rng(7);
    std::map<std::string, Tensor> tensors;
    for (const auto& [name, shape] : sam_vit_tensor_shapes(cfg, prefix))
        tensors.emplace(name, random_tensor(shape, rng));
    return tensors;
}

// The same tensors as an in-memory safetensors file, with a decoder tensor beside them.
WeightFile as_weight_file(const std::map<std::string, Tensor>& tensors) {
    static const float decoder_weight[4] = {1, 2, 3, 4};
    std::vector<SafetensorsEntry> entries = {{"mask_decoder.iou_token.weight",
                                              DType::F32,
                                              {1, 4},
                                              decoder_weight,
                                              sizeof decoder_weight}};
    for (const auto& [name, t] : tensors)
        entries.push_back({name, DType::F32, t.shape(), t.data(), t.numel() * sizeof(float)});
    return WeightFile::from_bytes(serialize_safetensors(entries, {}), "synthetic.safetensors");
}

TEST(SamVitConfig, PresetsRoundTripThroughTheirTensorShapes) {
    for (const char* arch : {"vit_b", "vit_l", "vit_h"}) {
        const SamVitConfig preset = sam_vit_preset(arch);
        EXPECT_EQ(infer_sam_vit_config(shape_map(preset, "image_encoder."), "image_encoder."),
                  preset)
            << arch;
    }
}

TEST(SamVitConfig, PresetsMatchTheOfficialSizes) {
    const SamVitConfig b = sam_vit_preset("vit_b");
    EXPECT_EQ(b.embed_dim, 768);
    EXPECT_EQ(b.depth, 12);
    EXPECT_EQ(b.num_heads, 12);
    EXPECT_EQ(b.global_blocks, (std::vector<int>{2, 5, 8, 11}));
    EXPECT_EQ(sam_vit_preset("vit_l").global_blocks, (std::vector<int>{5, 11, 17, 23}));
    const SamVitConfig h = sam_vit_preset("vit_h");
    EXPECT_EQ(h.embed_dim, 1280);
    EXPECT_EQ(h.depth, 32);
    EXPECT_EQ(h.num_heads, 16);
    EXPECT_EQ(h.global_blocks, (std::vector<int>{7, 15, 23, 31}));
    EXPECT_THROW(sam_vit_preset("vit_x"), std::invalid_argument);
}

TEST(SamVitConfig, FullSizeShapesAreTheCheckpointShapes) {
    // ViT-B's published layout: a windowed and a global block, the patch embedding, the neck.
    std::map<std::string, Shape> shapes = shape_map(sam_vit_preset("vit_b"), "image_encoder.");
    EXPECT_EQ(shapes.size(), 3u + 12u * 14u + 6u);
    EXPECT_EQ(shapes["image_encoder.patch_embed.proj.weight"], (Shape{768, 3, 16, 16}));
    EXPECT_EQ(shapes["image_encoder.pos_embed"], (Shape{1, 64, 64, 768}));
    EXPECT_EQ(shapes["image_encoder.blocks.0.attn.rel_pos_h"], (Shape{27, 64}));
    EXPECT_EQ(shapes["image_encoder.blocks.2.attn.rel_pos_w"], (Shape{127, 64}));
    EXPECT_EQ(shapes["image_encoder.blocks.11.mlp.lin1.weight"], (Shape{3072, 768}));
    EXPECT_EQ(shapes["image_encoder.neck.2.weight"], (Shape{256, 256, 3, 3}));
}

TEST(SamVitConfig, InfersAReducedSizeUnderAnyPrefix) {
    const SamVitConfig cfg = tiny_config();
    EXPECT_EQ(infer_sam_vit_config(shape_map(cfg, "enc."), "enc."), cfg);
    EXPECT_THROW(infer_sam_vit_config(shape_map(cfg, "enc."), "image_encoder."), FormatError);
}

TEST(SamVitConfig, RejectsContradictoryShapes) {
    const std::string p = "image_encoder.";
    std::map<std::string, Shape> shapes = shape_map(tiny_config(), p);
    shapes[p + "blocks.2.attn.rel_pos_h"] = {9, 16};  // window 5 where block 0 has 4
    EXPECT_THROW(infer_sam_vit_config(shapes, p), FormatError);
    shapes[p + "blocks.2.attn.rel_pos_h"] = {7, 8};  // head dim 8 where block 0 has 16
    EXPECT_THROW(infer_sam_vit_config(shapes, p), FormatError);
    shapes[p + "blocks.2.attn.rel_pos_h"] = {8, 16};  // even length: no window fits
    EXPECT_THROW(infer_sam_vit_config(shapes, p), FormatError);
    shapes = shape_map(tiny_config(), p);
    shapes[p + "pos_embed"] = {1, 10, 9, 32};  // not square
    EXPECT_THROW(infer_sam_vit_config(shapes, p), FormatError);
}

TEST(SamVitEncoder, LoadsSyntheticWeightsAndInfersTheirConfig) {
    const SamVitEncoder enc = SamVitEncoder::from_tensors(random_weights(tiny_config()));
    EXPECT_EQ(enc.config(), tiny_config());
}

TEST(SamVitEncoder, LoadsFromAWeightFileAsFromTensors) {
    const std::map<std::string, Tensor> weights = random_weights(tiny_config());
    const WeightFile file = as_weight_file(weights);
    ASSERT_TRUE(SamVitEncoder::detect(file));
    const SamVitEncoder loaded = SamVitEncoder::load(file);
    EXPECT_EQ(loaded.config(), tiny_config());
    std::mt19937 rng(11);
    const Tensor image = random_tensor({3, 40, 40}, rng, 2.0f);
    const Tensor a = loaded.encode(image);
    const Tensor b = SamVitEncoder::from_tensors(weights).encode(image);
    ASSERT_EQ(a.numel(), b.numel());
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a[i], b[i]) << i;
}

TEST(SamVitEncoder, DetectsOnlyItsOwnLayout) {
    std::map<std::string, Tensor> tiny_vit;  // MobileSAM's TinyViT: a conv stem, no rel. positions
    tiny_vit.emplace("image_encoder.patch_embed.seq.0.c.weight", Tensor::zeros({32, 3, 3, 3}));
    EXPECT_FALSE(SamVitEncoder::detect(as_weight_file(tiny_vit)));
    EXPECT_THROW(SamVitEncoder::load(as_weight_file(tiny_vit)), FormatError);
    EXPECT_FALSE(SamVitEncoder::detect(as_weight_file(random_weights(tiny_config(), "enc."))));
    EXPECT_TRUE(
        SamVitEncoder::detect(as_weight_file(random_weights(tiny_config(), "enc.")), "enc."));
}

TEST(SamVitEncoder, NamesAMissingTensor) {
    std::map<std::string, Tensor> w = random_weights(tiny_config());
    w.erase("image_encoder.blocks.1.mlp.lin2.bias");
    try {
        SamVitEncoder::from_tensors(std::move(w));
        FAIL() << "expected FormatError";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("blocks.1.mlp.lin2.bias"), std::string::npos)
            << e.what();
    }
}

TEST(SamVitEncoder, NamesAMisShapedTensor) {
    std::map<std::string, Tensor> w = random_weights(tiny_config());
    w["image_encoder.blocks.0.attn.qkv.weight"] = Tensor::zeros({96, 16});
    try {
        SamVitEncoder::from_tensors(std::move(w));
        FAIL() << "expected FormatError";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("blocks.0.attn.qkv.weight"), std::string::npos)
            << e.what();
    }
}

TEST(SamVitEncoder, EncodesToTheNeckWidthAndTracesEveryBlock) {
    const SamVitConfig cfg = tiny_config();
    const SamVitEncoder enc = SamVitEncoder::from_tensors(random_weights(cfg));
    std::mt19937 rng(3);
    const Tensor image = random_tensor({3, 40, 40}, rng, 2.0f);
    std::vector<std::string> names;
    Trace trace{[&](const std::string& name, const Tensor& t) {
        names.push_back(name);
        EXPECT_EQ(t.shape(), (Shape{10, 10, 32})) << name;
    }};
    const Tensor out = enc.encode(image, trace);
    EXPECT_EQ(out.shape(), (Shape{16, 10, 10}));
    EXPECT_EQ(names,
              (std::vector<std::string>{"enc.embed", "enc.block0", "enc.block1", "enc.block2"}));
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
    EXPECT_THROW(enc.encode(Tensor::zeros({3, 32, 32})), std::invalid_argument);
}

TEST(SamVitEncoder, ResultDoesNotDependOnTheThreadCount) {
    const SamVitEncoder enc = SamVitEncoder::from_tensors(random_weights(tiny_config()));
    std::mt19937 rng(5);
    const Tensor image = random_tensor({3, 40, 40}, rng, 2.0f);
    const int threads = num_threads();
    set_num_threads(1);
    const Tensor one = enc.encode(image);
    set_num_threads(2);
    const Tensor two = enc.encode(image);
    set_num_threads(threads);
    ASSERT_EQ(one.numel(), two.numel());
    for (int64_t i = 0; i < one.numel(); ++i) EXPECT_NEAR(one[i], two[i], 1e-4f) << i;
}

}  // namespace
}  // namespace splitseg
