// The TinyViT encoder against MobileSAM's TinyViT (full size): the outputs of layers 1 and 3 for
// img0, the final embedding for both images.
#include <map>

#include "engine/models/tiny_vit.h"
#include "golden.h"

namespace splitseg {
namespace {

class TinyVitGolden : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        const std::string dir = golden::model_dir("mobilesam");
        if (dir.empty()) return;
        vectors_ = new WeightFile(WeightFile::open(dir + "/vectors.safetensors"));
        encoder_ = new TinyVitEncoder(TinyVitEncoder::load(WeightFile::open(dir + "/weights.pth")));
    }
    static void TearDownTestSuite() {
        delete encoder_;
        delete vectors_;
        encoder_ = nullptr;
        vectors_ = nullptr;
    }
    Tensor image(const std::string& name) const {
        return golden::normalise_and_pad(vectors_->get(name + ".resized"),
                                         encoder_->config().image_size);
    }
    static Tensor reference(const std::string& key) {
        Tensor t = vectors_->get(key);
        t.reshape(Shape(t.shape().begin() + 1, t.shape().end()));  // drop the batch dimension
        return t;
    }

    static WeightFile* vectors_;
    static TinyVitEncoder* encoder_;
};

WeightFile* TinyVitGolden::vectors_ = nullptr;
TinyVitEncoder* TinyVitGolden::encoder_ = nullptr;

TEST_F(TinyVitGolden, InfersTheMobileSamConfig) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    const TinyVitConfig& cfg = encoder_->config();
    EXPECT_EQ(cfg, tiny_vit_preset("mobilesam"));
    EXPECT_EQ(cfg.embed_dims, (std::vector<int>{64, 128, 160, 320}));
    EXPECT_EQ(cfg.depths, (std::vector<int>{2, 2, 6, 2}));
    EXPECT_EQ(cfg.num_heads, (std::vector<int>{0, 4, 5, 10}));
    EXPECT_EQ(cfg.window_sizes, (std::vector<int>{0, 7, 14, 7}));
    EXPECT_EQ(cfg.out_chans, 256);
}

TEST_F(TinyVitGolden, MatchesTheLayersAndEmbeddingOfImage0) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    std::map<std::string, Tensor> traced;
    Trace trace{[&](const std::string& name, const Tensor& t) { traced.emplace(name, t); }};
    const Tensor embedding = encoder_->encode(image("img0"), trace);
    ASSERT_EQ(traced.size(), 4u);
    for (const char* name : {"enc.layer1", "enc.layer3"}) {  // the layers the vectors hold
        SCOPED_TRACE(name);
        const Tensor ref = reference(std::string("img0.") + name);
        EXPECT_EQ(traced.at(name).shape(), ref.shape());
        golden::expect_features_close(traced.at(name), ref, name);
    }
    EXPECT_EQ(embedding.shape(), (Shape{256, 64, 64}));
    golden::expect_features_close(embedding, reference("img0.image_embedding"), "image_embedding");
}

TEST_F(TinyVitGolden, MatchesTheEmbeddingOfImage1) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    const Tensor embedding = encoder_->encode(image("img1"));
    EXPECT_EQ(embedding.shape(), (Shape{256, 64, 64}));
    golden::expect_features_close(embedding, reference("img1.image_embedding"), "image_embedding");
}

}  // namespace
}  // namespace splitseg
