#include "engine/dtype.h"

#include <bit>
#include <cstring>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace splitseg {

namespace {

struct DTypeInfo {
    DType type;
    const char* name;
    size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8},   {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType t) {
    return kDTypes[static_cast<int>(t)];
}

// Stored data need not be aligned for its type (zip records, bundle buffers): load by memcpy.
template <typename T, typename Fn>
void convert_each(const void* src, size_t n, float* dst, Fn to_float) {
    const auto* bytes = static_cast<const uint8_t*>(src);
    for (size_t i = 0; i < n; ++i) {
        T v;
        std::memcpy(&v, bytes + i * sizeof(T), sizeof(T));
        dst[i] = to_float(v);
    }
}

// Half to single is exact, so the hardware conversion (8 at a time) gives the same values as
// f16_to_f32 (NaN payloads come out quieted); it makes loading an f16 bundle ~10x faster.
void convert_f16(const void* src, size_t n, float* dst) {
    const auto* bytes = static_cast<const uint8_t*>(src);
    size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#endif
    convert_each<uint16_t>(bytes + 2 * i, n - i, dst + i, f16_to_f32);
}

template <typename T>
void convert_cast(const void* src, size_t n, float* dst) {
    convert_each<T>(src, n, dst, [](T v) { return static_cast<float>(v); });
}

}  // namespace

size_t dtype_size(DType t) {
    return info(t).size;
}

const char* dtype_name(DType t) {
    return info(t).name;
}

bool dtype_from_name(const std::string& name, DType* out) {
    for (const DTypeInfo& d : kDTypes) {
        if (name == d.name) {
            *out = d.type;
            return true;
        }
    }
    return false;
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24, exact in float32.
        const float v = static_cast<float>(mant) * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf, NaN
    return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

namespace {

// Shifts value right by shift bits, rounding to nearest, ties to even.
uint32_t shift_round_even(uint32_t value, uint32_t shift) {
    const uint32_t q = value >> shift;
    const uint32_t rem = value & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
}

}  // namespace

uint16_t f32_to_f16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return sign | 0x7e00 | ((ax >> 13) & 0x3ff);  // NaN stays a quiet NaN
    if (ax >= 0x477ff000) return sign | 0x7c00;                        // >= 65520 rounds to inf
    const uint32_t exp = ax >> 23;
    if (exp >= 113) {
        // Normal half: rebias the exponent; a mantissa carry correctly bumps the exponent.
        const uint32_t rebased = ((exp - 112) << 23) | (ax & 0x7fffff);
        return sign | static_cast<uint16_t>(shift_round_even(rebased, 13));
    }
    // Subnormal half (units of 2^-24), or zero when below half the smallest subnormal.
    const uint32_t shift = 126 - exp;
    if (shift > 24) return sign;
    const uint32_t mant = (ax & 0x7fffff) | 0x800000;
    return sign | static_cast<uint16_t>(shift_round_even(mant, shift));
}

uint16_t f32_to_bf16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
    return static_cast<uint16_t>(shift_round_even(x, 16));
}

void convert_to_f32(DType t, const void* src, size_t n, float* dst) {
    switch (t) {
        case DType::F32:
            if (n) std::memcpy(dst, src, n * sizeof(float));
            return;
        case DType::F16:
            return convert_f16(src, n, dst);
        case DType::BF16:
            return convert_each<uint16_t>(src, n, dst, bf16_to_f32);
        case DType::F64:
            return convert_cast<double>(src, n, dst);
        case DType::I64:
            return convert_cast<int64_t>(src, n, dst);
        case DType::I32:
            return convert_cast<int32_t>(src, n, dst);
        case DType::I16:
            return convert_cast<int16_t>(src, n, dst);
        case DType::I8:
            return convert_cast<int8_t>(src, n, dst);
        case DType::U8:
            return convert_cast<uint8_t>(src, n, dst);
        case DType::BOOL:
            convert_each<uint8_t>(src, n, dst, [](uint8_t v) { return v ? 1.0f : 0.0f; });
            return;
    }
}

}  // namespace splitseg
