#include <gtest/gtest.h>

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

}  // namespace
}  // namespace splitseg
