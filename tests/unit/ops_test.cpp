// The element-wise kernels of ops.h against plain references in double.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "engine/ops.h"

namespace splitseg {
namespace {

// softmax_numerators leaves exp(x - max) per row (in place, or rounded to bf16) and 1 / sum;
// numerators under e^-60 are 0 (they would turn denormal downstream). Row lengths around the
// 16-lane steps and the sizes the encoders use; scores spread wide enough to reach that floor.
TEST(Softmax, NumeratorsMatchExpInEveryRowLength) {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 12.0f);
    for (int64_t cols : {1, 5, 15, 16, 17, 31, 196, 4096}) {
        SCOPED_TRACE(cols);
        const int64_t rows = 3;
        std::vector<float> x(rows * cols);
        for (float& v : x) v = normal(rng);
        std::vector<float> in_place = x, inv_sum(rows), inv_sum_bf16(rows);
        std::vector<uint16_t> rounded(rows * cols);
        std::vector<float> scores = x;
        softmax_numerators(in_place.data(), rows, cols, inv_sum.data());
        softmax_numerators(scores.data(), rows, cols, inv_sum_bf16.data(), rounded.data());
        for (int64_t r = 0; r < rows; ++r) {
            const float* row = x.data() + r * cols;
            const double mx = *std::max_element(row, row + cols);
            double sum = 0;
            for (int64_t c = 0; c < cols; ++c) {
                const double want = row[c] - mx < -60.0 ? 0.0 : std::exp(row[c] - mx);
                sum += want;
                EXPECT_NEAR(in_place[r * cols + c], want, 2e-6 * want + 1e-30) << "column " << c;
                EXPECT_NEAR(bf16_to_f32(rounded[r * cols + c]), want, 4e-3 * want + 1e-30)
                    << "column " << c;
            }
            EXPECT_NEAR(inv_sum[r], 1.0 / sum, 2e-6 / sum);
            EXPECT_NEAR(inv_sum_bf16[r], 1.0 / sum, 2e-6 / sum);
        }
    }
}

// gelu and add_gelu against 0.5 x (1 + erf(x / sqrt 2)) in double, over lengths around the
// 16-lane steps and values from deep in the left tail to far right.
TEST(Gelu, MatchesErfGeluInEveryLength) {
    for (int64_t n : {1, 15, 16, 17, 100, 70000}) {
        SCOPED_TRACE(n);
        Tensor x({n});
        std::vector<float> add(n);
        for (int64_t i = 0; i < n; ++i) {
            x[i] = -12.0f +
                   24.0f * static_cast<float>(i) / static_cast<float>(std::max<int64_t>(n - 1, 1));
            add[i] = 0.001f * static_cast<float>(i % 7);
        }
        Tensor y = x, z = x;
        gelu(y);
        add_gelu(z.data(), n, 0.25f, add.data());
        for (int64_t i = 0; i < n; ++i) {
            auto ref = [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); };
            EXPECT_NEAR(y[i], ref(x[i]), 2e-6 * std::max(1.0, std::fabs(static_cast<double>(x[i]))))
                << "value " << x[i];
            const double shifted = static_cast<double>(x[i]) + 0.25 + add[i];
            EXPECT_NEAR(z[i], ref(shifted), 2e-6 * std::max(1.0, std::fabs(shifted)))
                << "value " << shifted;
        }
    }
}

// layer_norm_channels hands out each pixel's mean (of x + add_first) and 1 / std: the decoder's
// folded upscaling convolution rescales with them.
TEST(LayerNormChannels, ReportsThePixelStatistics) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(3.0f, 2.0f);
    const int64_t C = 24, HW = 1500;  // two pixel blocks, the second partial
    Tensor x({C, HW}), weight({C}), bias({C}), add({C});
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 0.5f + 0.1f * c;
        bias[c] = 0.01f * c;
        add[c] = -0.2f * c;
    }
    const Tensor original = x;
    std::vector<float> mean(HW), inv_std(HW);
    layer_norm_channels(x, weight, bias, 1e-6f,
                        {.add_first = add.data(), .mean = mean.data(), .inv_std = inv_std.data()});
    for (int64_t i = 0; i < HW; ++i) {
        double sum = 0, sum_sq = 0;
        for (int64_t c = 0; c < C; ++c) sum += original[c * HW + i] + add[c];
        const double m = sum / C;
        for (int64_t c = 0; c < C; ++c) {
            const double d = original[c * HW + i] + add[c] - m;
            sum_sq += d * d;
        }
        const double s = 1.0 / std::sqrt(sum_sq / C + 1e-6);
        EXPECT_NEAR(mean[i], m, 1e-4 * (1 + std::fabs(m))) << "pixel " << i;
        EXPECT_NEAR(inv_std[i], s, 1e-4 * s) << "pixel " << i;
        const double want0 = (original[i] + add[0] - m) * s * weight[0] + bias[0];
        EXPECT_NEAR(x[i], want0, 1e-4) << "pixel " << i;
    }
}

}  // namespace
}  // namespace splitseg
