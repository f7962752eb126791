// Attention over long sequences (the image encoders' global blocks: 4096 tokens attending to
// 4096). Each head's keys and values are packed once, into oneDNN's blocked layout or, in bf16
// where the CPU has AMX, into its tiles' layout, and every block of queries runs its two
// products against those packed matrices; ops.h's attention() re-packs them for every block
// instead, which is right for the short sequences of windows and the prompt decoder.
#pragma once

#include <cstdint>

#include "engine/linear.h"
#include "engine/ops.h"

namespace splitseg {

// Decomposed relative positions (MViTv2; SAM's add_decomposed_rel_pos) for attention within an
// S x S grid of tokens (a window, or the whole image): the score of query q at (qy, qx) and key
// at (ky, kx) gains q . rel_h[qy - ky + S - 1] + q . rel_w[qx - kx + S - 1], q unscaled.
// rel_h and rel_w are [2S - 1, D].
struct RelPos {
    const float* rel_h = nullptr;
    const float* rel_w = nullptr;
    int64_t S = 0;
};

// That bias as a ScoreBias for attention(), queries q [S * S, heads * D] (rows ldq apart). One
// small product per table gives a block of queries against every offset at once, so the
// [L, L] bias is never formed.
ScoreBias rel_pos_score_bias(const float* q, int64_t ldq, int64_t D, const RelPos& rel);

// Same contract as attention() in ops.h: q [Lq, heads*D] (row stride ldq), k and v
// [Lk, heads*D] (ldk, ldv), out [Lq, heads*D] (ldo), scores scaled by 1/sqrt(D), `bias` added to
// each block of scores before the softmax. With Precision::BF16 the products take bf16 inputs
// (accumulating in f32); scores, softmax and output stay f32.
void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads,
                      int64_t D, Precision precision, const ScoreBias& bias = nullptr);
// The same with relative positions over an S x S grid of keys (Lk = S * S), the queries the
// grid's first Lq tokens: in bf16 on AMX, the bias terms of a query are formed once and added
// inside the softmax.
void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int heads, int64_t D,
                      Precision precision, const RelPos& rel_pos);

}  // namespace splitseg
