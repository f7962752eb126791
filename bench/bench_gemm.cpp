// The machine's matrix-product ceiling, the yardstick of the encoder figures in BENCHMARKS.md:
// GFLOP/s of a ViT-B qkv-sized product (4096 x 2304 x 768, x W^T) through every kernel the
// engine could use. OpenBLAS reads OPENBLAS_CORETYPE when it loads: run this once per setting.
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
#include "engine/linear.h"
#include "engine/ops.h"

namespace {

constexpr int64_t M = 4096, N = 2304, K = 768;

// GFLOP/s of the median of `runs` timed calls after one warm-up.
double gflops(int runs, const std::function<void()>& product) {
    return 2.0 * M * N * K / bench::median_seconds(runs, product) / 1e9;
}

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
    std::printf("%s\n", j.dump().c_str());
}
