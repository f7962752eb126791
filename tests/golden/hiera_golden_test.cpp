// The SAM 2.1 image path against sam2's Hiera + FpnNeck and SAM2ImagePredictor.set_image (reduced
// trunk, full-size neck): the stage outputs of img0, its three features, img1's image_embed. The
// input comes from the runtime's preprocess_sam2 (no preprocessed input is shipped for SAM 2.1),
// so a mismatch already at trunk.stage1 points at the resize before it points at the trunk.
#include <map>

#include "engine/models/hiera.h"
#include "golden.h"
#include "runtime/image.h"
#include "runtime/preprocess.h"

namespace splitseg {
namespace {

constexpr const char* kModel = "sam2.1-hiera-mini";

class HieraGolden : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        const std::string dir = golden::model_dir(kModel);
        if (dir.empty()) return;
        dir_ = new std::string(dir);
        vectors_ = new WeightFile(WeightFile::open(dir + "/vectors.safetensors"));
        encoder_ = new HieraEncoder(HieraEncoder::load(WeightFile::open(dir + "/weights.pth")));
    }
    static void TearDownTestSuite() {
        delete encoder_;
        delete vectors_;
        delete dir_;
        encoder_ = nullptr;
        vectors_ = nullptr;
        dir_ = nullptr;
    }
    static Tensor input(const std::string& image) {
        return preprocess_sam2(load_image(*dir_ + "/" + image + ".png")).input;
    }
    static Tensor reference(const std::string& key) {
        Tensor t = vectors_->get(key);
        t.reshape(Shape(t.shape().begin() + 1, t.shape().end()));  // drop the batch dimension
        return t;
    }

    static std::string* dir_;
    static WeightFile* vectors_;
    static HieraEncoder* encoder_;
};

std::string* HieraGolden::dir_ = nullptr;
WeightFile* HieraGolden::vectors_ = nullptr;
HieraEncoder* HieraGolden::encoder_ = nullptr;

TEST_F(HieraGolden, InfersTheReferenceConfig) {
    SPLITSEG_REQUIRE_GOLDEN(dir, kModel);
    const HieraConfig& cfg = encoder_->config();
    EXPECT_EQ(cfg.embed_dim, 32);
    EXPECT_EQ(cfg.num_heads, 1);
    EXPECT_EQ(cfg.stages, (std::vector<int>{1, 1, 2, 1}));
    EXPECT_EQ(cfg.global_blocks, (std::vector<int>{3}));
    EXPECT_EQ(cfg.window_spec, (std::vector<int>{8, 4, 14, 7}));
    EXPECT_EQ(cfg.window_pos_embed_bkg[0], 7);
    EXPECT_EQ(cfg.window_pos_embed_bkg[1], 7);
    EXPECT_EQ(cfg.backbone_channels, (std::vector<int>{256, 128, 64, 32}));
    EXPECT_EQ(cfg.fpn_dim, 256);
}

TEST_F(HieraGolden, MatchesTheStagesAndFeaturesOfImage0) {
    SPLITSEG_REQUIRE_GOLDEN(dir, kModel);
    std::map<std::string, Tensor> traced;
    Trace trace{[&](const std::string& name, const Tensor& t) { traced.emplace(name, t); }};
    const Sam2Features f = encoder_->encode(input("img0"), trace);

    ASSERT_EQ(traced.size(), 4u);
    EXPECT_EQ(traced["trunk.stage0"].shape(), (Shape{32, 256, 256}));
    for (const char* stage : {"trunk.stage1", "trunk.stage2", "trunk.stage3"}) {
        SCOPED_TRACE(stage);
        const Tensor ref = reference(std::string("img0.") + stage);
        EXPECT_EQ(traced[stage].shape(), ref.shape());
        golden::expect_features_close(traced[stage], ref, stage);
    }
    EXPECT_EQ(f.image_embed.shape(), (Shape{256, 64, 64}));
    EXPECT_EQ(f.high_res_0.shape(), (Shape{32, 256, 256}));
    EXPECT_EQ(f.high_res_1.shape(), (Shape{64, 128, 128}));
    golden::expect_features_close(f.image_embed, reference("img0.image_embed"), "image_embed");
    golden::expect_features_close(f.high_res_0, reference("img0.high_res_feats_0"),
                                  "high_res_feats_0");
    golden::expect_features_close(f.high_res_1, reference("img0.high_res_feats_1"),
                                  "high_res_feats_1");
}

TEST_F(HieraGolden, MatchesTheImageEmbedOfImage1) {
    SPLITSEG_REQUIRE_GOLDEN(dir, kModel);
    const Sam2Features f = encoder_->encode(input("img1"));
    golden::expect_features_close(f.image_embed, reference("img1.image_embed"), "image_embed");
}

}  // namespace
}  // namespace splitseg
