// Single kernels of the engine, timed alone (medians, one JSON object):
//  - softmax_numerators over rows of 4096 scores (global attention's width), f32 and bf16 out,
//    in ns per element;
//  - GELU over 64 K values in L2, in ns per element;
//  - the depthwise 3x3 convolution + GELU of a MobileSAM bottleneck band (18 x 256 pixels, 256
//    channels), in ms;
//  - the decoder's first upscaling convolution per click, as the direct product over the image
//    tokens (256 x 256 x 4096) and as the folded one (image term scaled per token, then a
//    product of depth 117: a one-click prompt), in ms;
//  - one global attention of ViT-B in bf16 (4096 queries and keys, 12 heads of 64, relative
//    positions over the 64 x 64 grid), on AMX tiles and on oneDNN, in ms (three alternating
//    rounds, the median of each).
//  - the COCO RLE counts of a 1024 x 768 mask: a disc with a hole (a real object's mask) and a
//    texture of diagonal stripes (a random-weight model's masks are textures: ~10^5 runs), in us;
//  - a click's 256 x 256 logits to its 1024 x 768 mask (the bilinear resize), and to the masks
//    of a 640 x 480 image and a 4032 x 3024 photo (two resizes), in ms, and the masks'
//    GELU-and-mix over 32 channels of 8192 pixels (gelu_mix), in us.
//   bench_kernels [--threads N] [--runs N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "bench_util.h"
#include "engine/amx.h"
#include "engine/attention.h"
#include "engine/ops.h"
#include "runtime/preprocess.h"
#include "service/mask_encoding.h"

namespace {

std::vector<float> random_values(size_t n, float stddev, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    const auto [threads, runs] = bench::parse_options(argc, argv, {1, 21});
    splitseg::set_num_threads(threads);
    nlohmann::json j;
    j["threads"] = threads;

    const int64_t cols = 4096;
    for (int64_t rows : {32, 128}) {
        const std::vector<float> scores = random_values(rows * cols, 3.0f, 1);
        std::vector<float> x(scores.size()), inv_sum(rows);
        std::vector<uint16_t> rounded(scores.size());
        for (bool bf16 : {false, true}) {
            const double s = bench::median_seconds(runs, [&] {
                std::memcpy(x.data(), scores.data(), x.size() * sizeof(float));
                splitseg::softmax_numerators(x.data(), rows, cols, inv_sum.data(),
                                             bf16 ? rounded.data() : nullptr);
            });
            j["softmax_ns_per_element"][std::to_string(rows) + "x4096_" + (bf16 ? "bf16" : "f32")] =
                s / (rows * cols) * 1e9;  // the copy back in is included
        }
    }

    // GELU over 64 K values (256 KB: in L2), as the decoder's upscaling and TinyViT apply it.
    {
        const std::vector<float> values = random_values(65536, 2.0f, 8);
        std::vector<float> v(values.size());
        const double s = bench::median_seconds(runs, [&] {
            std::memcpy(v.data(), values.data(), v.size() * sizeof(float));
            splitseg::add_gelu(v.data(), static_cast<int64_t>(v.size()), 0.0f, nullptr);
        });
        j["gelu_ns_per_element"] = s / static_cast<double>(v.size()) * 1e9;
    }

    // COCO RLE counts (the service's default mask encoding) of a 1024 x 768 mask.
    {
        const int w = 1024, h = 768;
        std::vector<uint8_t> disc(w * h), texture(w * h);
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                const int r2 = (x - 500) * (x - 500) + (y - 380) * (y - 380);
                disc[y * w + x] = r2 < 300 * 300 && r2 > 40 * 40;
                texture[y * w + x] = (x * 3 + y) % 16 < 8;  // diagonal stripes
            }
        for (const auto& [name, mask] : {std::pair{"disc", &disc}, {"texture", &texture}})
            j["coco_rle_us"][name] = 1e6 * bench::median_seconds(runs, [&] {
                                         splitseg::coco_rle_counts(mask->data(), w, h);
                                     });
    }

    // A click's low-res logits [1, 256, 256] to its 1024 x 768 mask (the longest side 1024: the
    // one resize, cropped, thresholded as it is written); and the masks' last step, 32 channels of
    // the upscaled image through GELU mixed into one mask, over one block of 16 x 512 pixels.
    {
        const std::vector<float> values = random_values(256 * 256, 2.0f, 14);
        splitseg::Tensor low({1, 256, 256});
        std::copy(values.begin(), values.end(), low.data());
        j["mask_upscale_1024x768_ms"] =
            1e3 * bench::median_seconds(runs, [&] {
                splitseg::interpolate_bilinear_positive(low, 1024, 1024, 768, 1024);
            });
        // Other sizes take two resizes (to the 1024 frame, cropped, then to the image's size):
        // a 640 x 480 image (down from 1024 x 768) and a 4032 x 3024 photo (up).
        for (const auto& [w, h] : {std::pair{640, 480}, {4032, 3024}}) {
            const splitseg::ImageGeometry geom =
                splitseg::make_geometry(w, h, splitseg::ResizeMode::LongestSide);
            j["mask_upscale_ms"][std::to_string(w) + "x" + std::to_string(h)] =
                1e3 * bench::median_seconds(runs, [&] { splitseg::upscale_masks(low, geom); });
        }
        const int64_t channels = 32, n = 16 * 512;
        const std::vector<float> y2 = random_values(channels * n, 1.0f, 15),
                                 bias = random_values(channels, 0.1f, 16),
                                 hyper = random_values(channels, 0.3f, 17);
        std::vector<float> mask(n);
        j["gelu_mix_32ch_8192px_us"] =
            1e6 * bench::median_seconds(runs, [&] {
                splitseg::gelu_mix(y2.data(), n, channels, n, bias.data(), nullptr, 0, hyper.data(),
                                   1, mask.data(), n);
            });
    }

    // A band of MobileSAM's first-stage bottleneck: its 3x3 depthwise convolution with GELU.
    {
        const int64_t rows = 18, width = 256, channels = 256;
        splitseg::Tensor band({rows, width, channels}), w({channels, 1, 3, 3}), b({channels});
        const std::vector<float> values = random_values(band.numel(), 1.0f, 12),
                                 taps = random_values(w.numel(), 0.3f, 13);
        std::copy(values.begin(), values.end(), band.data());
        std::copy(taps.begin(), taps.end(), w.data());
        for (int64_t c = 0; c < channels; ++c) b[c] = 0.01f * static_cast<float>(c % 5);
        j["depthwise3x3_gelu_band_ms"] =
            1e3 * bench::median_seconds(runs, [&] {
                splitseg::depthwise_conv2d_hwc(band, w, b, 1, 1, /*then_gelu=*/true);
            });
    }

    // The first upscaling convolution of a ViT-B decoder click: O*4 = 256 outputs per token.
    const int64_t O4 = 256, C = 256, HW = 4096, K = 117, nb = 512;
    const std::vector<float> W = random_values(O4 * C, 0.05f, 2), x = random_values(C * HW, 1, 3);
    const std::vector<float> A = random_values(O4 * K, 0.05f, 4), B = random_values(K * HW, 1, 5);
    const std::vector<float> base = random_values(O4 * HW, 1, 6), scale = random_values(HW, 1, 7);
    std::vector<float> y(O4 * nb);
    j["first_upscale_ms"]["direct_k256"] =
        1e3 * bench::median_seconds(runs, [&] {
            for (int64_t p0 = 0; p0 < HW; p0 += nb)
                splitseg::gemm(false, false, O4, nb, C, 1.0f, W.data(), C, x.data() + p0, HW, 0.0f,
                               y.data(), nb);
        });
    j["first_upscale_ms"]["folded_k117"] =
        1e3 * bench::median_seconds(runs, [&] {
            for (int64_t p0 = 0; p0 < HW; p0 += nb) {
                for (int64_t r = 0; r < O4; ++r)
                    for (int64_t i = 0; i < nb; ++i)
                        y[r * nb + i] = base[r * HW + p0 + i] * scale[p0 + i];
                splitseg::gemm(false, false, O4, nb, K, 1.0f, A.data(), K, B.data() + p0, HW, 1.0f,
                               y.data(), nb);
            }
        });

    if (splitseg::precision_supported(splitseg::Precision::BF16)) {
        const int64_t L = 4096, heads = 12, D = 64, Cq = heads * D;
        const std::vector<float> qkv = random_values(L * 3 * Cq, 1.0f, 9);
        const std::vector<float> rel_h = random_values(127 * D, 0.1f, 10),
                                 rel_w = random_values(127 * D, 0.1f, 11);
        std::vector<float> out(L * Cq);
        const char* names[] = {"onednn", "amx"};
        std::vector<double> ms[2];
        const bool amx = splitseg::amx::usable();
        for (int round = 0; round < 3; ++round)
            for (int on = 0; on <= (amx ? 1 : 0); ++on) {
                splitseg::amx::set_enabled(on);
                ms[on].push_back(1e3 * bench::median_seconds(std::min(runs, 5), [&] {
                                     splitseg::attention_packed(qkv.data(), 3 * Cq, qkv.data() + Cq,
                                                                3 * Cq, qkv.data() + 2 * Cq, 3 * Cq,
                                                                out.data(), Cq, L, L, heads, D,
                                                                splitseg::Precision::BF16);
                                 }));
            }
        splitseg::amx::set_enabled(amx);
        for (int on = 0; on <= (amx ? 1 : 0); ++on) {
            std::sort(ms[on].begin(), ms[on].end());
            j["global_attention_bf16_ms"][names[on]] = ms[on][1];
        }
    }
    std::printf("%s\n", j.dump().c_str());
}
