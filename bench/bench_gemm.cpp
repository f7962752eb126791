// The machine's matrix-product ceiling, the yardstick of the encoder figures in BENCHMARKS.md:
// GFLOP/s of a ViT-B qkv-sized product (4096 x 2304 x 768, x W^T) through every kernel the
// engine could use, and where the CPU has AMX, the tile unit's own peak (bf16 products of tiles
// already loaded: no memory traffic), on one thread and on all. OpenBLAS reads
// OPENBLAS_CORETYPE when it loads: run this once per setting.
//   bench_gemm [--threads N] [--runs N]   -> one JSON object
#include <cblas.h>
#include <dnnl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench_util.h"
#include "engine/amx.h"
#include "engine/linear.h"
#include "engine/ops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <omp.h>
#endif

namespace {

constexpr int64_t M = 4096, N = 2304, K = 768;

// GFLOP/s of the median of `runs` timed calls after one warm-up.
double gflops(int runs, const std::function<void()>& product) {
    return 2.0 * M * N * K / bench::median_seconds(runs, product) / 1e9;
}

#if defined(__x86_64__)
// GFLOP/s of `threads` threads each running 4 x 2^21 tile products 16 x 16 x 32 (bf16 in, f32
// accumulated) on tiles loaded once: the unit's arithmetic alone, summed over the threads.
__attribute__((target("amx-tile,amx-bf16"))) double amx_tile_peak_gflops(int threads) {
    constexpr int64_t kSteps = int64_t{1} << 21;
    alignas(64) static const uint16_t ones[16 * 32] = {};  // zeros: the values do not matter
    double slowest = 0;
#pragma omp parallel num_threads(threads) reduction(max : slowest)
    {
        splitseg::amx::configure_tiles();
        _tile_loadd(4, ones, 64);
        _tile_loadd(5, ones, 64);
        _tile_loadd(6, ones, 64);
        _tile_loadd(7, ones, 64);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
#pragma omp barrier
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < kSteps; ++i) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        slowest = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        splitseg::amx::release_tiles();
    }
    return threads * 4.0 * kSteps * (2 * 16 * 16 * 32) / slowest / 1e9;
}
#endif

}  // namespace

int main(int argc, char** argv) {
    const auto [threads, runs] = bench::parse_options(argc, argv, {2, 20});
    splitseg::set_num_threads(threads);
    openblas_set_num_threads(threads);

    const splitseg::Tensor x = splitseg::Tensor::filled({M, K}, 0.5f);
    const splitseg::Tensor W = splitseg::Tensor::filled({N, K}, 0.25f);
    std::vector<float> y(M * N);
    nlohmann::json j;
    j["shape"] = "4096x2304x768";
    j["threads"] = threads;
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    j["openblas_coretype"] = coretype && *coretype ? coretype : "(autodetected)";
    j["openblas_config"] = openblas_get_config();
    j["openblas_sgemm_gflops"] = gflops(runs, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, W.data(),
                    K, 0.0f, y.data(), N);
    });
    j["onednn_sgemm_gflops"] = gflops(runs, [&] {
        splitseg::gemm(false, true, M, N, K, 1.0f, x.data(), K, W.data(), K, 0.0f, y.data(), N);
    });
    for (splitseg::Precision p : {splitseg::Precision::F32, splitseg::Precision::BF16}) {
        if (!splitseg::precision_supported(p)) continue;
        const splitseg::Linear layer(W, splitseg::Tensor(), p);
        j[std::string("linear_packed_") + splitseg::precision_name(p) + "_gflops"] =
            gflops(runs, [&] { layer.run(x.data(), M, y.data()); });
    }
#if defined(__x86_64__)
    if (splitseg::amx::usable()) {
        j["amx_tile_peak_1thread_gflops"] = amx_tile_peak_gflops(1);
        j["amx_tile_peak_gflops"] = amx_tile_peak_gflops(threads);
    }
#endif
    std::printf("%s\n", j.dump().c_str());
}
