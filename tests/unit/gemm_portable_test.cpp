#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/gemm_portable.h"
#include "wasm/worker_pool.h"

namespace splitseg {
namespace {

// C = alpha * op(A) * op(B) + beta * C in double, the reference for the WASM build's GEMM.
std::vector<double> reference(bool ta, bool tb, int M, int N, int K, float alpha,
                              const std::vector<float>& A, int lda, const std::vector<float>& B,
                              int ldb, float beta, const std::vector<float>& C, int ldc) {
    std::vector<double> out(static_cast<size_t>(M) * ldc);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < K; ++k)
                s += double(ta ? A[k * lda + i] : A[i * lda + k]) *
                     double(tb ? B[j * ldb + k] : B[k * ldb + j]);
            out[i * ldc + j] = alpha * s + (beta == 0.0f ? 0.0 : beta * double(C[i * ldc + j]));
        }
    return out;
}

TEST(GemmPortable, MatchesReferenceOverEdgesTransposesAndBlocks) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    struct Case {
        int M, N, K;
    };
    // Sizes below, at and past the 4x8 tile and the 64/256/256 cache blocks.
    for (const Case c :
         {Case{1, 1, 1}, Case{3, 7, 5}, Case{4, 8, 16}, Case{65, 259, 300}, Case{130, 17, 513}}) {
        for (int t = 0; t < 4; ++t) {
            const bool ta = t & 1, tb = t & 2;
            for (const float beta : {0.0f, 0.5f}) {
                const int lda = (ta ? c.M : c.K) + 3, ldb = (tb ? c.K : c.N) + 2, ldc = c.N + 1;
                std::vector<float> A(static_cast<size_t>(ta ? c.K : c.M) * lda),
                    B(static_cast<size_t>(tb ? c.N : c.K) * ldb), C(static_cast<size_t>(c.M) * ldc);
                for (float& x : A) x = u(rng);
                for (float& x : B) x = u(rng);
                // beta == 0 must not read C: NaN there would otherwise leak into the result.
                for (float& x : C) x = beta == 0 ? std::numeric_limits<float>::quiet_NaN() : u(rng);
                const std::vector<double> want =
                    reference(ta, tb, c.M, c.N, c.K, 1.5f, A, lda, B, ldb, beta, C, ldc);
                gemm_portable(ta, tb, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, beta,
                              C.data(), ldc);
                for (int i = 0; i < c.M; ++i)
                    for (int j = 0; j < c.N; ++j)
                        ASSERT_NEAR(C[i * ldc + j], want[i * ldc + j], 1e-4 * std::sqrt(c.K))
                            << c.M << "x" << c.N << "x" << c.K << " ta " << ta << " tb " << tb
                            << " beta " << beta << " at " << i << "," << j;
            }
        }
    }
}

TEST(GemmPortable, ZeroDepthScalesC) {
    std::vector<float> C = {1, 2, 3, 4};
    gemm_portable(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
    EXPECT_EQ(C, (std::vector<float>{0.5f, 1, 1.5f, 2}));
}

TEST(WorkerPool, RunsEveryTaskOnceAcrossRuns) {
    WorkerPool pool(3);
    EXPECT_EQ(pool.threads(), 3);
    for (int run = 0; run < 200; ++run) {
        const int n = 1 + run % 7;
        std::vector<std::atomic<int>> hits(n);
        pool.run(n, [&](int64_t i) { ++hits[i]; });
        for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "run " << run << " task " << i;
    }
}

// Split by columns over a worker pool, every value of C is the one the single thread computes.
TEST(GemmPortable, SplitOverWorkersMatchesOneThreadExactly) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    WorkerPool pool(3);
    for (const auto [M, N, K] :
         {std::array<int, 3>{56, 4096, 256}, std::array<int, 3>{130, 601, 300},
          std::array<int, 3>{256, 24, 1024}}) {
        std::vector<float> A(static_cast<size_t>(M) * K), B(static_cast<size_t>(K) * N);
        for (float& x : A) x = u(rng);
        for (float& x : B) x = u(rng);
        std::vector<float> one(static_cast<size_t>(M) * N), split(one.size());
        gemm_portable(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, one.data(), N);
        set_gemm_portable_runner(&pool);
        gemm_portable(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, split.data(), N);
        set_gemm_portable_runner(nullptr);
        ASSERT_EQ(one, split) << M << "x" << N << "x" << K;
    }
}

}  // namespace
}  // namespace splitseg
