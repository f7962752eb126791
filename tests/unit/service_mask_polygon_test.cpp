#include <gtest/gtest.h>

#include "service/mask_polygon.h"

namespace splitseg {
namespace {

using Polygons = std::vector<std::vector<float>>;

TEST(MaskPolygons, OnePixelIsItsFourCornersClockwise) {
    const uint8_t mask[] = {0, 0, 0,  //
                            0, 1, 0,  //
                            0, 0, 0};
    EXPECT_EQ(mask_polygons(mask, 3, 3), (Polygons{{1, 1, 2, 1, 2, 2, 1, 2}}));
}

TEST(MaskPolygons, EachRegionHasItsOuterOutlineAndHolesAreLeftOut) {
    const uint8_t ring[] = {1, 1, 1,  //
                            1, 0, 1,  //
                            1, 1, 1};
    EXPECT_EQ(mask_polygons(ring, 3, 3), (Polygons{{0, 0, 3, 0, 3, 3, 0, 3}}));
    const uint8_t two[] = {1, 0, 0, 1};
    EXPECT_EQ(mask_polygons(two, 4, 1),
              (Polygons{{0, 0, 1, 0, 1, 1, 0, 1}, {3, 0, 4, 0, 4, 1, 3, 1}}));
    const uint8_t none[] = {0, 0};
    EXPECT_TRUE(mask_polygons(none, 2, 1).empty());
}

TEST(MaskPolygons, SimplifiesStaircases) {
    // A 20x20 triangle below the diagonal: 40 staircase corners plus (0, 0) and (0, 20).
    std::vector<uint8_t> mask(20 * 20);
    for (int y = 0; y < 20; ++y)
        for (int x = 0; x <= y; ++x) mask[y * 20 + x] = 1;
    const Polygons exact = mask_polygons(mask.data(), 20, 20, 0.0f);
    const Polygons simple = mask_polygons(mask.data(), 20, 20, 1.0f);
    ASSERT_EQ(exact.size(), 1u);
    ASSERT_EQ(simple.size(), 1u);
    EXPECT_EQ(exact[0].size(), 2u * 42);
    EXPECT_LE(simple[0].size(), 2u * 4);
}

}  // namespace
}  // namespace splitseg
