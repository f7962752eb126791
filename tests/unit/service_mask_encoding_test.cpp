#include <gtest/gtest.h>

#include <random>

#include "service/mask_encoding.h"

namespace splitseg {
namespace {

TEST(CocoRle, CountsRunColumnMajorStartingWithBackground) {
    // 3 wide, 2 high: column-major the pixels are 0 0 | 1 0 | 1 1.
    const uint8_t mask[] = {0, 1, 1,  //
                            0, 0, 1};
    EXPECT_EQ(coco_rle_counts(mask, 3, 2), (std::vector<uint32_t>{2, 1, 1, 2}));
    const uint8_t full[] = {1, 1, 1, 1};
    EXPECT_EQ(coco_rle_counts(full, 2, 2), (std::vector<uint32_t>{0, 4}));
    const uint8_t empty[] = {0, 0, 0, 0};
    EXPECT_EQ(coco_rle_counts(empty, 2, 2), (std::vector<uint32_t>{4}));
}

TEST(CocoRle, StringMatchesPycocotoolsByHand) {
    EXPECT_EQ(coco_rle_string({4}), "4");
    EXPECT_EQ(coco_rle_string({0, 4}), "04");
    // The fourth run is stored as 2 - 1 = 1.
    EXPECT_EQ(coco_rle_string({2, 1, 1, 2}), "2111");
    // 100 = 3 * 32 + 4: low chunk 4 with the continuation bit (4 | 32) + 48 = 'T', then '3'.
    EXPECT_EQ(coco_rle_string({100}), "T3");
    // A negative difference: 2 - 5 = -3 is the chunk 29 ending at -1: 29 + 48 = 'M'.
    EXPECT_EQ(coco_rle_string({0, 5, 1, 2}), "051M");
}

// pycocotools' rleToString loop, one 5-bit group at a time: the reference for the encoder that
// writes two groups without a branch.
std::string rle_string_by_groups(const std::vector<uint32_t>& counts) {
    std::string out;
    for (size_t i = 0; i < counts.size(); ++i) {
        int64_t x = counts[i];
        if (i > 2) x -= counts[i - 2];
        for (bool more = true; more;) {
            int64_t c = x & 0x1f;
            x >>= 5;
            more = (c & 0x10) ? x != -1 : x != 0;
            out.push_back(static_cast<char>((more ? c | 0x20 : c) + 48));
        }
    }
    return out;
}

// Values of every group count (1 to 7, differences of either sign) against the reference.
TEST(CocoRle, StringMatchesTheGroupByGroupEncoderOnValuesOfEveryWidth) {
    std::mt19937 rng(3);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<uint32_t> counts(1 + rng() % 40);
        for (uint32_t& c : counts) c = static_cast<uint32_t>(rng() >> (rng() % 32));
        EXPECT_EQ(coco_rle_string(counts), rle_string_by_groups(counts)) << trial;
    }
    for (uint32_t v : {0u, 15u, 16u, 511u, 512u, 16383u, 16384u, 0xFFFFFFFFu}) {
        const std::vector<uint32_t> counts = {v, 0, 0, v, 0xFFFFFFFFu, v};
        EXPECT_EQ(coco_rle_string(counts), rle_string_by_groups(counts)) << v;
    }
    EXPECT_EQ(coco_rle_string({}), "");
}

// Long run sequences as masks make them (runs of 1 to a few hundred, the 16-value vector path),
// with here and there a run whose difference needs five groups or more, or one of 2^31 pixels
// and more (those blocks go value by value), at every offset against the 16-value steps.
TEST(CocoRle, StringMatchesTheGroupByGroupEncoderOnLongMaskLikeRuns) {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 100; ++trial) {
        std::vector<uint32_t> counts(3 + rng() % 300);
        for (uint32_t& c : counts) {
            const uint32_t kind = rng() % 100;
            c = kind < 90   ? 1 + rng() % 40
                : kind < 97 ? rng() % 2000
                : kind < 99 ? rng() % (1u << 22)
                            : 0x80000000u + rng() % 1000;
        }
        EXPECT_EQ(coco_rle_string(counts), rle_string_by_groups(counts)) << trial;
    }
}

TEST(MaskExtent, BoxAndAreaOfTheInsidePixels) {
    const uint8_t mask[] = {0, 0, 0, 0,  //
                            0, 1, 1, 0,  //
                            0, 0, 1, 0};
    const MaskExtent e = mask_extent(mask, 4, 3);
    EXPECT_EQ(e.area, 3);
    EXPECT_EQ(e.bbox, (std::array<int, 4>{1, 1, 2, 2}));
    const uint8_t none[] = {0, 0};
    EXPECT_EQ(mask_extent(none, 2, 1).area, 0);
    EXPECT_EQ(mask_extent(none, 2, 1).bbox, (std::array<int, 4>{0, 0, 0, 0}));
}

// Pixel by pixel, as the definition reads: the reference for the row-boundary and memchr-based
// encoders.
std::vector<uint32_t> naive_runs(const std::vector<uint8_t>& mask, int w, int h,
                                 bool column_major) {
    std::vector<uint32_t> counts;
    bool current = false;
    uint32_t run = 0;
    for (int o = 0; o < (column_major ? w : h); ++o)
        for (int i = 0; i < (column_major ? h : w); ++i) {
            const bool v = mask[column_major ? i * w + o : o * w + i] != 0;
            if (v != current) {
                counts.push_back(run);
                run = 0;
                current = v;
            }
            ++run;
        }
    counts.push_back(run);
    return counts;
}

// Shapes as masks are (a disc with a hole, an object touching the image's edges, single lines),
// where the column-major encoder finds the runs from the boundaries between rows.
TEST(CocoRle, RunLengthsMatchAPixelWalkOnShapes) {
    auto check = [](int w, int h, auto inside) {
        std::vector<uint8_t> mask(static_cast<size_t>(w) * h);
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) mask[static_cast<size_t>(y) * w + x] = inside(x, y) ? 1 : 0;
        for (bool column_major : {true, false})
            EXPECT_EQ(run_lengths(mask.data(), w, h, column_major),
                      naive_runs(mask, w, h, column_major))
                << w << "x" << h << " column-major " << column_major;
    };
    check(1024, 768, [](int x, int y) {
        const int r2 = (x - 500) * (x - 500) + (y - 380) * (y - 380);
        return r2 < 300 * 300 && r2 > 40 * 40;
    });
    check(1024, 768, [](int x, int y) { return x < 200 || y > 700 || (x + y) % 97 == 0; });
    check(7, 1, [](int x, int) { return x % 3 == 0; });
    check(1, 7, [](int, int y) { return y % 3 != 0; });
}

// Sizes across the 64-byte row blocks, noise of every density, values 1 and 255 both "inside".
TEST(CocoRle, RunLengthsMatchAPixelWalkOnRandomMasks) {
    std::mt19937 rng(7);
    for (auto [w, h] : {std::pair{1, 1}, {130, 70}, {64, 64}, {65, 129}, {300, 3}}) {
        for (double density : {0.0, 0.02, 0.5, 0.98, 1.0}) {
            std::bernoulli_distribution inside(density);
            std::vector<uint8_t> mask(static_cast<size_t>(w) * h);
            for (uint8_t& v : mask) v = inside(rng) ? (rng() % 2 ? 1 : 255) : 0;
            for (bool column_major : {true, false}) {
                EXPECT_EQ(run_lengths(mask.data(), w, h, column_major),
                          naive_runs(mask, w, h, column_major))
                    << w << "x" << h << " density " << density << " column-major " << column_major;
            }
            int64_t area = 0;
            int x0 = w, y0 = h, x1 = -1, y1 = -1;
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    if (mask[y * w + x]) {
                        ++area;
                        x0 = std::min(x0, x), x1 = std::max(x1, x);
                        y0 = std::min(y0, y), y1 = std::max(y1, y);
                    }
            const MaskExtent e = mask_extent(mask.data(), w, h);
            EXPECT_EQ(e.area, area);
            if (area) {
                EXPECT_EQ(e.bbox, (std::array<int, 4>{x0, y0, x1 - x0 + 1, y1 - y0 + 1}));
            }
        }
    }
}

}  // namespace
}  // namespace splitseg
