#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/onednn.h"

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

}  // namespace

void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads,
                      int64_t D, Precision precision, const ScoreBias& bias) {
    if (Lq == 0) return;
    const bool bf16 = precision == Precision::BF16;
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
            if (bias) bias(h, q0, q0 + n, scores.data());
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

}  // namespace splitseg
