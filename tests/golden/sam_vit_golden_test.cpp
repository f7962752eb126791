// The SAM ViT encoder against segment-anything's ImageEncoderViT (reduced width, same code paths):
// every block's output for img0, the final embedding for both images.
#include <map>
#include <memory>

#include "engine/models/sam_vit.h"
#include "golden.h"

namespace splitseg {
namespace {

// Loads the weights and vectors once for all tests of the suite (the encoder takes seconds).
class SamVitGolden : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        const std::string dir = golden::model_dir("sam-vit-tiny");
        if (dir.empty()) return;
        vectors_ = std::make_unique<WeightFile>(WeightFile::open(dir + "/vectors.safetensors"));
        encoder_ = std::make_unique<SamVitEncoder>(
            SamVitEncoder::load(WeightFile::open(dir + "/weights.pth")));
    }
    static void TearDownTestSuite() {
        encoder_.reset();
        vectors_.reset();
    }
    static Tensor image(const std::string& name) {
        return golden::normalise_and_pad(vectors_->get(name + ".resized"),
                                         encoder_->config().image_size);
    }
    static Tensor reference(const std::string& key) {
        Tensor t = vectors_->get(key);
        t.reshape(Shape(t.shape().begin() + 1, t.shape().end()));  // drop the batch dimension
        return t;
    }

    static inline std::unique_ptr<WeightFile> vectors_;
    static inline std::unique_ptr<SamVitEncoder> encoder_;
};

TEST(SamVitDetect, TellsTheSamViTCheckpointFromTheOtherFamilies) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    EXPECT_TRUE(SamVitEncoder::detect(WeightFile::open(dir + "/weights.pth")));
    for (const char* other : {"mobilesam", "sam2.1-hiera-mini"}) {
        const std::string other_dir = golden::model_dir(other);
        if (other_dir.empty()) continue;
        EXPECT_FALSE(SamVitEncoder::detect(WeightFile::open(other_dir + "/weights.pth"))) << other;
    }
}

TEST_F(SamVitGolden, InfersTheReferenceConfig) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    const SamVitConfig& cfg = encoder_->config();
    EXPECT_EQ(cfg.embed_dim, 64);
    EXPECT_EQ(cfg.depth, 4);
    EXPECT_EQ(cfg.num_heads, 4);
    EXPECT_EQ(cfg.global_blocks, (std::vector<int>{1, 3}));
    EXPECT_EQ(cfg.window_size, 14);
    EXPECT_EQ(cfg.image_size, 1024);
    EXPECT_EQ(cfg.patch_size, 16);
    EXPECT_EQ(cfg.out_chans, 256);
}

TEST_F(SamVitGolden, MatchesEveryIntermediateOfImage0) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    std::map<std::string, Tensor> traced;
    Trace trace{[&](const std::string& name, const Tensor& t) { traced.emplace(name, t); }};
    const Tensor embedding = encoder_->encode(image("img0"), trace);
    ASSERT_EQ(traced.size(), 5u);
    for (const auto& [name, t] : traced) {
        SCOPED_TRACE(name);
        const Tensor ref = reference("img0." + name);
        EXPECT_EQ(t.shape(), ref.shape());
        golden::expect_features_close(t, ref, name);
    }
    golden::expect_features_close(embedding, reference("img0.image_embedding"), "image_embedding");
}

TEST_F(SamVitGolden, MatchesTheEmbeddingOfImage1) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    const Tensor embedding = encoder_->encode(image("img1"));
    EXPECT_EQ(embedding.shape(), (Shape{256, 64, 64}));
    golden::expect_features_close(embedding, reference("img1.image_embedding"), "image_embedding");
}

}  // namespace
}  // namespace splitseg
