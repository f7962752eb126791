// The real checkpoints of ../shared/golden load completely, with the keys, shapes and values an
// independent reader (Python's zipfile + pickle) sees, and the vectors read as safetensors.
#include <gtest/gtest.h>

#include "golden.h"

namespace splitseg {
namespace {

struct Expected {
    size_t tensors;
    const char* key;
    Shape shape;
    float first, second;  // the key's first two values
};

void expect_checkpoint(const std::string& dir, const Expected& e) {
    const WeightFile w = WeightFile::open(dir + "/weights.pth");
    EXPECT_EQ(w.names().size(), e.tensors);
    const Tensor t = w.get(e.key, e.shape);
    EXPECT_EQ(t[0], e.first);
    EXPECT_EQ(t[1], e.second);
    EXPECT_EQ(w.content_hash().size(), 16u);
}

TEST(WeightsGolden, SamVitTinyCheckpoint) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    expect_checkpoint(dir, {202,
                            "image_encoder.blocks.0.attn.proj.weight",
                            {64, 64},
                            0.000991550274193287f,
                            -0.036296479403972626f});
    const WeightFile w = WeightFile::open(dir + "/weights.pth");
    EXPECT_EQ(w.ref("image_encoder.pos_embed").shape, (Shape{1, 64, 64, 64}));
}

TEST(WeightsGolden, MobileSamCheckpointWithIntegerBuffers) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    expect_checkpoint(dir, {439,
                            "image_encoder.patch_embed.seq.0.c.weight",
                            {32, 3, 3, 3},
                            -0.021500248461961746f,
                            -0.09556881338357925f});
    const WeightFile w = WeightFile::open(dir + "/weights.pth");
    const TensorRef& steps = w.ref("image_encoder.patch_embed.seq.0.bn.num_batches_tracked");
    EXPECT_EQ(steps.dtype, DType::I64);
    EXPECT_TRUE(steps.shape.empty());
}

TEST(WeightsGolden, Sam21CheckpointNestedUnderModel) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam2.1-hiera-mini");
    expect_checkpoint(
        dir, {228, "no_mem_embed", {1, 1, 256}, 0.013580146245658398f, -0.008299515582621098f});
}

TEST(WeightsGolden, VectorsReadAsSafetensors) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    const WeightFile v = WeightFile::open(dir + "/vectors.safetensors");
    EXPECT_EQ(v.names().size(), 60u);
    const TensorRef& resized = v.ref("img0.resized");
    EXPECT_EQ(resized.dtype, DType::U8);
    EXPECT_EQ(resized.shape, (Shape{768, 1024, 3}));
    EXPECT_EQ(v.get("img0.enc.embed").shape(), (Shape{1, 64, 64, 64}));
}

}  // namespace
}  // namespace splitseg
