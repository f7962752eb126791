// Element types of stored tensors (checkpoints, bundles) and conversions to float32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

namespace splitseg {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "F16", "BF16", ...
bool dtype_from_name(const std::string& name, DType* out);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);   // round to nearest even
uint16_t f32_to_bf16(float f);  // round to nearest even
// Inline, so that loops of it vectorise.
inline float bf16_to_f32(uint16_t b) {
    return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// f32_to_bf16 for values known to be finite (activations, probabilities): branch-free, so loops
// of it vectorise.
inline uint16_t f32_to_bf16_finite(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

// Converts n elements of type t at src to float32 (integers and bools by value).
void convert_to_f32(DType t, const void* src, size_t n, float* dst);

}  // namespace splitseg
