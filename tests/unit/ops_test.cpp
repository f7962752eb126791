// The element-wise kernels of ops.h against plain references in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/dtype.h"
#include "engine/ops.h"

namespace splitseg {
namespace {

// softmax_numerators leaves exp(x - max) per row (in place, or rounded to bf16), 1 / sum and max;
// numerators under e^-60 are 0 (they would turn denormal downstream). The bf16 path works to
// bf16's precision: its 1 / sum within 1.2e-4. Row lengths around the
// 16-lane steps and the sizes the encoders use; scores spread wide enough to reach that floor.
TEST(Softmax, NumeratorsMatchExpInEveryRowLength) {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 12.0f);
    for (int64_t cols : {1, 5, 15, 16, 17, 31, 196, 4096}) {
        SCOPED_TRACE(cols);
        const int64_t rows = 3;
        std::vector<float> x(rows * cols);
        for (float& v : x) v = normal(rng);
        std::vector<float> in_place = x, inv_sum(rows), inv_sum_bf16(rows), max(rows, -INFINITY),
                           max_bf16(rows, -INFINITY);
        std::vector<uint16_t> rounded(rows * cols);
        std::vector<float> scores = x;
        softmax_numerators(in_place.data(), rows, cols, inv_sum.data(), nullptr, max.data());
        softmax_numerators(scores.data(), rows, cols, inv_sum_bf16.data(), rounded.data(),
                           max_bf16.data());
        for (int64_t r = 0; r < rows; ++r) {
            const float* row = x.data() + r * cols;
            const double mx = *std::max_element(row, row + cols);
            EXPECT_EQ(max[r], mx);
            EXPECT_EQ(max_bf16[r], mx);
            double sum = 0;
            for (int64_t c = 0; c < cols; ++c) {
                const double want = row[c] - mx < -60.0 ? 0.0 : std::exp(row[c] - mx);
                sum += want;
                EXPECT_NEAR(in_place[r * cols + c], want, 2e-6 * want + 1e-30) << "column " << c;
                EXPECT_NEAR(bf16_to_f32(rounded[r * cols + c]), want, 4e-3 * want + 1e-30)
                    << "column " << c;
            }
            EXPECT_NEAR(inv_sum[r], 1.0 / sum, 2e-6 / sum);
            EXPECT_NEAR(inv_sum_bf16[r], 1.0 / sum, 1.2e-4 / sum);
        }
    }
}

// With a floor for the max (flash attention's running max): a row whose max is below it gets
// numerators relative to the floor and reports the floor; a row above it is as without one; a row
// far below it underflows to zeros (inv_sum inf). f32 and bf16 out alike.
TEST(Softmax, NumeratorsAgainstAFloorForTheMax) {
    const int64_t cols = 40;
    std::vector<float> x(3 * cols);
    for (int64_t c = 0; c < cols; ++c) {
        x[c] = 0.1f * static_cast<float>(c % 7);             // max 0.6, floor 2
        x[cols + c] = 3.0f - 0.05f * static_cast<float>(c);  // max 3, floor 1
        x[2 * cols + c] = -100.0f;                           // floor 0
    }
    const std::vector<float> floor = {2.0f, 1.0f, 0.0f}, want_max = {2.0f, 3.0f, 0.0f};
    for (bool bf16 : {false, true}) {
        SCOPED_TRACE(bf16 ? "bf16" : "f32");
        std::vector<float> scores = x, max = floor, inv_sum(3);
        std::vector<uint16_t> rounded(x.size());
        softmax_numerators(scores.data(), 3, cols, inv_sum.data(), bf16 ? rounded.data() : nullptr,
                           max.data());
        for (int64_t r = 0; r < 3; ++r) {
            EXPECT_EQ(max[r], want_max[r]);
            double sum = 0;
            for (int64_t c = 0; c < cols; ++c) {
                const double want = r == 2 ? 0.0 : std::exp(x[r * cols + c] - want_max[r]);
                const float got = bf16 ? bf16_to_f32(rounded[r * cols + c]) : scores[r * cols + c];
                EXPECT_NEAR(got, want, 4e-3 * want + 1e-30) << "row " << r << " column " << c;
                sum += want;
            }
            if (r == 2)
                EXPECT_TRUE(std::isinf(inv_sum[r]));
            else
                EXPECT_NEAR(inv_sum[r], 1.0 / sum, 1.2e-4 / sum);
        }
    }
}

// softmax_numerators_grid against softmax_numerators of the row with its bias added: grid sides
// below, at and across the 16-lane steps (14: a ViT window).
TEST(Softmax, GridMatchesNumeratorsOfTheBiasedRow) {
    std::mt19937 rng(4);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (int64_t S : {3, 14, 16, 20, 64}) {
        SCOPED_TRACE(S);
        std::vector<float> row(S * S), by_row(S), by_col(S);
        for (float& v : row) v = normal(rng);
        for (float& v : by_row) v = normal(rng);
        for (float& v : by_col) v = normal(rng);
        std::vector<float> biased(S * S);
        for (int64_t y = 0; y < S; ++y)
            for (int64_t x = 0; x < S; ++x)
                biased[y * S + x] = row[y * S + x] + (by_row[y] + by_col[x]);
        const std::vector<float> before = row;
        std::vector<uint16_t> want(S * S), got(S * S);
        float want_inv = 0, got_inv = 0;
        softmax_numerators(biased.data(), 1, S * S, &want_inv, want.data());
        softmax_numerators_grid(row.data(), S, by_row.data(), by_col.data(), &got_inv, got.data());
        for (int64_t i = 0; i < S * S; ++i) {
            const float w = bf16_to_f32(want[i]);
            EXPECT_NEAR(bf16_to_f32(got[i]), w, 8e-3 * w + 1e-30) << i;
        }
        EXPECT_NEAR(got_inv, want_inv, 2.5e-4 * want_inv);
        EXPECT_EQ(row, before);
    }
}

// gelu and add_gelu against 0.5 x (1 + erf(x / sqrt 2)) in double, over lengths around the
// 16-lane steps and values from deep in the left tail to far right.
// softmax_columns over each column's few rows, in chunks of columns (a partial last one), rows
// further apart than the columns, and the copies it writes on the way: f32 rows at their own
// stride, rows rounded to bf16.
TEST(SoftmaxColumns, MatchesEachColumnsSoftmaxAndWritesItsCopies) {
    std::mt19937 rng(21);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    const int64_t rows = 7, cols = 300, x_ld = 305, ld = 310;
    std::vector<float> x(rows * x_ld);
    for (float& v : x) v = normal(rng);
    const std::vector<float> scores = x;
    std::vector<float> copy(rows * ld, -5.0f);
    std::vector<uint16_t> rounded(rows * cols);
    softmax_columns(x.data(), rows, cols,
                    {.f32 = copy.data(), .f32_ld = ld, .bf16 = rounded.data()}, x_ld);
    for (int64_t c = 0; c < cols; ++c) {
        double mx = scores[c], sum = 0.0;
        for (int64_t r = 1; r < rows; ++r) mx = std::max<double>(mx, scores[r * x_ld + c]);
        for (int64_t r = 0; r < rows; ++r) sum += std::exp(scores[r * x_ld + c] - mx);
        for (int64_t r = 0; r < rows; ++r) {
            const double want = std::exp(scores[r * x_ld + c] - mx) / sum;
            const float got = x[r * x_ld + c];
            ASSERT_NEAR(got, want, 2e-6) << r << ", " << c;
            ASSERT_EQ(copy[r * ld + c], got) << r << ", " << c;
            ASSERT_EQ(rounded[r * cols + c], f32_to_bf16(got)) << r << ", " << c;
        }
    }
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = cols; c < ld; ++c) ASSERT_EQ(copy[r * ld + c], -5.0f) << "past the row";
        for (int64_t c = cols; c < x_ld; ++c)
            ASSERT_EQ(x[r * x_ld + c], scores[r * x_ld + c]) << "past the row";
    }
}

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

// gelu_mix against the sums in double of w[m][c] * erf-GELU(x[c][i] + bias[c] or add[c][i]), with
// strided rows, lengths around the 16-lane steps (and the 32-pixel steps of two vectors) and 1 to
// 6 outputs (past the 4 a pass keeps).
TEST(GeluMix, MatchesTheWeightedSumsOfGelu) {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    const int64_t C = 5, ldx = 70, ld_add = 67, ld_out = 71;
    auto ref = [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); };
    for (int64_t n : {1, 15, 16, 17, 31, 32, 33, 48, 63}) {
        for (int64_t M : {1, 4, 6}) {
            for (bool with_add : {false, true}) {
                SCOPED_TRACE(std::to_string(n) + " pixels, " + std::to_string(M) + " outputs" +
                             (with_add ? ", add" : ", bias"));
                std::vector<float> x(C * ldx), add(C * ld_add), bias(C), w(M * C);
                for (std::vector<float>* v : {&x, &add, &bias, &w})
                    for (float& value : *v) value = normal(rng);
                std::vector<float> out(M * ld_out, -99.0f);
                gelu_mix(x.data(), ldx, C, n, bias.data(), with_add ? add.data() : nullptr, ld_add,
                         w.data(), M, out.data(), ld_out);
                for (int64_t m = 0; m < M; ++m)
                    for (int64_t i = 0; i < ld_out; ++i) {
                        if (i >= n) {  // past the pixels: untouched
                            EXPECT_EQ(out[m * ld_out + i], -99.0f);
                            continue;
                        }
                        double want = 0.0;
                        for (int64_t c = 0; c < C; ++c)
                            want += w[m * C + c] * ref(x[c * ldx + i] +
                                                       (with_add ? add[c * ld_add + i] : bias[c]));
                        EXPECT_NEAR(out[m * ld_out + i], want,
                                    1e-5 * std::max(1.0, std::fabs(want)));
                    }
            }
        }
    }
}

// scaled_plus_product against the sums in double, over row counts around its 4-row groups, pixel
// counts around its 64-pixel steps (and their 16-lane vectors), with the bias or the added
// matrix, the scaled matrix in f32 or in half times a scale, and nothing written past the pixels.
TEST(ScaledPlusProduct, MatchesTheSumsInDouble) {
    std::mt19937 rng(12);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t K = 7, lda = 150, ldf = 140, ld_add = 145, ldy = 141;
    const float a_scale = 8.0f;
    for (int64_t R : {1, 4, 6}) {
        for (int64_t n : {1, 16, 63, 64, 65, 130}) {
            for (int variant = 0; variant < 4; ++variant) {
                const bool with_add = variant & 1, half = variant & 2;
                SCOPED_TRACE(std::to_string(R) + " rows, " + std::to_string(n) + " pixels" +
                             (with_add ? ", add" : ", bias") + (half ? ", half" : ""));
                std::vector<float> a(R * lda), s(n), w(R * K), f(K * ldf), bias(R), add(R * ld_add);
                for (std::vector<float>* v : {&a, &s, &w, &f, &bias, &add})
                    for (float& value : *v) value = normal(rng);
                std::vector<uint16_t> a_f16(a.size());
                for (size_t i = 0; i < a.size(); ++i) {
                    a_f16[i] = f32_to_f16(a[i]);
                    if (half) a[i] = f16_to_f32(a_f16[i]) * a_scale;  // what the half stands for
                }
                std::vector<float> y(R * ldy, -99.0f);
                const float* b = with_add ? add.data() : nullptr;
                auto product = [&](const auto* matrix, float scale) {
                    scaled_plus_product(R, n, matrix, scale, lda, s.data(), w.data(), K, f.data(),
                                        ldf, bias.data(), b, ld_add, y.data(), ldy);
                };
                if (half)
                    product(a_f16.data(), a_scale);
                else
                    product(a.data(), 1.0f);
                for (int64_t r = 0; r < R; ++r)
                    for (int64_t i = 0; i < ldy; ++i) {
                        if (i >= n) {
                            ASSERT_EQ(y[r * ldy + i], -99.0f);
                            continue;
                        }
                        double want = double(a[r * lda + i]) * s[i] +
                                      (with_add ? add[r * ld_add + i] : bias[r]);
                        for (int64_t j = 0; j < K; ++j)
                            want += double(w[r * K + j]) * f[j * ldf + i];
                        ASSERT_NEAR(y[r * ldy + i], want, 1e-5 * std::max(1.0, std::fabs(want)));
                    }
            }
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

// layer_norm_channels_block normalises the pixels [i0, i0 + n) of x in place (the decoder's image
// tokens, block by block after their attention update) with the same arithmetic as the form over
// the whole image, and leaves the other pixels alone.
TEST(LayerNormChannels, BlockMatchesTheWholeImageFormAndTouchesNothingElse) {
    std::mt19937 rng(6);
    std::normal_distribution<float> normal(1.0f, 3.0f);
    const int64_t C = 32, HW = 700, i0 = 256, n = 300;
    Tensor input({C, HW}), weight({C}), bias({C}), add({C}), pe({C, HW});
    for (int64_t i = 0; i < input.numel(); ++i) input[i] = normal(rng), pe[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 1.0f - 0.02f * c;
        bias[c] = 0.03f * c;
        add[c] = 0.1f * c;
    }
    Tensor whole = input, whole_pe;
    layer_norm_channels(whole, weight, bias, 1e-5f,
                        {.add_first = add.data(), .pe = &pe, .x_pe = &whole_pe});

    Tensor x = input, x_pe = Tensor::filled({C, HW}, -7.0f);
    std::vector<uint16_t> x_bf16(C * HW, 0);
    std::vector<float> mean(HW, -7.0f), inv_std(HW, -7.0f);
    layer_norm_channels_block(x.data(), C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.add_first = add.data(),
                               .pe = &pe,
                               .x_pe = &x_pe,
                               .x_bf16 = x_bf16.data(),
                               .mean = mean.data(),
                               .inv_std = inv_std.data()});
    for (int64_t i = 0; i < HW; ++i) {
        const bool inside = i >= i0 && i < i0 + n;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t at = c * HW + i;
            ASSERT_EQ(x[at], inside ? whole[at] : input[at]) << "channel " << c << " pixel " << i;
            ASSERT_EQ(x_pe[at], inside ? whole_pe[at] : -7.0f) << "channel " << c << " pixel " << i;
            ASSERT_EQ(x_bf16[at], inside ? f32_to_bf16_finite(whole[at]) : 0) << "pixel " << i;
        }
        if (!inside) {
            ASSERT_EQ(mean[i], -7.0f) << "pixel " << i;
            continue;
        }
        double sum = 0;
        for (int64_t c = 0; c < C; ++c) sum += input[c * HW + i] + add[c];
        EXPECT_NEAR(mean[i], sum / C, 1e-4 * (1 + std::fabs(sum / C))) << "pixel " << i;
        EXPECT_GT(inv_std[i], 0.0f);
    }
}

// The decoder's form: the block's input is a separate image (src) plus an update block (add) in
// the caller's buffer, which is left holding that input.
TEST(LayerNormChannels, BlockFromASourceAndAnUpdateMatchesTheWholeImageForm) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.5f, 2.0f);
    const int64_t C = 40, HW = 600, i0 = 128, n = 200;
    Tensor src({C, HW}), update({C, n}), weight({C}), bias({C}), add_first({C});
    for (int64_t i = 0; i < src.numel(); ++i) src[i] = normal(rng);
    for (int64_t i = 0; i < update.numel(); ++i) update[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 0.7f + 0.01f * c;
        bias[c] = -0.02f * c;
        add_first[c] = 0.05f * c;
    }
    Tensor want = src;  // src with the update added to the block, normalised whole
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < n; ++i) want[c * HW + i0 + i] += update[c * n + i];
    Tensor input = want;
    layer_norm_channels(want, weight, bias, 1e-5f, {.add_first = add_first.data()});

    Tensor x = Tensor::filled({C, HW}, -7.0f);
    std::vector<float> mean(HW), inv_std(HW);
    layer_norm_channels_block(x.data(), C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.add_first = add_first.data(),
                               .src = src.data(),
                               .add = update.data(),
                               .add_ld = n,
                               .mean = mean.data(),
                               .inv_std = inv_std.data()});
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
            const int64_t at = c * HW + i;
            if (i < i0 || i >= i0 + n) {
                ASSERT_EQ(x[at], -7.0f) << "channel " << c << " pixel " << i;
                continue;
            }
            ASSERT_NEAR(x[at], want[at], 1e-5f) << "channel " << c << " pixel " << i;
            ASSERT_NEAR(update[c * n + i - i0], input[at] + add_first[c], 1e-5f)
                << "the update buffer holds the input, channel " << c << " pixel " << i;
        }
    ASSERT_GT(inv_std[i0], 0.0f);
}

// The decoder's bf16 form after layer 0: the source is the image's bf16 rounding, normalised in
// place (the rounding is also x_bf16), with no f32 result written, and x + pe rounded from the
// rounded positions. The same as the f32 form on the widened source and the widened positions.
TEST(LayerNormChannels, BlockFromABf16SourceInPlaceMatchesTheF32FormOnItsWidening) {
    std::mt19937 rng(8);
    std::normal_distribution<float> normal(0.5f, 2.0f);
    const int64_t C = 48, HW = 520, i0 = 256, n = 256;
    Tensor update({C, n}), weight({C}), bias({C}), add_first({C}), pe({C, HW});
    std::vector<uint16_t> image(C * HW), pe_bf16(C * HW);
    for (int64_t i = 0; i < C * HW; ++i) {
        image[i] = f32_to_bf16_finite(normal(rng));
        pe_bf16[i] = f32_to_bf16_finite(normal(rng));
        pe[i] = bf16_to_f32(pe_bf16[i]);
    }
    for (int64_t i = 0; i < update.numel(); ++i) update[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 0.9f + 0.01f * c;
        bias[c] = 0.02f * c;
        add_first[c] = -0.03f * c;
    }
    Tensor widened({C, HW}), want = Tensor::filled({C, HW}, -7.0f), update_f32 = update;
    for (int64_t i = 0; i < C * HW; ++i) widened[i] = bf16_to_f32(image[i]);
    std::vector<uint16_t> want_bf16(C * HW), want_pe_bf16(C * HW);
    layer_norm_channels_block(want.data(), C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.add_first = add_first.data(),
                               .src = widened.data(),
                               .add = update_f32.data(),
                               .add_ld = n,
                               .pe = &pe,
                               .x_bf16 = want_bf16.data(),
                               .x_pe_bf16 = want_pe_bf16.data()});

    std::vector<uint16_t> x_pe_bf16(C * HW, 0);
    const std::vector<uint16_t> before = image;
    layer_norm_channels_block(nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.add_first = add_first.data(),
                               .src_bf16 = image.data(),
                               .add = update.data(),
                               .add_ld = n,
                               .pe_bf16 = pe_bf16.data(),
                               .x_bf16 = image.data(),
                               .x_pe_bf16 = x_pe_bf16.data()});
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
            const int64_t at = c * HW + i;
            if (i < i0 || i >= i0 + n) {
                ASSERT_EQ(image[at], before[at]) << "channel " << c << " pixel " << i;
                ASSERT_EQ(x_pe_bf16[at], 0) << "channel " << c << " pixel " << i;
                continue;
            }
            ASSERT_EQ(image[at], want_bf16[at]) << "channel " << c << " pixel " << i;
            ASSERT_EQ(x_pe_bf16[at], want_pe_bf16[at]) << "channel " << c << " pixel " << i;
        }
    EXPECT_THROW(layer_norm_channels_block(nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                                           {.x_bf16 = image.data()}),
                 std::invalid_argument);
}

// An image stored in blocks of pixels (the decoder's, after layer 0): with src_ld the source is the
// block's own [C, n], normalised in place into it (out_ld), and with pe_ld the positions are in
// blocks too: the same values as the [C, HW] form; the blocks beside it are not touched, and
// src_ld without a source is refused.
TEST(LayerNormChannels, BlockOfAnImageStoredInBlocksMatchesTheImageForm) {
    std::mt19937 rng(12);
    std::normal_distribution<float> normal(-0.4f, 1.7f);
    const int64_t C = 36, n = 96, blocks = 3, HW = n * blocks, b = 1, i0 = b * n;
    Tensor update({C, n}), weight({C}), bias({C}), pe({C, HW});
    std::vector<uint16_t> image(C * HW), stored(C * HW), pe_bf16(C * HW), pe_stored(C * HW);
    for (int64_t i = 0; i < C * HW; ++i) {
        image[i] = f32_to_bf16_finite(normal(rng));
        pe_bf16[i] = f32_to_bf16_finite(normal(rng));
        pe[i] = bf16_to_f32(pe_bf16[i]);
    }
    for (int64_t k = 0; k < blocks; ++k)  // block k: [C, n] from element k * n * C on
        for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < n; ++j) {
                stored[k * n * C + c * n + j] = image[c * HW + k * n + j];
                pe_stored[k * n * C + c * n + j] = pe_bf16[c * HW + k * n + j];
            }
    for (int64_t i = 0; i < update.numel(); ++i) update[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 1.2f - 0.02f * c;
        bias[c] = 0.01f * c;
    }
    Tensor update_copy = update;
    std::vector<uint16_t> want_bf16(C * HW), want_pe_bf16(C * HW);
    layer_norm_channels_block(nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.src_bf16 = image.data(),
                               .add = update_copy.data(),
                               .add_ld = n,
                               .pe_bf16 = pe_bf16.data(),
                               .x_bf16 = want_bf16.data(),
                               .x_pe_bf16 = want_pe_bf16.data()});
    const std::vector<uint16_t> before = stored;
    std::vector<uint16_t> x_pe_bf16(C * n);
    uint16_t* const block = stored.data() + i0 * C;
    layer_norm_channels_block(nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                              {.src_bf16 = block,
                               .src_ld = n,
                               .add = update.data(),
                               .add_ld = n,
                               .pe_bf16 = pe_stored.data() + i0 * C,
                               .pe_ld = n,
                               .x_bf16 = block,
                               .x_pe_bf16 = x_pe_bf16.data(),
                               .out_ld = n});
    for (int64_t k = 0; k < blocks; ++k)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < n; ++j) {
                const int64_t at = k * n * C + c * n + j, in_image = c * HW + k * n + j;
                if (k != b) {
                    ASSERT_EQ(stored[at], before[at]) << "block " << k << " channel " << c;
                    continue;
                }
                ASSERT_EQ(stored[at], want_bf16[in_image]) << "channel " << c << " pixel " << j;
                ASSERT_EQ(x_pe_bf16[c * n + j], want_pe_bf16[in_image])
                    << "channel " << c << " pixel " << j;
            }
    EXPECT_THROW(layer_norm_channels_block(nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-5f,
                                           {.src_ld = n, .x_bf16 = block, .out_ld = n}),
                 std::invalid_argument);
}

// The decoder's last layer (its blocks go to the final attention): with out_ld, every result is
// a dense block of its own, the same values as the form that writes the image; the image, the
// source, is not written, and without a source the call is refused (x would be both).
TEST(LayerNormChannels, BlockIntoABufferOfItsOwnWritesWhatTheImageFormWrites) {
    std::mt19937 rng(10);
    std::normal_distribution<float> normal(-0.2f, 1.7f);
    const int64_t C = 36, HW = 700, i0 = 300, n = 190, ld = 200;
    Tensor src({C, HW}), update({C, n}), weight({C}), bias({C}), pe({C, HW});
    for (int64_t i = 0; i < src.numel(); ++i) {
        src[i] = normal(rng);
        pe[i] = normal(rng);
    }
    for (int64_t i = 0; i < update.numel(); ++i) update[i] = normal(rng);
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 0.8f + 0.02f * c;
        bias[c] = 0.1f - 0.01f * c;
    }
    auto normalise = [&](float* x, Tensor& update_block, Tensor& x_pe, uint16_t* x_bf16,
                         uint16_t* x_pe_bf16, int64_t out_ld) {
        layer_norm_channels_block(x, C, HW, i0, n, weight.data(), bias.data(), 1e-6f,
                                  {.src = src.data(),
                                   .add = update_block.data(),
                                   .add_ld = n,
                                   .pe = &pe,
                                   .x_pe = &x_pe,
                                   .x_bf16 = x_bf16,
                                   .x_pe_bf16 = x_pe_bf16,
                                   .out_ld = out_ld});
    };
    Tensor want({C, HW}), want_pe({C, HW}), want_update = update;
    std::vector<uint16_t> want_bf16(C * HW), want_pe_bf16(C * HW);
    normalise(want.data(), want_update, want_pe, want_bf16.data(), want_pe_bf16.data(), 0);
    const Tensor before = src;
    Tensor x = Tensor::filled({C, ld}, -5.0f), x_pe = Tensor::filled({C, ld}, -5.0f);
    std::vector<uint16_t> x_bf16(C * ld, 0), x_pe_bf16(C * ld, 0);
    normalise(x.data(), update, x_pe, x_bf16.data(), x_pe_bf16.data(), ld);
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t i = 0; i < HW; ++i)
            ASSERT_EQ(src[c * HW + i], before[c * HW + i]) << "channel " << c << " pixel " << i;
        for (int64_t j = 0; j < ld; ++j) {
            const int64_t at = c * HW + i0 + j, out = c * ld + j;
            if (j >= n) {  // past the block: untouched
                ASSERT_EQ(x[out], -5.0f) << "channel " << c << " column " << j;
                ASSERT_EQ(x_pe[out], -5.0f) << "channel " << c << " column " << j;
                ASSERT_EQ(x_bf16[out], 0) << "channel " << c << " column " << j;
                ASSERT_EQ(x_pe_bf16[out], 0) << "channel " << c << " column " << j;
                continue;
            }
            ASSERT_EQ(x[out], want[at]) << "channel " << c << " pixel " << i0 + j;
            ASSERT_EQ(x_pe[out], want_pe[at]) << "channel " << c << " pixel " << i0 + j;
            ASSERT_EQ(x_bf16[out], want_bf16[at]) << "channel " << c << " pixel " << i0 + j;
            ASSERT_EQ(x_pe_bf16[out], want_pe_bf16[at]) << "channel " << c << " pixel " << i0 + j;
        }
    }
    EXPECT_THROW(layer_norm_channels_block(x.data(), C, HW, i0, n, weight.data(), bias.data(),
                                           1e-6f, {.out_ld = ld}),
                 std::invalid_argument);
}

// Without x (the upscaling's normalisation with bf16 compute): GELU and every other output from
// registers, the same values as the form that writes x, over a width that leaves a partial
// 16-lane step, and the source untouched.
TEST(LayerNormChannels, BlockWithoutXWritesWhatTheFormWithXWrites) {
    std::mt19937 rng(9);
    std::normal_distribution<float> normal(0.3f, 1.5f);
    const int64_t C = 40, HW = 300, i0 = 17, n = 250;
    Tensor src({C, HW}), weight({C}), bias({C}), pe({C, HW});
    for (int64_t i = 0; i < src.numel(); ++i) {
        src[i] = normal(rng);
        pe[i] = normal(rng);
    }
    for (int64_t c = 0; c < C; ++c) {
        weight[c] = 1.1f - 0.01f * c;
        bias[c] = 0.05f * c - 0.5f;
    }
    Tensor want({C, HW}), want_pe({C, HW}), got_pe = Tensor::filled({C, HW}, -3.0f);
    std::vector<uint16_t> want_bf16(C * HW), got_bf16(C * HW, 0);
    layer_norm_channels_block(
        want.data(), C, HW, i0, n, weight.data(), bias.data(), 1e-6f,
        {.src = src.data(), .gelu = true, .pe = &pe, .x_pe = &want_pe, .x_bf16 = want_bf16.data()});
    const Tensor before = src;
    layer_norm_channels_block(
        nullptr, C, HW, i0, n, weight.data(), bias.data(), 1e-6f,
        {.src = src.data(), .gelu = true, .pe = &pe, .x_pe = &got_pe, .x_bf16 = got_bf16.data()});
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
            const int64_t at = c * HW + i;
            ASSERT_EQ(src[at], before[at]) << "channel " << c << " pixel " << i;
            if (i < i0 || i >= i0 + n) {
                ASSERT_EQ(got_pe[at], -3.0f) << "channel " << c << " pixel " << i;
                ASSERT_EQ(got_bf16[at], 0) << "channel " << c << " pixel " << i;
                continue;
            }
            ASSERT_EQ(got_pe[at], want_pe[at]) << "channel " << c << " pixel " << i;
            ASSERT_EQ(got_bf16[at], want_bf16[at]) << "channel " << c << " pixel " << i;
        }
    for (int64_t i = i0; i < i0 + n; ++i) {  // and what it writes is LayerNorm then GELU
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; ++c) mean += src[c * HW + i] / C;
        for (int64_t c = 0; c < C; ++c)
            var += (src[c * HW + i] - mean) * (src[c * HW + i] - mean) / C;
        for (int64_t c = 0; c < C; ++c) {
            const double y = (src[c * HW + i] - mean) / std::sqrt(var + 1e-6) * weight[c] + bias[c];
            const double gelu = 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0)));
            ASSERT_NEAR(want[c * HW + i], gelu, 1e-5) << "channel " << c << " pixel " << i;
        }
    }
}

// attention() against softmax(q k^T / sqrt(D) + bias) v in double, in the shapes its callers
// give it: windows' key counts (49, 196) and a prompt's few tokens, key counts across 16- and
// 64-lane steps, head widths of 16 to 64 and one that is no multiple of 16, query counts across
// the 128-row blocks, one head and several, with a bias on some.
TEST(Attention, MatchesSoftmaxOfScaledScoresInEveryShape) {
    std::mt19937 rng(31);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    struct Case {
        int64_t Lq, Lk, D;
        int heads;
        bool biased;
    };
    const Case cases[] = {{1, 1, 16, 1, false},    {5, 7, 32, 3, true},    {7, 49, 32, 2, true},
                          {13, 63, 48, 1, false},  {6, 64, 64, 2, false},  {12, 65, 16, 1, true},
                          {130, 196, 64, 1, true}, {49, 196, 32, 5, true}, {9, 256, 32, 2, false},
                          {9, 257, 32, 2, true},   {11, 30, 40, 2, true}};
    for (const Case& c : cases) {
        SCOPED_TRACE("Lq " + std::to_string(c.Lq) + " Lk " + std::to_string(c.Lk) + " D " +
                     std::to_string(c.D) + " heads " + std::to_string(c.heads));
        const int64_t C = c.heads * c.D;
        std::vector<float> q(c.Lq * C), k(c.Lk * C), v(c.Lk * C), out(c.Lq * C);
        for (auto* t : {&q, &k, &v})
            for (float& x : *t) x = uniform(rng);
        auto bias_of = [](int h, int64_t i, int64_t j) { return 0.1f * ((i + 2 * j + h) % 5); };
        const ScoreBias bias = [&](int h, int64_t q0, int64_t q1, float* scores, int64_t ld) {
            for (int64_t r = 0; r < q1 - q0; ++r)
                for (int64_t j = 0; j < c.Lk; ++j) scores[r * ld + j] += bias_of(h, q0 + r, j);
        };
        attention(q.data(), C, k.data(), C, v.data(), C, out.data(), C, c.Lq, c.Lk, c.heads, c.D,
                  c.biased ? bias : ScoreBias());
        for (int h = 0; h < c.heads; ++h)
            for (int64_t i = 0; i < c.Lq; ++i) {
                std::vector<double> p(c.Lk);
                double max = -1e300, sum = 0.0;
                for (int64_t j = 0; j < c.Lk; ++j) {
                    double dot = 0.0;
                    for (int64_t d = 0; d < c.D; ++d)
                        dot += double(q[i * C + h * c.D + d]) * k[j * C + h * c.D + d];
                    p[j] = dot / std::sqrt(double(c.D)) + (c.biased ? bias_of(h, i, j) : 0.0);
                    max = std::max(max, p[j]);
                }
                for (double& x : p) sum += x = std::exp(x - max);
                for (int64_t d = 0; d < c.D; ++d) {
                    double want = 0.0;
                    for (int64_t j = 0; j < c.Lk; ++j) want += p[j] * v[j * C + h * c.D + d];
                    ASSERT_NEAR(out[i * C + h * c.D + d], want / sum, 2e-5)
                        << "head " << h << " query " << i << " channel " << d;
                }
            }
    }
}

// parallel_for and parallel_region skip libgomp where a team would have one thread. Inside a
// region of one thread that is itself in a worksharing loop, a region's `omp for` must not share
// the enclosing loop (it did once: the ViT's windows, one thread, skipped windows).
// linear_panels against a double reference: row counts across its 8-row steps (a decoder's 7
// tokens, 16 and more as a session adds points), output widths across the 32-column panels (a
// padded last panel), and the MLP's 2048 x 256, which runs on two threads; with the weights
// packed in f32 and in half (against the product of the rounded weights).
TEST(LinearPanels, MatchesTheProductInEveryRowCountAndWidth) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{{3, 1}, {256, 33}, {2048, 256}})
        for (bool half : {false, true}) {
            Tensor W({N, K}), b({N});
            for (int64_t i = 0; i < W.numel(); ++i) W[i] = normal(rng);
            for (int64_t i = 0; i < N; ++i) b[i] = normal(rng);
            const PanelWeights packed = pack_panels(W, half);
            if (half)
                for (int64_t i = 0; i < W.numel(); ++i) W[i] = f16_to_f32(f32_to_f16(W[i]));
            for (int64_t M : {1, 7, 8, 9, 16, 17, 23}) {
                SCOPED_TRACE(testing::Message()
                             << M << " x " << K << " -> " << N << (half ? ", half" : ""));
                std::vector<float> x(M * K), y(M * N + 1, -7.0f);
                for (float& v : x) v = normal(rng);
                linear_panels(x.data(), M, packed, b.data(), y.data());
                for (int64_t m = 0; m < M; ++m)
                    for (int64_t n = 0; n < N; ++n) {
                        double want = b[n], magnitude = std::abs(b[n]);
                        for (int64_t k = 0; k < K; ++k) {
                            want += double(x[m * K + k]) * W[n * K + k];
                            magnitude += std::abs(double(x[m * K + k]) * W[n * K + k]);
                        }
                        ASSERT_NEAR(y[m * N + n], want, 1e-6 * magnitude) << m << ", " << n;
                    }
                EXPECT_EQ(y[M * N], -7.0f) << "wrote past the output";
            }
        }
}

// gemm_bf16 against the sums in double of its bf16 operands: every transposition, beta 0 and 1,
// strides wider than the rows. Each thread keeps its primitives and points them at a call's
// operands: the same problem again with other operands, and problems on several threads at once,
// must each compute their own.
TEST(GemmBf16, MatchesTheSumsOfItsOperandsCallAfterCallAndOnEveryThread) {
    struct Problem {
        bool trans_a, trans_b;
        int64_t M, N, K;
        float beta;
    };
    const std::vector<Problem> problems = {{false, false, 24, 40, 56, 0.0f},
                                           {false, true, 9, 33, 16, 1.0f},
                                           {true, false, 17, 8, 70, 0.0f},
                                           {true, true, 5, 64, 31, 1.0f}};
    auto check = [](const Problem& p, uint32_t seed) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        // Row-major with 3 spare columns: A [M, K] (or [K, M]), B [K, N] (or [N, K]), C [M, N].
        const int64_t a_rows = p.trans_a ? p.K : p.M, a_cols = p.trans_a ? p.M : p.K;
        const int64_t b_rows = p.trans_b ? p.N : p.K, b_cols = p.trans_b ? p.K : p.N;
        const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = p.N + 3;
        std::vector<uint16_t> a(a_rows * lda), b(b_rows * ldb);
        for (uint16_t& v : a) v = f32_to_bf16(normal(rng));
        for (uint16_t& v : b) v = f32_to_bf16(normal(rng));
        std::vector<float> c(p.M * ldc);
        for (float& v : c) v = normal(rng);
        const std::vector<float> before = c;
        gemm_bf16(p.trans_a, p.trans_b, p.M, p.N, p.K, a.data(), lda, b.data(), ldb, p.beta,
                  c.data(), ldc);
        int wrong = 0;
        for (int64_t m = 0; m < p.M; ++m)
            for (int64_t n = 0; n < ldc; ++n) {
                if (n >= p.N) {
                    wrong += c[m * ldc + n] != before[m * ldc + n];  // past the row: untouched
                    continue;
                }
                double want = p.beta * before[m * ldc + n], magnitude = std::abs(want);
                for (int64_t k = 0; k < p.K; ++k) {
                    const double x = bf16_to_f32(p.trans_a ? a[k * lda + m] : a[m * lda + k]);
                    const double y = bf16_to_f32(p.trans_b ? b[n * ldb + k] : b[k * ldb + n]);
                    want += x * y;
                    magnitude += std::abs(x * y);
                }
                wrong += std::abs(c[m * ldc + n] - want) > 1e-5 * magnitude + 1e-6;
            }
        return wrong;
    };
    for (uint32_t round = 0; round < 2; ++round)  // the second round: cached primitives
        for (size_t i = 0; i < problems.size(); ++i)
            EXPECT_EQ(check(problems[i], 100 * round + i), 0)
                << "problem " << i << ", round " << round;
    std::vector<int> wrong(4 * problems.size(), 0);
#pragma omp parallel for num_threads(2) schedule(dynamic)
    for (size_t i = 0; i < wrong.size(); ++i)
        wrong[i] = check(problems[i % problems.size()], 1000 + static_cast<uint32_t>(i));
    for (size_t i = 0; i < wrong.size(); ++i) EXPECT_EQ(wrong[i], 0) << "threaded call " << i;
}

TEST(Parallel, EveryIndexRunsOnceAtEveryNestingAndThreadCount) {
    const int threads = num_threads();
    for (int t : {1, 2}) {
        set_num_threads(t);
        std::vector<int> once(1000, 0);
        parallel_for(1000, true, [&](int64_t i) { ++once[i]; });
        EXPECT_EQ(std::count(once.begin(), once.end(), 1), 1000) << t << " threads";

        std::vector<int> outer(16, 0), inner(16 * 64, 0);
#pragma omp parallel
        {
#pragma omp for schedule(dynamic)
            for (int64_t o = 0; o < 16; ++o) {
                ++outer[o];
                parallel_region(true, [&] {
#pragma omp for schedule(dynamic)
                    for (int64_t i = 0; i < 64; ++i) ++inner[o * 64 + i];
                });
            }
        }
        EXPECT_EQ(std::count(outer.begin(), outer.end(), 1), 16) << t << " threads";
        EXPECT_EQ(std::count(inner.begin(), inner.end(), 1), 16 * 64) << t << " threads";
    }
    set_num_threads(threads);
}

}  // namespace
}  // namespace splitseg
