// Linear (packed weights, fused epilogues) and attention_packed against the plain kernels of
// ops.h, in f32 and bf16, and run from several threads at once.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include <omp.h>

#include "engine/amx.h"
#include "engine/attention.h"
#include "engine/linear.h"
#include "engine/ops.h"

namespace splitseg {
namespace {

Tensor random_tensor(const Shape& shape, float stddev, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, stddev);
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = normal(rng);
    return t;
}

// Largest |a - b| relative to the largest |b|.
double relative_error(const float* a, const float* b, int64_t n) {
    double diff = 0, scale = 1e-12;
    for (int64_t i = 0; i < n; ++i) {
        diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
        scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    }
    return diff / scale;
}

struct LinearCase {
    Precision precision;
    double tolerance;  // relative to the output's magnitude
};

class LinearTest : public testing::TestWithParam<LinearCase> {
  protected:
    void SetUp() override {
        if (!precision_supported(GetParam().precision))
            GTEST_SKIP() << "this CPU cannot run " << precision_name(GetParam().precision);
    }
};

TEST_P(LinearTest, EveryEpilogueMatchesThePlainKernels) {
    const int64_t in = 96, out = 80;
    const Tensor W = random_tensor({out, in}, 0.1f, 1), b = random_tensor({out}, 0.1f, 2);
    const Linear layer(W, b, GetParam().precision);
    EXPECT_EQ(layer.in_features(), in);
    EXPECT_EQ(layer.out_features(), out);
    for (int64_t M : {1, 7, 300}) {  // 300 = 288 + 12: bf16 runs the last 12 rows alone
        SCOPED_TRACE(M);
        const Tensor x = random_tensor({M, in}, 1.0f, 3);
        const Tensor want = linear(x, W, b);
        EXPECT_LT(relative_error(layer(x).data(), want.data(), M * out), GetParam().tolerance);

        Tensor gelu_want = want;
        gelu(gelu_want);
        Tensor y({M, out});
        layer.run(x.data(), M, y.data(), Epilogue::Gelu);
        EXPECT_LT(relative_error(y.data(), gelu_want.data(), M * out), GetParam().tolerance);

        Tensor residual = random_tensor({M, out}, 1.0f, 4), add_want = residual;
        linear_add(add_want, x, W, b);
        layer.run(x.data(), M, residual.data(), Epilogue::Add);
        EXPECT_LT(relative_error(residual.data(), add_want.data(), M * out), GetParam().tolerance);
    }
}

TEST_P(LinearTest, ConcurrentRunsDoNotShareScratch) {
    const int64_t in = 512, out = 512, M = 1024;
    const Tensor W = random_tensor({out, in}, 0.05f, 5), b = random_tensor({out}, 0.1f, 6);
    const Linear layer(W, b, GetParam().precision);
    const Tensor x1 = random_tensor({M, in}, 1.0f, 7), x2 = random_tensor({M, in}, 1.0f, 8);
    const Tensor want1 = layer(x1), want2 = layer(x2);
    for (int round = 0; round < 5; ++round) {
        Tensor y1({M, out}), y2({M, out});
        std::thread other([&] { layer.run(x2.data(), M, y2.data()); });
        layer.run(x1.data(), M, y1.data());
        other.join();
        EXPECT_EQ(relative_error(y1.data(), want1.data(), M * out), 0.0);
        EXPECT_EQ(relative_error(y2.data(), want2.data(), M * out), 0.0);
    }
}

INSTANTIATE_TEST_SUITE_P(Precisions, LinearTest,
                         testing::Values(LinearCase{Precision::F32, 1e-5},
                                         LinearCase{Precision::BF16, 3e-2}),
                         [](const auto& p) { return precision_name(p.param.precision); });

TEST(Linear, RejectsMisshapenWeights) {
    EXPECT_THROW(Linear(Tensor({4}), Tensor(), Precision::F32), std::invalid_argument);
    EXPECT_THROW(Linear(Tensor({4, 3}), Tensor({3}), Precision::F32), std::invalid_argument);
}

TEST(Precision, NamesRoundTrip) {
    Precision p;
    ASSERT_TRUE(precision_from_name("bf16", &p));
    EXPECT_EQ(p, Precision::BF16);
    ASSERT_TRUE(precision_from_name(precision_name(Precision::F32), &p));
    EXPECT_EQ(p, Precision::F32);
    EXPECT_FALSE(precision_from_name("fp8", &p));
}

// attention_packed against ops.h's attention, with a bias, several heads and a last partial
// block of queries. Regression: one head of 256 queries (two blocks running the same oneDNN
// primitive at once) came out wrong while the primitive's scratchpad was shared.
// bf16 runs both ways where the CPU has AMX: on tiles (key counts that are multiples of 32,
// query counts that are not, head dims 32 and 64, and 40, padded to 64) and on oneDNN.
void expect_attention_packed_matches(Precision precision) {
    const std::pair<int64_t, int64_t> lengths[] = {{100, 100}, {256, 256}, {300, 300}, {70, 256}};
    for (int heads : {1, 3}) {
        for (int64_t D : {32, 40, 64}) {
            for (auto [Lq, Lk] : lengths) {
                SCOPED_TRACE(std::string(precision_name(precision)) + " heads " +
                             std::to_string(heads) + " D " + std::to_string(D) + " Lq " +
                             std::to_string(Lq) + " Lk " + std::to_string(Lk));
                const int64_t C = heads * D;
                const Tensor q = random_tensor({Lq, C}, 1.0f, 9),
                             k = random_tensor({Lk, C}, 1.0f, 10);
                const Tensor v = random_tensor({Lk, C}, 1.0f, 11);
                const ScoreBias bias = [&](int h, int64_t q0, int64_t q1, float* scores,
                                           int64_t ld) {
                    for (int64_t r = 0; r < q1 - q0; ++r)
                        for (int64_t c = 0; c < Lk; ++c)
                            scores[r * ld + c] += 0.01f * static_cast<float>((q0 + r + c + h) % 7);
                };
                Tensor want({Lq, C}), got({Lq, C});
                attention(q.data(), C, k.data(), C, v.data(), C, want.data(), C, Lq, Lk, heads, D,
                          bias);
                attention_packed(q.data(), C, k.data(), C, v.data(), C, got.data(), C, Lq, Lk,
                                 heads, D, precision, bias);
                EXPECT_LT(relative_error(got.data(), want.data(), Lq * C),
                          precision == Precision::F32 ? 1e-5 : 3e-2);
            }
        }
    }
}

// rel_pos_score_bias against the formula, term by term, on a partial block of queries.
TEST(RelPosScoreBias, AddsBothTablesTermsToEveryScore) {
    const int64_t S = 5, D = 8, heads = 2, C = heads * D, L = S * S;
    const Tensor q = random_tensor({L, C}, 1.0f, 20);
    const Tensor rel_h = random_tensor({2 * S - 1, D}, 1.0f, 21),
                 rel_w = random_tensor({2 * S - 1, D}, 1.0f, 22);
    const ScoreBias bias = rel_pos_score_bias(q.data(), C, D, {rel_h.data(), rel_w.data(), S});
    const int64_t q0 = 7, q1 = 19, ld = L + 3;
    std::vector<float> scores((q1 - q0) * ld, 1.0f);
    bias(1, q0, q1, scores.data(), ld);
    for (int64_t i = q0; i < q1; ++i)
        for (int64_t key = 0; key < L; ++key) {
            const int64_t qy = i / S, qx = i % S, ky = key / S, kx = key % S;
            double want = 1.0;
            for (int64_t d = 0; d < D; ++d)
                want += q[i * C + D + d] *
                        (rel_h[(qy - ky + S - 1) * D + d] + rel_w[(qx - kx + S - 1) * D + d]);
            EXPECT_NEAR(scores[(i - q0) * ld + key], want, 1e-4) << i << " " << key;
        }
}

// attention_packed with relative positions against attention() with rel_pos_score_bias, on
// grids whose key counts are multiples of 32 (8 x 8, 16 x 16) and not (12 x 12, 14 x 14: a ViT
// window, its keys padded on AMX), with every query or only the first rows' (a window cut by
// the image's edge).
void expect_rel_pos_attention_matches(Precision precision) {
    for (int64_t S : {8, 12, 14, 16}) {
        for (int64_t D : {32, 64}) {
            for (int64_t Lq : {S * S, (S - 3) * S}) {
                SCOPED_TRACE(std::string(precision_name(precision)) + " S " + std::to_string(S) +
                             " D " + std::to_string(D) + " Lq " + std::to_string(Lq));
                const int heads = 2;
                const int64_t L = S * S, C = heads * D;
                const Tensor qkv = random_tensor({L, 3 * C}, 1.0f, 23);
                const Tensor rel_h = random_tensor({2 * S - 1, D}, 0.5f, 24),
                             rel_w = random_tensor({2 * S - 1, D}, 0.5f, 25);
                const RelPos rel{rel_h.data(), rel_w.data(), S};
                const float* q = qkv.data();
                Tensor want({Lq, C}), got({Lq, C});
                attention(q, 3 * C, q + C, 3 * C, q + 2 * C, 3 * C, want.data(), C, Lq, L, heads, D,
                          rel_pos_score_bias(q, 3 * C, D, rel));
                attention_packed(q, 3 * C, q + C, 3 * C, q + 2 * C, 3 * C, got.data(), C, Lq, heads,
                                 D, precision, rel);
                EXPECT_LT(relative_error(got.data(), want.data(), Lq * C),
                          precision == Precision::F32 ? 1e-5 : 3e-2);
            }
        }
    }
}

TEST(AttentionPacked, RelativePositionsMatchAttentionWithTheirBias) {
    expect_rel_pos_attention_matches(Precision::F32);
    if (!precision_supported(Precision::BF16)) {
        std::printf("[  SKIPPED ] bf16 cases: this CPU has no bf16 products in oneDNN\n");
        return;
    }
    expect_rel_pos_attention_matches(Precision::BF16);
    if (!amx::usable()) {
        std::printf("[  SKIPPED ] AMX cases: no AMX here; bf16 ran on oneDNN only\n");
        return;
    }
    const bool was = amx::set_enabled(false);
    expect_rel_pos_attention_matches(Precision::BF16);
    amx::set_enabled(was);
}

TEST(AttentionPacked, MatchesAttention) {
    expect_attention_packed_matches(Precision::F32);
    if (!precision_supported(Precision::BF16)) {
        std::printf("[  SKIPPED ] bf16 cases: this CPU has no bf16 products in oneDNN\n");
        return;
    }
    if (amx::usable()) {
        expect_attention_packed_matches(Precision::BF16);  // on AMX tiles
        const bool was = amx::set_enabled(false);
        expect_attention_packed_matches(Precision::BF16);  // on oneDNN
        amx::set_enabled(was);
    } else {
        std::printf("[  SKIPPED ] AMX cases: no AMX here; bf16 ran on oneDNN only\n");
        expect_attention_packed_matches(Precision::BF16);
    }
}

}  // namespace
}  // namespace splitseg

namespace splitseg {
namespace {

// A server's concurrent decodes run one thread each: the cap holds on the capping thread only,
// never raises the team size and is undone at the end of its scope.
TEST(ThreadCap, CapsTheCallingThreadAndRestores) {
    const int before = omp_get_max_threads();
    {
        const ThreadCap cap(1);
        EXPECT_EQ(omp_get_max_threads(), 1);
        int other = 0;
        std::thread([&] { other = omp_get_max_threads(); }).join();
        EXPECT_EQ(other, before);
        const ThreadCap more(before + 4);
        EXPECT_EQ(omp_get_max_threads(), 1);
    }
    EXPECT_EQ(omp_get_max_threads(), before);
}

}  // namespace
}  // namespace splitseg
