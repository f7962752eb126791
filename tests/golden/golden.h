// Shared helpers of the golden tests: where the vectors are, and the tolerances of
// ../shared/golden/README.md.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/tensor.h"
#include "engine/weights/weight_file.h"
#include "runtime/segmenter.h"

namespace splitseg::golden {

// SPLITSEG_GOLDEN_DIR, else ../shared/golden beside the source tree.
inline std::string golden_dir() {
    const char* env = std::getenv("SPLITSEG_GOLDEN_DIR");
    return env && *env ? env : SPLITSEG_DEFAULT_GOLDEN_DIR;
}

// Path of a model's golden folder, or "" when absent (the caller skips with the reason).
inline std::string model_dir(const std::string& model) {
    std::string dir = golden_dir() + "/" + model;
    return std::filesystem::exists(dir + "/vectors.safetensors") ? dir : "";
}

#define SPLITSEG_REQUIRE_GOLDEN(dir_var, model)                             \
    const std::string dir_var = ::splitseg::golden::model_dir(model);       \
    if (dir_var.empty())                                                    \
    GTEST_SKIP() << "golden vectors for " << (model) << " not found under " \
                 << ::splitseg::golden::golden_dir() << " (set SPLITSEG_GOLDEN_DIR)"

// A gtest parameter name from free text ("sam2.1-hiera-mini" -> "sam2_1_hiera_mini").
inline std::string test_name(std::string text) {
    for (char& c : text)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return text;
}

struct DiffStats {
    double max_abs = 0, mean_abs = 0, max_ref = 0;
};

inline DiffStats diff_stats(const float* actual, const float* ref, int64_t n) {
    DiffStats s;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = std::fabs(static_cast<double>(actual[i]) - ref[i]);
        if (!(d <= s.max_abs)) s.max_abs = d;  // NaN propagates as a failure
        sum += d;
        s.max_ref = std::max(s.max_ref, std::fabs(static_cast<double>(ref[i])));
    }
    s.mean_abs = n ? sum / n : 0;
    return s;
}

// Embeddings and features: max |diff| <= 1e-3 * max(1, max|ref|), mean <= 1e-4 * max(1, max|ref|).
inline void expect_features_close(const Tensor& actual, const Tensor& ref,
                                  const std::string& what) {
    ASSERT_EQ(actual.numel(), ref.numel())
        << what << ": " << shape_str(actual.shape()) << " vs " << shape_str(ref.shape());
    DiffStats s = diff_stats(actual.data(), ref.data(), ref.numel());
    const double scale = std::max(1.0, s.max_ref);
    EXPECT_LE(s.max_abs, 1e-3 * scale) << what << " max |diff|";
    EXPECT_LE(s.mean_abs, 1e-4 * scale) << what << " mean |diff|";
}

// Plain max |diff| bound (low_res_logits 5e-3, iou 1e-3).
inline void expect_max_diff(const Tensor& actual, const Tensor& ref, double tol,
                            const std::string& what) {
    ASSERT_EQ(actual.numel(), ref.numel())
        << what << ": " << shape_str(actual.shape()) << " vs " << shape_str(ref.shape());
    EXPECT_LE(diff_stats(actual.data(), ref.data(), ref.numel()).max_abs, tol) << what;
}

// IoU of two binary masks: 0/1 bytes, or floats (u8 golden data read as f32) above 0.5.
template <typename A, typename B>
double mask_iou(const A* a, const B* b, int64_t n) {
    int64_t inter = 0, uni = 0;
    for (int64_t i = 0; i < n; ++i) {
        const bool x = a[i] > 0.5f, y = b[i] > 0.5f;
        inter += x && y;
        uni += x || y;
    }
    return uni == 0 ? 1.0 : static_cast<double>(inter) / static_cast<double>(uni);
}

// The reference preprocessing of an already resized HxWx3 image (the golden ".resized"):
// normalise with SAM's pixel mean/std, pad bottom/right with zeros to size x size. Independent
// of the runtime's own, so that a bug in one does not hide in both.
inline Tensor normalise_and_pad(const Tensor& resized, int64_t size) {
    static const float mean[3] = {123.675f, 116.28f, 103.53f};
    static const float stddev[3] = {58.395f, 57.12f, 57.375f};
    const int64_t H = resized.dim(0), W = resized.dim(1);
    Tensor image = Tensor::zeros({3, size, size});
    for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x)
                image[(c * size + y) * size + x] =
                    (resized[(y * W + x) * 3 + c] - mean[c]) / stddev[c];
    return image;
}

// The prompts of one golden case ("img0.box" ...) in original pixels.
inline Prompts case_prompts(const WeightFile& v, const std::string& key, bool multimask) {
    Prompts p;
    p.multimask = multimask;
    if (v.has(key + ".point_coords")) {
        const Tensor xy = v.get(key + ".point_coords"), labels = v.get(key + ".point_labels");
        for (int64_t i = 0; i < labels.numel(); ++i)
            p.points.push_back({xy[2 * i], xy[2 * i + 1], static_cast<int>(labels[i])});
    }
    if (v.has(key + ".box")) {
        const Tensor b = v.get(key + ".box");
        p.box = std::array<float, 4>{b[0], b[1], b[2], b[3]};
    }
    if (v.has(key + ".mask_input")) p.mask_input = v.get(key + ".mask_input");
    return p;
}

}  // namespace splitseg::golden
