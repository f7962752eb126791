// Preprocessing and postprocessing: geometry, the two antialiased resizes (PIL fixed point on
// uint8, PyTorch float), prompt coordinates and the logits upscale, checked on cases small enough
// to derive by hand from the algorithms (see preprocess.h).
#include "runtime/preprocess.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "engine/ops.h"

namespace splitseg {
namespace {

// Appends bytes one by one (GCC 12's -O3 warns wrongly on vector::insert of a short list).
void append(std::vector<uint8_t>& v, std::initializer_list<uint8_t> bytes) {
    for (uint8_t b : bytes) v.push_back(b);
}

Tensor random_tensor(Shape shape, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
    Tensor t(std::move(shape));
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = dist(rng);
    return t;
}

Image solid_image(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    Image im{w, h, {}};
    for (int i = 0; i < w * h; ++i) append(im.rgb, {r, g, b});
    return im;
}

// One-row image whose red channel is `red` (green and blue zero).
Image red_row(const std::vector<uint8_t>& red) {
    Image im{static_cast<int>(red.size()), 1, {}};
    for (uint8_t v : red) append(im.rgb, {v, 0, 0});
    return im;
}

std::vector<uint8_t> red_of(const Image& im) {
    std::vector<uint8_t> r;
    for (size_t i = 0; i < im.rgb.size(); i += 3) r.push_back(im.rgb[i]);
    return r;
}

TEST(Geometry, LongestSideRoundsLikeGetPreprocessShape) {
    ImageGeometry g = make_geometry(640, 480, ResizeMode::LongestSide);
    EXPECT_EQ(g.resized_w, 1024);
    EXPECT_EQ(g.resized_h, 768);
    g = make_geometry(1500, 1000, ResizeMode::LongestSide);
    EXPECT_EQ(g.resized_w, 1024);
    EXPECT_EQ(g.resized_h, 683);  // 682.67 rounds up
    g = make_geometry(1000, 333, ResizeMode::LongestSide);
    EXPECT_EQ(g.resized_h, 341);  // 340.992
    g = make_geometry(3000, 1, ResizeMode::LongestSide);
    EXPECT_EQ(g.resized_h, 1);  // int(0.34 + 0.5) = 0 would be an empty image
    EXPECT_EQ(g.input_size, 1024);
}

TEST(Geometry, SquareKeepsNoAspect) {
    const ImageGeometry g = make_geometry(640, 480, ResizeMode::Square);
    EXPECT_EQ(g.resized_w, 1024);
    EXPECT_EQ(g.resized_h, 1024);
    EXPECT_THROW(make_geometry(0, 10, ResizeMode::Square), std::invalid_argument);
}

// --- PyTorch antialiased bilinear ---------------------------------------------------------------

TEST(AntialiasResize, ShrinkFourToTwoByHand) {
    // scale 2, support 2. Output 0: center 1, inputs 0..2 with weights tri((x - 0.5) / 2)
    // = 0.75, 0.75, 0.25 -> 3/7, 3/7, 1/7. Output 1: center 3, inputs 1..3 -> 1/7, 3/7, 3/7.
    const float row[4] = {1, 2, 4, 8};
    const Tensor y = interpolate_bilinear_antialias(Tensor::from({1, 1, 4}, row), 1, 2);
    EXPECT_NEAR(y[0], (3 * 1 + 3 * 2 + 1 * 4) / 7.0f, 1e-6f);
    EXPECT_NEAR(y[1], (1 * 2 + 3 * 4 + 3 * 8) / 7.0f, 1e-6f);
    // Plain bilinear would average pairs instead: 1.5 and 6.
    const Tensor plain = interpolate_bilinear(Tensor::from({1, 1, 4}, row), 1, 2);
    EXPECT_FLOAT_EQ(plain[0], 1.5f);
}

TEST(AntialiasResize, ShrinkThreeToTwoByHand) {
    // scale 1.5, support 1.5. Output 0: center 0.75, inputs 0..1, tri(-1/6) = 5/6, tri(1/2) = 1/2
    // -> 5/8, 3/8. Output 1: center 2.25, inputs 1..2 -> 3/8, 5/8.
    const float col[3] = {8, 16, 32};
    const Tensor y = interpolate_bilinear_antialias(Tensor::from({1, 3, 1}, col), 2, 1);
    EXPECT_NEAR(y[0], 8 * 5 / 8.0f + 16 * 3 / 8.0f, 1e-5f);
    EXPECT_NEAR(y[1], 16 * 3 / 8.0f + 32 * 5 / 8.0f, 1e-5f);
}

TEST(AntialiasResize, SeparableTwoDimensionalShrink) {
    // 4x4 -> 2x2 is A x A^T with A = [[3,3,1,0],[0,1,3,3]] / 7 per channel.
    const Tensor x = random_tensor({2, 4, 4}, 1);
    const Tensor y = interpolate_bilinear_antialias(x, 2, 2);
    const float A[2][4] = {{3 / 7.f, 3 / 7.f, 1 / 7.f, 0}, {0, 1 / 7.f, 3 / 7.f, 3 / 7.f}};
    for (int c = 0; c < 2; ++c)
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
                float expect = 0;
                for (int r = 0; r < 4; ++r)
                    for (int s = 0; s < 4; ++s)
                        expect += A[i][r] * A[j][s] * x[(c * 4 + r) * 4 + s];
                EXPECT_NEAR(y[(c * 2 + i) * 2 + j], expect, 1e-5f);
            }
}

TEST(AntialiasResize, EnlargingEqualsPlainBilinear) {
    // Support 1 when enlarging: the triangle is the bilinear kernel, renormalised at the borders
    // exactly where plain bilinear clamps.
    const Tensor x = random_tensor({3, 5, 7}, 2);
    const Tensor aa = interpolate_bilinear_antialias(x, 12, 16);
    const Tensor plain = interpolate_bilinear(x, 12, 16);
    ASSERT_EQ(aa.shape(), plain.shape());
    for (int64_t i = 0; i < aa.numel(); ++i) EXPECT_NEAR(aa[i], plain[i], 1e-5f) << i;
}

TEST(AntialiasResize, SameSizeIsIdentityAndBadShapesThrow) {
    const Tensor x = random_tensor({1, 3, 4}, 3);
    const Tensor y = interpolate_bilinear_antialias(x, 3, 4);
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y[i], x[i]);
    EXPECT_THROW(interpolate_bilinear_antialias(Tensor({3, 4}), 2, 2), std::invalid_argument);
    EXPECT_THROW(interpolate_bilinear_antialias(x, 0, 2), std::invalid_argument);
}

// --- PIL bilinear on uint8 ----------------------------------------------------------------------

TEST(PilResize, ShrinkByHandInFixedPoint) {
    // Weights 3/7, 3/7, 1/7 as in ShrinkFourToTwoByHand, in 22-bit fixed point:
    // out0 = 50 exactly, out1 = (70 + 3 * 140 + 3 * 210) / 7 = 160.
    const Image y = resize_pil_bilinear(red_row({0, 70, 140, 210}), 2, 1);
    EXPECT_EQ(red_of(y), (std::vector<uint8_t>{50, 160}));
}

TEST(PilResize, EnlargeTruncatesAfterAddingHalf) {
    // 2 -> 4: outputs at source 0 (clamped), 0.25, 0.75, 1 (clamped). 100 * 0.25 = 25 with the
    // rounding half added gives 25.5, truncated to 25.
    const Image y = resize_pil_bilinear(red_row({0, 100}), 4, 1);
    EXPECT_EQ(red_of(y), (std::vector<uint8_t>{0, 25, 75, 100}));
}

TEST(PilResize, VerticalPassMatchesHorizontal) {
    Image col{1, 4, {0, 0, 0, 70, 0, 0, 140, 0, 0, 210, 0, 0}};
    const Image y = resize_pil_bilinear(col, 1, 2);
    EXPECT_EQ(y.width, 1);
    EXPECT_EQ(y.height, 2);
    EXPECT_EQ(red_of(y), (std::vector<uint8_t>{50, 160}));
}

TEST(PilResize, SolidColoursSurviveAnyScale) {
    // The fixed-point weights of one output sum to 2^22 within rounding; clipping keeps 255.
    for (auto [w, h] : {std::pair{7, 5}, {31, 17}, {3, 2}, {64, 48}}) {
        const Image y = resize_pil_bilinear(solid_image(23, 13, 255, 0, 128), w, h);
        ASSERT_EQ(y.rgb.size(), static_cast<size_t>(w * h * 3));
        for (size_t i = 0; i < y.rgb.size(); i += 3) {
            EXPECT_EQ(y.rgb[i], 255);
            EXPECT_EQ(y.rgb[i + 1], 0);
            EXPECT_EQ(y.rgb[i + 2], 128);
        }
    }
    EXPECT_THROW(resize_pil_bilinear(solid_image(2, 2, 0, 0, 0), 0, 3), std::invalid_argument);
}

// --- model inputs -------------------------------------------------------------------------------

TEST(PreprocessSam, NormalisesThenPadsWithZeros) {
    const Image im = solid_image(64, 32, 200, 100, 50);
    const Preprocessed p = preprocess_sam(im, 128);
    EXPECT_EQ(p.input.shape(), (Shape{3, 128, 128}));
    EXPECT_EQ(p.geom.resized_w, 128);
    EXPECT_EQ(p.geom.resized_h, 64);
    const float expect[3] = {(200 - 123.675f) / 58.395f, (100 - 116.28f) / 57.12f,
                             (50 - 103.53f) / 57.375f};
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 128; ++y)
            for (int x = 0; x < 128; ++x) {
                const float v = p.input[(c * 128 + y) * 128 + x];
                if (y < 64)
                    ASSERT_FLOAT_EQ(v, expect[c]) << c << " " << y << " " << x;
                else
                    ASSERT_EQ(v, 0.0f) << c << " " << y << " " << x;
            }
}

TEST(PreprocessSam, ImageAlreadyAtSizeIsNotResampled) {
    Image im = solid_image(8, 4, 0, 0, 0);
    for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>(i * 7);
    const Preprocessed p = preprocess_sam(im, 8);
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 8; ++x)
            EXPECT_FLOAT_EQ(p.input[(1 * 8 + y) * 8 + x],
                            (im.rgb[(y * 8 + x) * 3 + 1] - 116.28f) / 57.12f);
}

TEST(PreprocessSam2, ScalesToUnitThenImageNetNormalises) {
    const Preprocessed p = preprocess_sam2(solid_image(40, 30, 255, 0, 51), 64);
    EXPECT_EQ(p.input.shape(), (Shape{3, 64, 64}));
    EXPECT_EQ(p.geom.mode, ResizeMode::Square);
    const float expect[3] = {(1.0f - 0.485f) / 0.229f, (0.0f - 0.456f) / 0.224f,
                             (0.2f - 0.406f) / 0.225f};
    for (int c = 0; c < 3; ++c)
        for (int i = 0; i < 64 * 64; ++i) ASSERT_NEAR(p.input[c * 4096 + i], expect[c], 1e-5f);
}

TEST(PreprocessSam2, ResizesTheUnitImageWithAntialias) {
    // 4x4 -> 2x2 of a gradient: the same weights as SeparableTwoDimensionalShrink.
    Image im{4, 4, {}};
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x) append(im.rgb, {uint8_t(x * 60), 0, 0});
    const Preprocessed p = preprocess_sam2(im, 2);
    const float left = (3 * 0 + 3 * 60 + 120) / 7.0f / 255.0f;
    const float right = (60 + 3 * 120 + 3 * 180) / 7.0f / 255.0f;
    EXPECT_NEAR(p.input[0], (left - 0.485f) / 0.229f, 1e-5f);
    EXPECT_NEAR(p.input[1], (right - 0.485f) / 0.229f, 1e-5f);
    EXPECT_NEAR(p.input[2], (left - 0.485f) / 0.229f, 1e-5f);
}

TEST(Preprocess, RejectsInconsistentImages) {
    Image bad{4, 4, std::vector<uint8_t>(10)};
    EXPECT_THROW(preprocess_sam(bad), std::invalid_argument);
    EXPECT_THROW(preprocess_sam2(Image{}), std::invalid_argument);
}

// --- prompts in, masks out ----------------------------------------------------------------------

TEST(ModelFrame, BothModes) {
    const ImageGeometry sam = make_geometry(640, 480, ResizeMode::LongestSide);
    auto [x, y] = to_model_frame(sam, 320, 240);
    EXPECT_FLOAT_EQ(x, 512);
    EXPECT_FLOAT_EQ(y, 384);
    const ImageGeometry sam2 = make_geometry(640, 480, ResizeMode::Square);
    auto [x2, y2] = to_model_frame(sam2, 320, 240);
    EXPECT_FLOAT_EQ(x2, 512);
    EXPECT_FLOAT_EQ(y2, 512);
    const ImageGeometry wide = make_geometry(1500, 1000, ResizeMode::LongestSide);
    EXPECT_FLOAT_EQ(to_model_frame(wide, 0, 1000)[1], 683);
}

TEST(InterpolateBilinear, KeptCornerEqualsCropOfFullResize) {
    const Tensor x = random_tensor({2, 9, 11}, 4);
    const Tensor full = interpolate_bilinear(x, 40, 30);
    const Tensor kept = interpolate_bilinear(x, 40, 30, 25, 17);
    ASSERT_EQ(kept.shape(), (Shape{2, 25, 17}));
    for (int c = 0; c < 2; ++c)
        for (int y = 0; y < 25; ++y)
            for (int xx = 0; xx < 17; ++xx)
                ASSERT_EQ(kept[(c * 25 + y) * 17 + xx], full[(c * 40 + y) * 30 + xx]);
    EXPECT_THROW(interpolate_bilinear(x, 40, 30, 41, 1), std::invalid_argument);
}

TEST(InterpolateBilinear, MatchesTorchByHand) {
    // 2 -> 4 (align_corners=False): sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped).
    const float v[2] = {0, 8};
    const Tensor y = interpolate_bilinear(Tensor::from({1, 1, 2}, v), 1, 4);
    EXPECT_FLOAT_EQ(y[0], 0);
    EXPECT_FLOAT_EQ(y[1], 2);
    EXPECT_FLOAT_EQ(y[2], 6);
    EXPECT_FLOAT_EQ(y[3], 8);
}

// Along a row, against PyTorch's taps (source coordinates in float, as its kernel computes them)
// with the sum in double, for upscalings whose 16 outputs read a few inputs (the vector path: 4x
// as the masks', 3.125x, 14.3x, 5.3x), downscalings by up to 2 (the same path over two loads:
// 1.6x as a 640 x 480 image's masks, 1.98x) and by more (the scalar one, 3.3x), with widths that
// end in a partial vector.
TEST(InterpolateBilinear, RowsMatchTorchsFormulaAtEveryScale) {
    const std::pair<int64_t, int64_t> sizes[] = {{256, 1024}, {16, 50},    {7, 100},   {192, 1021},
                                                 {100, 30},   {1024, 640}, {1024, 517}};
    for (const auto& [in, out] : sizes) {
        SCOPED_TRACE(std::to_string(in) + " -> " + std::to_string(out));
        const Tensor x = random_tensor({1, 1, in}, 11);
        const Tensor y = interpolate_bilinear(x, 1, out);
        const float scale = static_cast<float>(in) / static_cast<float>(out);
        for (int64_t o = 0; o < out; ++o) {
            const float src = std::max((o + 0.5f) * scale - 0.5f, 0.0f);
            const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
            const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
            const double w1 = std::min(src - static_cast<float>(i0), 1.0f);
            const double want = (1.0 - w1) * x[i0] + w1 * x[i1];
            ASSERT_NEAR(y[o], want, 1e-6 * std::max(1.0, std::fabs(want))) << "output " << o;
        }
    }
}

TEST(UpscaleLogits, LongestSideIsResizeCropResize) {
    const Tensor low = random_tensor({3, 16, 16}, 5);
    ImageGeometry g = make_geometry(50, 30, ResizeMode::LongestSide, 64);  // resized 64 x 38
    ASSERT_EQ(g.resized_h, 38);
    const Tensor up = upscale_logits(low, g);
    ASSERT_EQ(up.shape(), (Shape{3, 30, 50}));
    const Tensor full = interpolate_bilinear(low, 64, 64);
    Tensor crop({3, 38, 64});
    for (int c = 0; c < 3; ++c)
        for (int i = 0; i < 38 * 64; ++i) crop[c * 38 * 64 + i] = full[c * 64 * 64 + i];
    const Tensor ref = interpolate_bilinear(crop, 30, 50);
    for (int64_t i = 0; i < up.numel(); ++i) ASSERT_EQ(up[i], ref[i]) << i;
}

TEST(UpscaleLogits, SquareGoesStraightToTheOriginalSize) {
    const Tensor low = random_tensor({1, 16, 16}, 6);
    const Tensor up = upscale_logits(low, make_geometry(21, 13, ResizeMode::Square, 64));
    const Tensor ref = interpolate_bilinear(low, 13, 21);
    ASSERT_EQ(up.shape(), ref.shape());
    for (int64_t i = 0; i < up.numel(); ++i) ASSERT_EQ(up[i], ref[i]);
    EXPECT_THROW(upscale_logits(Tensor({16, 16}), make_geometry(4, 4, ResizeMode::Square)),
                 std::invalid_argument);
}

// The masks path writes bytes in the last resize: it must equal thresholding the float logits,
// for every geometry (square; longest side cropped and resized; longest side at the input size).
TEST(UpscaleMasks, EqualTheThresholdedLogits) {
    const Tensor low = random_tensor({3, 16, 16}, 7);
    for (const ImageGeometry& g : {make_geometry(21, 13, ResizeMode::Square, 64),
                                   make_geometry(50, 30, ResizeMode::LongestSide, 64),
                                   make_geometry(64, 40, ResizeMode::LongestSide, 64),
                                   make_geometry(64, 64, ResizeMode::LongestSide, 64),
                                   make_geometry(200, 90, ResizeMode::LongestSide, 64)}) {
        SCOPED_TRACE(::testing::Message() << g.orig_w << "x" << g.orig_h);
        EXPECT_EQ(upscale_masks(low, g), masks_from_logits(upscale_logits(low, g)));
    }
}

// At full size the two resizes run in blocks of rows on several threads, and the first's rows are
// made as the second reads them: a 640 x 480 image (down by 1.6, the two-load vector path), a
// 300 x 200 one (down by 3.4, the scalar path), a 4032 x 3024 photo (up by 3.9), a 1000 x 1333
// portrait (the width cropped).
TEST(UpscaleMasks, EqualTheThresholdedLogitsAtFullSize) {
    const Tensor low = random_tensor({2, 256, 256}, 8);
    for (const auto& [w, h] : {std::pair{640, 480}, {300, 200}, {4032, 3024}, {1000, 1333}}) {
        SCOPED_TRACE(::testing::Message() << w << "x" << h);
        const ImageGeometry g = make_geometry(w, h, ResizeMode::LongestSide);
        const std::vector<uint8_t> masks = upscale_masks(low, g);
        ASSERT_EQ(masks, masks_from_logits(upscale_logits(low, g)));
        const int64_t on = std::count(masks.begin(), masks.end(), 1);
        EXPECT_GT(on, 0);  // random logits: both kinds of pixel
        EXPECT_LT(on, static_cast<int64_t>(masks.size()));
    }
}

TEST(MasksFromLogits, ThresholdsStrictly) {
    const float v[4] = {-1.0f, 0.0f, 0.5f, 3.0f};
    const Tensor t = Tensor::from({4}, v);
    EXPECT_EQ(masks_from_logits(t), (std::vector<uint8_t>{0, 0, 1, 1}));
    EXPECT_EQ(masks_from_logits(t, 1.0f, 255), (std::vector<uint8_t>{0, 0, 0, 255}));
}

}  // namespace
}  // namespace splitseg
