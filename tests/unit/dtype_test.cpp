// Conversions between float32 and the 16-bit float formats: exact, round to nearest even.
#include "engine/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace splitseg {
namespace {

float bits_f32(uint32_t b) {
    return std::bit_cast<float>(b);
}
uint32_t f32_bits(float f) {
    return std::bit_cast<uint32_t>(f);
}

TEST(DType, NamesAndSizesRoundTrip) {
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32,
                    DType::I16, DType::I8, DType::U8, DType::BOOL}) {
        DType back{};
        ASSERT_TRUE(dtype_from_name(dtype_name(t), &back));
        EXPECT_EQ(back, t);
    }
    EXPECT_EQ(dtype_size(DType::BF16), 2u);
    EXPECT_EQ(dtype_size(DType::I64), 8u);
    DType unused{};
    EXPECT_FALSE(dtype_from_name("F8_E4M3", &unused));
}

// Every half converts to the float of the same value and back to the same bits.
TEST(DType, HalfRoundTripsEveryValue) {
    for (uint32_t h = 0; h <= 0xffff; ++h) {
        const float f = f16_to_f32(static_cast<uint16_t>(h));
        const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            EXPECT_TRUE(std::isnan(f)) << h;
            EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f)))) << h;
        } else {
            EXPECT_EQ(f32_to_f16(f), h) << h;
        }
    }
    EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
    EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
    EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
    EXPECT_EQ(f32_bits(f16_to_f32(0x8000)), 0x80000000u);  // -0
}

// Between every two neighbouring positive halves: the midpoint rounds to the even one, and the
// floats just below and above it round down and up.
TEST(DType, HalfRoundsToNearestEven) {
    for (uint16_t h = 0; h < 0x7bff; ++h) {  // 0x7bff, the largest: its upper neighbour is inf
        const float lo = f16_to_f32(h), hi = f16_to_f32(static_cast<uint16_t>(h + 1));
        const float mid = (lo + hi) / 2;  // exact: needs 12 significant bits
        const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : h;
        ASSERT_EQ(f32_to_f16(mid), even) << h;
        ASSERT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << h;
        ASSERT_EQ(f32_to_f16(std::nextafter(mid, hi)), h + 1) << h;
        ASSERT_EQ(f32_to_f16(-mid), even | 0x8000) << h;
    }
    EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie above the largest half goes to inf
    EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
    EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24
    EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
    EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
    EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
    EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
    const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(nan & 0x7c00, 0x7c00);
    EXPECT_NE(nan & 0x3ff, 0);
    EXPECT_NE(f32_to_f16(bits_f32(0x7f800001)) & 0x3ff, 0);  // a signalling NaN stays NaN
}

TEST(DType, Bfloat16RoundTripsAndRoundsToNearestEven) {
    for (uint32_t b = 0; b <= 0xffff; ++b) {
        const float f = bf16_to_f32(static_cast<uint16_t>(b));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f)))) << b;
            continue;
        }
        ASSERT_EQ(f32_to_bf16(f), b) << b;
        if ((b & 0x7fff) >= 0x7f80) continue;  // inf: no upper neighbour
        // The midpoint to the next bf16 (away from zero), and its neighbours.
        const uint32_t mid = (b << 16) | 0x8000;
        const uint16_t even = (b & 1) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b);
        ASSERT_EQ(f32_to_bf16(bits_f32(mid)), even) << b;
        ASSERT_EQ(f32_to_bf16(bits_f32(mid - 1)), b) << b;
        ASSERT_EQ(f32_to_bf16(bits_f32(mid + 1)), b + 1) << b;
    }
    EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
    EXPECT_EQ(f32_to_bf16(bits_f32(0x7f800001)) & 0x7f80, 0x7f80);
    EXPECT_NE(f32_to_bf16(bits_f32(0x7f800001)) & 0x7f, 0);  // NaN stays NaN, not inf
}

TEST(DType, ConvertsEveryTypeToFloat) {
    float out[3];
    const double f64[] = {1.5, -1e300, 1e-3};
    convert_to_f32(DType::F64, f64, 3, out);
    EXPECT_EQ(out[0], 1.5f);
    EXPECT_EQ(out[1], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(out[2], 1e-3f);
    const int32_t i32[] = {-7, 16777217, 0};
    convert_to_f32(DType::I32, i32, 3, out);
    EXPECT_EQ(out[0], -7.0f);
    EXPECT_EQ(out[1], 16777216.0f);
    const int16_t i16[] = {-300, 300, 0};
    convert_to_f32(DType::I16, i16, 3, out);
    EXPECT_EQ(out[0], -300.0f);
    const int8_t i8[] = {-128, 127, 0};
    convert_to_f32(DType::I8, i8, 3, out);
    EXPECT_EQ(out[0], -128.0f);
    const uint8_t u8[] = {255, 0, 2};
    convert_to_f32(DType::U8, u8, 3, out);
    EXPECT_EQ(out[0], 255.0f);
    convert_to_f32(DType::BOOL, u8, 3, out);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], 0.0f);
    EXPECT_EQ(out[2], 1.0f);
    // Unaligned source: stored tensors need not be aligned for their type.
    alignas(8) uint8_t buf[13] = {};
    const float one = 1.0f;
    std::memcpy(buf + 1, &one, 4);
    convert_to_f32(DType::F32, buf + 1, 1, out);
    EXPECT_EQ(out[0], 1.0f);
}

TEST(DType, BulkF16ConversionMatchesScalarForEveryValue) {
    // convert_to_f32 converts 8 halves at a time in hardware where it can; every one of the
    // 65536 values (unaligned, with a tail that is not a multiple of 8) must agree with
    // f16_to_f32, NaNs as NaNs.
    std::vector<uint8_t> bytes(1 + 2 * 65536 + 2 * 5);
    for (uint32_t v = 0; v < 65536 + 5; ++v) {
        const uint16_t h = static_cast<uint16_t>(v);
        std::memcpy(bytes.data() + 1 + 2 * v, &h, 2);
    }
    std::vector<float> out(65536 + 5);
    convert_to_f32(DType::F16, bytes.data() + 1, out.size(), out.data());
    for (uint32_t v = 0; v < out.size(); ++v) {
        const float want = f16_to_f32(static_cast<uint16_t>(v));
        if (std::isnan(want))
            EXPECT_TRUE(std::isnan(out[v])) << v;
        else
            EXPECT_EQ(std::memcmp(&out[v], &want, 4), 0) << v;  // bitwise: keeps -0.0
    }
}

}  // namespace
}  // namespace splitseg
