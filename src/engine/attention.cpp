#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/amx.h"
#include "engine/dtype.h"
#include "engine/onednn.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace splitseg {

namespace {

using onednn::desc;
using onednn::dt;

// Query rows per task: fewer calls (each has a fixed cost) against scores [128, Lk] that stay
// in the core's L2 between the products.
constexpr int64_t kBlock = 128;

// The two products of one block size: scores = scale * q K^T, out = p V.
struct Products {
    dnnl::matmul scores, values;
    size_t scratch_bytes = 0;  // the larger of their scratchpads
};

Products make_products(const dnnl::matmul::primitive_desc& scores,
                       const dnnl::matmul::primitive_desc& values) {
    return {dnnl::matmul(scores), dnnl::matmul(values),
            std::max(scores.scratchpad_desc().get_size(), values.scratchpad_desc().get_size())};
}

#if defined(__x86_64__)
// ---- bf16 attention on AMX tiles ----
// oneDNN 2.6 ran the scores product of a 128-query block on AMX at ~130 GFLOP/s a thread here
// and the values product (a left operand [128, 4096] against a [4096, 64] right one) on its
// non-AMX gemm. Tiles of 16 rows x 64 bytes hold 16 x 32 bf16 values: a left operand's rows, or
// a right operand's 32 x 16 block with each pair of its rows interleaved (the "VNNI" layout).

#define SPLITSEG_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f")))

constexpr int64_t kTileRows = 16, kTileK = 32;  // a tile: 16 rows, 32 bf16 (64 bytes) a row
constexpr int64_t kAmxBlock = 32;               // queries per task: two tiles of rows

int64_t round_up(int64_t n, int64_t m) {
    return (n + m - 1) / m * m;
}

// The right operands of q K^T and p V in tiles' layout: panels of 16 columns, each
// [depth_padded / 2][16] pairs of bf16 (as uint32: the pair's first value in the low half), panel
// after panel, zeros in the padding.

// Keys [Lk, D] (rows ldk apart) as q K^T's right operand: depth Dp, one column per key, Lkp
// columns. (Rounding inline: to_bf16's OpenMP region costs a microsecond a call, more than a
// row's work.)
std::vector<uint32_t> pack_keys(const float* k, int64_t ldk, int64_t Lk, int64_t Lkp, int64_t D,
                                int64_t Dp) {
    std::vector<uint32_t> packed(Lkp * Dp / 2, 0);
    std::vector<uint16_t> row(Dp, 0);
    std::vector<uint32_t> pairs(Dp / 2);
    for (int64_t j = 0; j < Lk; ++j) {
        for (int64_t d = 0; d < D; ++d) row[d] = f32_to_bf16_finite(k[j * ldk + d]);
        std::memcpy(pairs.data(), row.data(), Dp * sizeof(uint16_t));  // little-endian pairs
        uint32_t* out = packed.data() + (j / 16) * (Dp / 2) * 16 + j % 16;
        for (int64_t d = 0; d < Dp / 2; ++d) out[d * 16] = pairs[d];
    }
    return packed;
}

// Values [Lk, D] (rows ldv apart) as p V's right operand: depth Lkp (even), width Dp.
std::vector<uint32_t> pack_values(const float* v, int64_t ldv, int64_t Lk, int64_t Lkp, int64_t D,
                                  int64_t Dp) {
    std::vector<uint32_t> packed(Lkp * Dp / 2, 0);
    for (int64_t j = 0; j < Lk; j += 2) {
        const float *even = v + j * ldv, *odd = j + 1 < Lk ? even + ldv : nullptr;
        for (int64_t c = 0; c < D; ++c)
            packed[(c / 16) * (Lkp / 2) * 16 + (j / 2) * 16 + c % 16] =
                uint32_t(f32_to_bf16_finite(even[c])) |
                uint32_t(odd ? f32_to_bf16_finite(odd[c]) : 0) << 16;
    }
    return packed;
}

// Tiles 0-3 = left [32, depth] (row stride lda elements) x right (two panels from right_panel,
// each [depth / 2][16][2]), depth a multiple of 32. Tiles 4-5 take the left operand's two row
// halves, 6-7 the right one's two column halves.
SPLITSEG_AMX_TARGET inline void product_32x32(const uint16_t* left, int64_t lda,
                                              const uint32_t* right_panel, int64_t panel_stride,
                                              int64_t depth) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint32_t* right_next = right_panel + panel_stride;
    for (int64_t k = 0; k < depth; k += kTileK) {
        _tile_loadd(4, left + k, lda * 2);
        _tile_loadd(5, left + kTileRows * lda + k, lda * 2);
        _tile_loadd(6, right_panel + k / 2 * 16, 64);
        _tile_loadd(7, right_next + k / 2 * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
}

// scores [32, Lk] (row stride lds) = q [32, 64] (row stride 64) x keys, for head dim 64 (ViT-B
// and -L): the queries stay in tiles 2-5 and each panel of 16 keys costs two loads, against
// four for product_32x32.
SPLITSEG_AMX_TARGET void scores_depth64(const uint16_t* q, const uint32_t* keys, int64_t Lk,
                                        float* scores, int64_t lds) {
    _tile_loadd(2, q, 128);
    _tile_loadd(3, q + 32, 128);
    _tile_loadd(4, q + kTileRows * 64, 128);
    _tile_loadd(5, q + kTileRows * 64 + 32, 128);
    for (int64_t j = 0; j < Lk; j += 16, keys += 32 * 16) {
        _tile_loadd(6, keys, 64);
        _tile_loadd(7, keys + 16 * 16, 64);
        _tile_zero(0);
        _tile_zero(1);
        _tile_dpbf16ps(0, 2, 6);
        _tile_dpbf16ps(0, 3, 7);
        _tile_dpbf16ps(1, 4, 6);
        _tile_dpbf16ps(1, 5, 7);
        _tile_stored(0, scores + j, lds * 4);
        _tile_stored(1, scores + kTileRows * lds + j, lds * 4);
    }
}

// The 32 x 32 accumulator into out (row stride ldo floats).
SPLITSEG_AMX_TARGET inline void store_32x32(float* out, int64_t ldo) {
    _tile_stored(0, out, ldo * 4);
    _tile_stored(1, out + 16, ldo * 4);
    _tile_stored(2, out + kTileRows * ldo, ldo * 4);
    _tile_stored(3, out + kTileRows * ldo + 16, ldo * 4);
}

// rel_h or rel_w [2S - 1, D] transposed and reversed, [D][W] (W: 2S - 1 padded to 16): row d
// holds the tables' column d from the last offset to the first, so that a query's terms
// against keys 0 .. S - 1 read one run of S values from offset S - 1 - (its y or x) on.
std::vector<float> reversed_columns(const float* table, int64_t S, int64_t D, int64_t W) {
    std::vector<float> out(D * W, 0.0f);
    for (int64_t o = 0; o < 2 * S - 1; ++o)
        for (int64_t d = 0; d < D; ++d) out[d * W + (2 * S - 2 - o)] = table[o * D + d];
    return out;
}

// terms[j] = q . table[d][j] over d, for j in [0, 16 V), the last 16 lanes masked by `tail`: V
// accumulators a compile-time count, so that they stay in registers.
template <int V>
SPLITSEG_AMX_TARGET inline void dot_columns(const float* q, int64_t D, const float* table,
                                            int64_t W, __mmask16 tail, float* terms) {
    __m512 acc[V];
    for (int i = 0; i < V; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
        const __m512 qd = _mm512_set1_ps(q[d]);
        for (int i = 0; i < V; ++i)
            acc[i] = _mm512_fmadd_ps(
                qd, _mm512_maskz_loadu_ps(i + 1 == V ? tail : 0xFFFF, table + d * W + 16 * i),
                acc[i]);
    }
    for (int i = 0; i < V; ++i)
        _mm512_mask_storeu_ps(terms + 16 * i, i + 1 == V ? tail : 0xFFFF, acc[i]);
}

// by_row[ky] = q . rel_h[qy - ky + S - 1] and by_col[kx] = q . rel_w[qx - kx + S - 1] for ky, kx
// in [0, S), q unscaled f32: up to 64 lanes at a time.
SPLITSEG_AMX_TARGET void rel_pos_terms(const float* q, int64_t D, const float* h_rev,
                                       const float* w_rev, int64_t W, int64_t S, int64_t qy,
                                       int64_t qx, float* by_row, float* by_col) {
    for (int64_t part = 0; part < 2; ++part) {
        const float* table = (part == 0 ? h_rev : w_rev) + (S - 1 - (part == 0 ? qy : qx));
        float* terms = part == 0 ? by_row : by_col;
        for (int64_t j0 = 0; j0 < S; j0 += 64) {
            const int64_t lanes = std::min<int64_t>(64, S - j0), last = (lanes - 1) % 16 + 1;
            const __mmask16 tail = last == 16 ? __mmask16(0xFFFF) : __mmask16((1u << last) - 1);
            switch ((lanes + 15) / 16) {
                case 1:
                    dot_columns<1>(q, D, table + j0, W, tail, terms + j0);
                    break;
                case 2:
                    dot_columns<2>(q, D, table + j0, W, tail, terms + j0);
                    break;
                case 3:
                    dot_columns<3>(q, D, table + j0, W, tail, terms + j0);
                    break;
                default:
                    dot_columns<4>(q, D, table + j0, W, tail, terms + j0);
                    break;
            }
        }
    }
}

// attention_packed's bf16 path on AMX: keys padded to a multiple of 32 (zero keys whose scores
// the softmax does not read, zero values) and D to 32. Scores gain either `bias` or, where
// rel_pos is given, relative positions added inside the softmax.
SPLITSEG_AMX_TARGET void attention_amx(const float* q, int64_t ldq, const float* k, int64_t ldk,
                                       const float* v, int64_t ldv, float* out, int64_t ldo,
                                       int64_t Lq, int64_t Lk, int heads, int64_t D,
                                       const ScoreBias& bias, const RelPos* rel_pos) {
    const int64_t Dp = round_up(D, kTileK), Lqp = round_up(Lq, kAmxBlock);
    const int64_t Lkp = round_up(Lk, kTileK);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    // Per head: queries [Lqp, Dp] bf16 scaled by 1/sqrt(D) (exact when D is a power of 4), keys
    // as the right operand of q K^T (depth Dp), values of p V (depth Lkp, width Dp).
    std::vector<std::vector<uint16_t>> queries(heads);
    std::vector<std::vector<uint32_t>> keys(heads), values(heads);
#pragma omp parallel for
    for (int h = 0; h < heads; ++h) {
        queries[h].assign(Lqp * Dp, 0);
        for (int64_t i = 0; i < Lq; ++i)
            for (int64_t d = 0; d < D; ++d)
                queries[h][i * Dp + d] = f32_to_bf16_finite(q[i * ldq + h * D + d] * scale);
        keys[h] = pack_keys(k + h * D, ldk, Lk, Lkp, D, Dp);
        values[h] = pack_values(v + h * D, ldv, Lk, Lkp, D, Dp);
    }

    const int64_t S = rel_pos ? rel_pos->S : 0, W = round_up(2 * S - 1, 16);
    const std::vector<float> h_rev = rel_pos ? reversed_columns(rel_pos->rel_h, S, D, W)
                                             : std::vector<float>(),
                             w_rev = rel_pos ? reversed_columns(rel_pos->rel_w, S, D, W)
                                             : std::vector<float>();

    // Rows of scores and probabilities 64 bytes longer than a multiple of 4 KB: a tile's 16 rows
    // then fall in different L1 sets (at Lk = 4096 they shared one, and ran 2x slower).
    const int64_t lds = Lkp + 16, ldp = Lkp + 32;
    const int64_t nblocks = Lqp / kAmxBlock, tasks = heads * nblocks;
#pragma omp parallel
    {
        amx::configure_tiles();
        std::vector<float> scores(kAmxBlock * lds), inv_sum(kAmxBlock), by_row(S), by_col(S);
        std::vector<uint16_t> p(kAmxBlock * ldp, 0);
        alignas(64) float block[kAmxBlock * kAmxBlock];
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int h = static_cast<int>(t / nblocks);
            const int64_t q0 = (t % nblocks) * kAmxBlock, n = std::min(kAmxBlock, Lq - q0);
            const uint16_t* qh = queries[h].data() + q0 * Dp;
            if (Dp == 64) {
                scores_depth64(qh, keys[h].data(), Lkp, scores.data(), lds);
            } else {
                for (int64_t j = 0; j < Lkp; j += 32) {  // scores [32, Lkp]
                    product_32x32(qh, Dp, keys[h].data() + j * Dp / 2, 8 * Dp, Dp);
                    store_32x32(scores.data() + j, lds);
                }
            }
            if (bias) bias(h, q0, q0 + n, scores.data(), lds);
            for (int64_t r = 0; r < n; ++r) {
                float* row = scores.data() + r * lds;
                if (!rel_pos) {
                    softmax_numerators(row, 1, Lk, &inv_sum[r], &p[r * ldp]);
                    continue;
                }
                const int64_t i = q0 + r;
                rel_pos_terms(q + i * ldq + h * D, D, h_rev.data(), w_rev.data(), W, S, i / S,
                              i % S, by_row.data(), by_col.data());
                softmax_numerators_grid(row, S, by_row.data(), by_col.data(), &inv_sum[r],
                                        &p[r * ldp]);
            }
            if (n < kAmxBlock) std::fill(p.begin() + n * ldp, p.end(), uint16_t(0));
            for (int64_t c = 0; c < Dp; c += 32) {  // out [32, D] in blocks of 32 columns
                product_32x32(p.data(), ldp, values[h].data() + c * Lkp / 2, 8 * Lkp, Lkp);
                store_32x32(block, kAmxBlock);
                const int64_t width = std::min<int64_t>(32, D - c);
                for (int64_t r = 0; r < n; ++r) {
                    float* o = out + (q0 + r) * ldo + h * D + c;
                    for (int64_t i = 0; i < width; ++i)
                        o[i] = block[r * kAmxBlock + i] * inv_sum[r];
                }
            }
        }
        amx::release_tiles();
    }
}
#endif

}  // namespace

void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads,
                      int64_t D, Precision precision, const ScoreBias& bias) {
    if (Lq == 0) return;
    const bool bf16 = precision == Precision::BF16;
#if defined(__x86_64__)
    if (bf16 && amx::usable())
        return attention_amx(q, ldq, k, ldk, v, ldv, out, ldo, Lq, Lk, heads, D, bias, nullptr);
#endif
    const dt c = bf16 ? dt::bf16 : dt::f32;
    const dnnl::engine& eng = onednn::cpu();

    // f32 queries are read in place; bf16 ones from a rounded contiguous copy per head.
    auto query_desc = [&](int64_t n) {
        return bf16 ? onednn::rows(n, D, D, dt::bf16) : onednn::rows(n, D, ldq);
    };
    auto scores_pd = [&](int64_t n, const desc& keys) {
        dnnl::primitive_attr attr = onednn::own_scratchpad();
        attr.set_output_scales(0, {1.0f / std::sqrt(static_cast<float>(D))});
        return dnnl::matmul::primitive_desc(
            dnnl::matmul::desc(query_desc(n), keys, onednn::rows(n, Lk, Lk)), attr, eng);
    };
    auto values_pd = [&](int64_t n, const desc& values) {
        return dnnl::matmul::primitive_desc(
            dnnl::matmul::desc(onednn::rows(n, Lk, Lk, c), values, onednn::rows(n, D, ldo)),
            onednn::own_scratchpad(), eng);
    };
    // oneDNN picks the packed layouts of K^T and V for full blocks; the last block reuses them.
    const int64_t block = std::min(kBlock, Lq), tail = Lq % block;
    const auto full_scores = scores_pd(block, desc({D, Lk}, c, dnnl::memory::format_tag::any));
    const auto full_values = values_pd(block, desc({Lk, D}, c, dnnl::memory::format_tag::any));
    const desc keys_packed = full_scores.weights_desc(), values_packed = full_values.weights_desc();
    const Products full = make_products(full_scores, full_values);
    const Products last =
        tail ? make_products(scores_pd(tail, keys_packed), values_pd(tail, values_packed)) : full;

    // Each head's K^T and V packed once (and its queries rounded once for bf16).
    std::vector<dnnl::memory> keys(heads), values(heads), queries(bf16 ? heads : 0);
    {
        dnnl::stream stream(eng);
        auto pack = [&](const desc& from, const float* data, const desc& to) {
            dnnl::memory src(from, eng, const_cast<float*>(data)), dst(to, eng);
            dnnl::reorder(src, dst).execute(stream, src, dst);
            return dst;
        };
        for (int h = 0; h < heads; ++h) {
            keys[h] = pack(onednn::transposed(Lk, D, ldk), k + h * D, keys_packed);
            values[h] = pack(onednn::rows(Lk, D, ldv), v + h * D, values_packed);
            if (bf16)
                queries[h] =
                    pack(onednn::rows(Lq, D, ldq), q + h * D, onednn::rows(Lq, D, D, dt::bf16));
        }
        stream.wait();
    }

    const int64_t nblocks = (Lq + block - 1) / block, tasks = heads * nblocks;
#pragma omp parallel
    {
        dnnl::stream stream(eng);
        std::vector<float> scores(block * Lk), inv_sum(block);
        std::vector<uint16_t> rounded(bf16 ? block * Lk : 0);
        // Each thread its own scratchpad: a primitive's shared one is not safe to run at once.
        const onednn::Scratchpad scratch(std::max(full.scratch_bytes, last.scratch_bytes));
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int h = static_cast<int>(t / nblocks);
            const int64_t q0 = (t % nblocks) * block, n = std::min(block, Lq - q0);
            const Products& products = n == block ? full : last;

            void* q_rows = bf16 ? static_cast<void*>(
                                      static_cast<uint16_t*>(queries[h].get_data_handle()) + q0 * D)
                                : static_cast<void*>(const_cast<float*>(q + q0 * ldq + h * D));
            dnnl::memory q_mem(query_desc(n), eng, q_rows);
            dnnl::memory s_mem(onednn::rows(n, Lk, Lk), eng, scores.data());
            products.scores.execute(stream, {{DNNL_ARG_SRC, q_mem},
                                             {DNNL_ARG_WEIGHTS, keys[h]},
                                             {DNNL_ARG_DST, s_mem},
                                             {DNNL_ARG_SCRATCHPAD, scratch.memory()}});
            stream.wait();
            if (bias) bias(h, q0, q0 + n, scores.data(), Lk);
            // The softmax's normalising scale goes onto the [n, D] output, not the [n, Lk]
            // probabilities.
            softmax_numerators(scores.data(), n, Lk, inv_sum.data(),
                               bf16 ? rounded.data() : nullptr);
            const dnnl::memory p_mem =
                bf16 ? dnnl::memory(onednn::rows(n, Lk, Lk, dt::bf16), eng, rounded.data()) : s_mem;
            float* o = out + q0 * ldo + h * D;
            dnnl::memory o_mem(onednn::rows(n, D, ldo), eng, o);
            products.values.execute(stream, {{DNNL_ARG_SRC, p_mem},
                                             {DNNL_ARG_WEIGHTS, values[h]},
                                             {DNNL_ARG_DST, o_mem},
                                             {DNNL_ARG_SCRATCHPAD, scratch.memory()}});
            stream.wait();
            for (int64_t r = 0; r < n; ++r)
                for (int64_t d = 0; d < D; ++d) o[r * ldo + d] *= inv_sum[r];
        }
    }
}

ScoreBias rel_pos_score_bias(const float* q, int64_t ldq, int64_t D, const RelPos& rel) {
    return [=](int head, int64_t q0, int64_t q1, float* scores, int64_t ld) {
        const int64_t n = q1 - q0, S = rel.S, offsets = 2 * S - 1;
        const float* rows = q + q0 * ldq + head * D;
        std::vector<float> by_h(n * offsets), by_w(n * offsets), row_w(S);
        gemm(false, true, n, offsets, D, 1.0f, rows, ldq, rel.rel_h, D, 0.0f, by_h.data(), offsets);
        gemm(false, true, n, offsets, D, 1.0f, rows, ldq, rel.rel_w, D, 0.0f, by_w.data(), offsets);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t qy = (q0 + i) / S, qx = (q0 + i) % S;
            const float* h = by_h.data() + i * offsets + qy + S - 1;  // h[-ky]
            const float* w = by_w.data() + i * offsets + qx + S - 1;  // w[-kx]
            for (int64_t kx = 0; kx < S; ++kx) row_w[kx] = w[-kx];
            float* row = scores + i * ld;
            for (int64_t ky = 0; ky < S; ++ky, row += S) {
                const float hy = h[-ky];
                for (int64_t kx = 0; kx < S; ++kx) row[kx] += hy + row_w[kx];
            }
        }
    };
}

void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int heads, int64_t D,
                      Precision precision, const RelPos& rel_pos) {
    const int64_t Lk = rel_pos.S * rel_pos.S;
    if (Lq > Lk)
        throw std::invalid_argument("attention_packed: " + std::to_string(Lq) +
                                    " queries on a grid of " + std::to_string(Lk) + " tokens");
    if (Lq == 0) return;
#if defined(__x86_64__)
    if (precision == Precision::BF16 && amx::usable())
        return attention_amx(q, ldq, k, ldk, v, ldv, out, ldo, Lq, Lk, heads, D, nullptr, &rel_pos);
#endif
    attention_packed(q, ldq, k, ldk, v, ldv, out, ldo, Lq, Lk, heads, D, precision,
                     rel_pos_score_bias(q, ldq, D, rel_pos));
}

}  // namespace splitseg
