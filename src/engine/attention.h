// Attention over long sequences (the image encoders' global blocks: 4096 tokens attending to
// 4096). Each head's keys and values are packed once into oneDNN's blocked layout, rounded to
// bf16 where asked, and every block of queries runs its two products against those packed
// matrices; ops.h's attention() re-packs them for every block instead, which is right for the
// short sequences of windows and the prompt decoder.
#pragma once

#include <cstdint>

#include "engine/linear.h"
#include "engine/ops.h"

namespace splitseg {

// Same contract as attention() in ops.h: q [Lq, heads*D] (row stride ldq), k and v
// [Lk, heads*D] (ldk, ldv), out [Lq, heads*D] (ldo), scores scaled by 1/sqrt(D), `bias` added to
// each block of scores before the softmax. With Precision::BF16 the products take bf16 inputs
// (accumulating in f32); scores, softmax and output stay f32.
void attention_packed(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,
                      int64_t ldv, float* out, int64_t ldo, int64_t Lq, int64_t Lk, int heads,
                      int64_t D, Precision precision, const ScoreBias& bias = nullptr);

}  // namespace splitseg
