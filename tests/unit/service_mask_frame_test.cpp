#include <gtest/gtest.h>

#include <stdexcept>

#include "service/mask_frame.h"

namespace splitseg {
namespace {

uint32_t u32_at(const std::string& f, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(static_cast<uint8_t>(f[at + i])) << (8 * i);
    return v;
}

TEST(MaskFrame, HeaderIsLittleEndianAndBitmapBitsAreRowMajorLsbFirst) {
    // 3 wide, 2 high; row-major pixels 1, 2 and 5 inside: 6 bits fit one byte, fewer than runs.
    const uint8_t mask[] = {0, 1, 1,  //
                            0, 0, 1};
    const std::string f = encode_mask_frame(mask, 3, 2, 4, 0x01020304);
    ASSERT_EQ(f.size(), kMaskFrameHeaderBytes + 1);
    EXPECT_EQ(f.substr(0, 4), "SSMK");
    EXPECT_EQ(u32_at(f, 4), 1u | (2u << 16));  // version 1, encoding 2 (bitmap)
    EXPECT_EQ(u32_at(f, 8), 0x01020304u);
    EXPECT_EQ(u32_at(f, 12), 4u);
    EXPECT_EQ(u32_at(f, 16), 3u);
    EXPECT_EQ(u32_at(f, 20), 2u);
    EXPECT_EQ(u32_at(f, 24), 1u);
    EXPECT_EQ(u32_at(f, 28), 0u);
    EXPECT_EQ(static_cast<uint8_t>(f[32]), 0b00100110);
}

TEST(MaskFrame, ABlobGoesAsRowRunsStartingOutside) {
    // 128 x 1 with pixels 8..39 inside: 3 runs (12 bytes) beat a 16-byte bitmap.
    std::vector<uint8_t> mask(128, 0);
    std::fill(mask.begin() + 8, mask.begin() + 40, 1);
    const std::string f = encode_mask_frame(mask.data(), 128, 1, 0, 0);
    ASSERT_EQ(f.size(), kMaskFrameHeaderBytes + 12);
    EXPECT_EQ(u32_at(f, 4) >> 16, 1u);  // row runs
    EXPECT_EQ(u32_at(f, 32), 8u);
    EXPECT_EQ(u32_at(f, 36), 32u);
    EXPECT_EQ(u32_at(f, 40), 88u);
    // A mask that starts inside has an empty first run.
    std::vector<uint8_t> full(256, 1);
    const std::string g = encode_mask_frame(full.data(), 16, 16, 0, 0);
    EXPECT_EQ(u32_at(g, 32), 0u);
    EXPECT_EQ(u32_at(g, 36), 256u);
}

TEST(MaskFrame, RoundTripsBlobsAndRaggedMasks) {
    const int w = 64, h = 48;
    std::vector<uint8_t> blob(w * h, 0), checker(w * h, 0);
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            blob[y * w + x] = (x - 30) * (x - 30) + (y - 20) * (y - 20) < 150 ? 255 : 0;
            checker[y * w + x] = (x + y) % 2;
        }
    }
    for (const auto& [mask, encoding] : {std::pair{blob, MaskFrameEncoding::row_runs_u32},
                                         std::pair{checker, MaskFrameEncoding::bitmap_1bit}}) {
        const std::string f = encode_mask_frame(mask.data(), w, h, 2, 9);
        EXPECT_LE(f.size(), kMaskFrameHeaderBytes + w * h / 8);
        const MaskFrame back = decode_mask_frame(f);
        EXPECT_EQ(back.encoding, encoding);
        EXPECT_EQ(back.width, w);
        EXPECT_EQ(back.height, h);
        EXPECT_EQ(back.mask_index, 2u);
        EXPECT_EQ(back.sequence, 9u);
        for (int i = 0; i < w * h; ++i) ASSERT_EQ(back.mask[i], mask[i] ? 1 : 0) << i;
    }
}

TEST(MaskFrame, SequenceCanBeRestamped) {
    const uint8_t mask[] = {1, 0, 0, 1};
    std::string f = encode_mask_frame(mask, 2, 2, 0, 1);
    set_mask_frame_sequence(f, 77);
    EXPECT_EQ(decode_mask_frame(f).sequence, 77u);
}

TEST(MaskFrame, MalformedFramesAreRefused) {
    std::vector<uint8_t> mask(128, 0);
    std::fill(mask.begin() + 8, mask.begin() + 40, 1);
    const std::string good = encode_mask_frame(mask.data(), 128, 1, 0, 0);
    auto with = [&](size_t at, uint8_t byte) {
        std::string f = good;
        f[at] = static_cast<char>(byte);
        return f;
    };
    EXPECT_THROW(decode_mask_frame(good.substr(0, 20)), std::invalid_argument);  // truncated
    EXPECT_THROW(decode_mask_frame(good.substr(0, 40)), std::invalid_argument);  // short payload
    EXPECT_THROW(decode_mask_frame(with(0, 'X')), std::invalid_argument);        // magic
    EXPECT_THROW(decode_mask_frame(with(4, 2)), std::invalid_argument);          // version
    EXPECT_THROW(decode_mask_frame(with(6, 9)), std::invalid_argument);          // encoding
    EXPECT_THROW(decode_mask_frame(with(40, 89)), std::invalid_argument);        // over
    EXPECT_THROW(decode_mask_frame(with(40, 87)), std::invalid_argument);        // under
    EXPECT_THROW(decode_mask_frame(with(36, 0xff)), std::invalid_argument);      // huge run
}

}  // namespace
}  // namespace splitseg
