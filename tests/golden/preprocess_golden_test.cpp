// Preprocessing and mask postprocessing against the reference predictors' own outputs:
//  - SAM / MobileSAM `.resized` is what ResizeLongestSide.apply_image (PIL bilinear) produced;
//  - `masks_logits` / `masks` are the reference's upscale of `low_res_logits` to the original size
//    (SAM: via the 1024 frame and a crop; SAM 2.1: directly).
// SAM 2.1's resize has no golden tensor of its own: it is checked through the trunk features.
#include <algorithm>
#include <cmath>

#include "golden.h"
#include "runtime/image.h"
#include "runtime/preprocess.h"

namespace splitseg {
namespace {

void check_resize_against_reference(const std::string& dir) {
    const WeightFile vectors = WeightFile::open(dir + "/vectors.safetensors");
    for (const std::string image : {"img0", "img1"}) {
        const Image im = load_image(dir + "/" + image + ".png");
        const Preprocessed p = preprocess_sam(im);
        const ImageGeometry& g = p.geom;
        const Tensor ref = vectors.get(image + ".resized");  // [h, w, 3] uint8 as float
        ASSERT_EQ(ref.shape(), (Shape{g.resized_h, g.resized_w, 3})) << image;

        const Image resized = resize_pil_bilinear(im, g.resized_w, g.resized_h);
        int max_diff = 0;
        int64_t differing = 0;
        for (int64_t i = 0; i < ref.numel(); ++i) {
            const int d = std::abs(int(resized.rgb[i]) - int(ref[i]));
            max_diff = std::max(max_diff, d);
            differing += d != 0;
        }
        EXPECT_LE(max_diff, 1) << image << ": " << differing << " values differ";
        ::testing::Test::RecordProperty(image + "_values_differing", std::to_string(differing));

        // The model input: the reference's normalisation of .resized, zero-padded to 1024.
        static constexpr float kMean[3] = {123.675f, 116.28f, 103.53f};
        static constexpr float kStd[3] = {58.395f, 57.12f, 57.375f};
        const int S = g.input_size;
        ASSERT_EQ(p.input.shape(), (Shape{3, S, S}));
        double worst = 0;
        for (int c = 0; c < 3; ++c)
            for (int y = 0; y < S; ++y)
                for (int x = 0; x < S; ++x) {
                    const float expect =
                        y < g.resized_h && x < g.resized_w
                            ? (ref[(int64_t{y} * g.resized_w + x) * 3 + c] - kMean[c]) / kStd[c]
                            : 0.0f;
                    worst = std::max(
                        worst, double(std::fabs(p.input[(int64_t{c} * S + y) * S + x] - expect)));
                }
        EXPECT_LE(worst, 1.0 / 57.12 + 1e-5) << image << ": normalised input";  // <= 1 level
    }
}

TEST(PreprocessGolden, SamVitTinyResizeMatchesPil) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    check_resize_against_reference(dir);
}

TEST(PreprocessGolden, MobileSamResizeMatchesPil) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    check_resize_against_reference(dir);
}

// Every case with full-size outputs: logits (img0 point1 and box) and masks.
void check_upscale_against_reference(const std::string& dir, ResizeMode mode) {
    const WeightFile vectors = WeightFile::open(dir + "/vectors.safetensors");
    int checked = 0;
    for (const std::string key : {"img0.point1", "img0.points_fg_bg", "img0.box", "img0.box_points",
                                  "img0.refine", "img1.point1", "img1.refine"}) {
        if (!vectors.has(key + ".masks")) continue;
        const Tensor masks = vectors.get(key + ".masks");  // [C, H, W] of 0/1
        const ImageGeometry g =
            make_geometry(static_cast<int>(masks.dim(2)), static_cast<int>(masks.dim(1)), mode);
        const Tensor logits = upscale_logits(vectors.get(key + ".low_res_logits"), g);
        ASSERT_EQ(logits.shape(), masks.shape()) << key;
        if (vectors.has(key + ".masks_logits")) {
            const Tensor ref = vectors.get(key + ".masks_logits");
            const golden::DiffStats s = golden::diff_stats(logits.data(), ref.data(), ref.numel());
            EXPECT_LE(s.max_abs, 1e-3 * std::max(1.0, s.max_ref)) << key << " logits";
        }
        const std::vector<uint8_t> ours = masks_from_logits(logits);
        const int64_t plane = masks.dim(1) * masks.dim(2);
        for (int64_t c = 0; c < masks.dim(0); ++c) {
            std::vector<float> a(plane);
            for (int64_t i = 0; i < plane; ++i) a[i] = ours[c * plane + i];
            EXPECT_GE(golden::mask_iou(a.data(), masks.data() + c * plane, plane), 0.999)
                << key << " mask " << c;
        }
        ++checked;
    }
    EXPECT_GE(checked, 3) << "too few cases with full-size masks in " << dir;
}

TEST(PostprocessGolden, SamVitTinyUpscaleMatchesReference) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam-vit-tiny");
    check_upscale_against_reference(dir, ResizeMode::LongestSide);
}

TEST(PostprocessGolden, MobileSamUpscaleMatchesReference) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "mobilesam");
    check_upscale_against_reference(dir, ResizeMode::LongestSide);
}

TEST(PostprocessGolden, Sam2UpscaleMatchesReference) {
    SPLITSEG_REQUIRE_GOLDEN(dir, "sam2.1-hiera-mini");
    check_upscale_against_reference(dir, ResizeMode::Square);
}

}  // namespace
}  // namespace splitseg
