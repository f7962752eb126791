#include <gtest/gtest.h>

#include "service/mask_polygon.h"

namespace splitseg {
namespace {

using Ring = std::vector<float>;

std::vector<Ring> outers(const std::vector<MaskPolygon>& polygons) {
    std::vector<Ring> out;
    for (const MaskPolygon& p : polygons) out.push_back(p.outer);
    return out;
}

TEST(MaskPolygons, OnePixelIsItsFourCornersClockwise) {
    const uint8_t mask[] = {0, 0, 0,  //
                            0, 1, 0,  //
                            0, 0, 0};
    const auto polygons = mask_polygons(mask, 3, 3);
    EXPECT_EQ(outers(polygons), (std::vector<Ring>{{1, 1, 2, 1, 2, 2, 1, 2}}));
    EXPECT_TRUE(polygons[0].holes.empty());
}

TEST(MaskPolygons, EachRegionHasItsOuterOutline) {
    const uint8_t two[] = {1, 0, 0, 1};
    EXPECT_EQ(outers(mask_polygons(two, 4, 1)),
              (std::vector<Ring>{{0, 0, 1, 0, 1, 1, 0, 1}, {3, 0, 4, 0, 4, 1, 3, 1}}));
    const uint8_t none[] = {0, 0};
    EXPECT_TRUE(mask_polygons(none, 2, 1).empty());
}

TEST(MaskPolygons, HolesBelongToTheOutlineAroundThem) {
    const uint8_t ring[] = {1, 1, 1,  //
                            1, 0, 1,  //
                            1, 1, 1};
    const auto polygons = mask_polygons(ring, 3, 3);
    ASSERT_EQ(polygons.size(), 1u);
    EXPECT_EQ(polygons[0].outer, (Ring{0, 0, 3, 0, 3, 3, 0, 3}));
    // The hole is the middle pixel, traced counter-clockwise.
    ASSERT_EQ(polygons[0].holes.size(), 1u);
    EXPECT_EQ(polygons[0].holes[0], (Ring{1, 1, 1, 2, 2, 2, 2, 1}));
}

TEST(MaskPolygons, AnIslandInAHoleIsARegionOfItsOwn) {
    // A 7x7 frame with a 5x5 hole holding a 1-pixel island, and a separate frame beside it.
    std::vector<uint8_t> mask(12 * 7, 0);
    auto set = [&](int x, int y) { mask[y * 12 + x] = 1; };
    for (int i = 0; i < 7; ++i) set(i, 0), set(i, 6), set(0, i), set(6, i);
    set(3, 3);
    for (int y = 2; y < 5; ++y)
        for (int x = 8; x < 11; ++x)
            if (!(x == 9 && y == 3)) set(x, y);
    const auto polygons = mask_polygons(mask.data(), 12, 7, 0.0f);
    ASSERT_EQ(polygons.size(), 3u);
    size_t with_holes = 0;
    for (const MaskPolygon& p : polygons) {
        with_holes += !p.holes.empty();
        for (const Ring& hole : p.holes) {
            // Every hole lies inside its own outline's bounding box.
            float x0 = 1e9, x1 = -1, hx0 = 1e9, hx1 = -1;
            for (size_t i = 0; i < p.outer.size(); i += 2)
                x0 = std::min(x0, p.outer[i]), x1 = std::max(x1, p.outer[i]);
            for (size_t i = 0; i < hole.size(); i += 2)
                hx0 = std::min(hx0, hole[i]), hx1 = std::max(hx1, hole[i]);
            EXPECT_GT(hx0, x0);
            EXPECT_LT(hx1, x1);
        }
    }
    EXPECT_EQ(with_holes, 2u);  // both frames; the island has none
    EXPECT_EQ(polygons[0].outer, (Ring{0, 0, 7, 0, 7, 7, 0, 7}));
    ASSERT_EQ(polygons[0].holes.size(), 1u);
    EXPECT_EQ(polygons[0].holes[0], (Ring{1, 1, 1, 6, 6, 6, 6, 1}));
}

TEST(MaskPolygons, SimplifiesStaircases) {
    // A 20x20 triangle below the diagonal: 40 staircase corners plus (0, 0) and (0, 20).
    std::vector<uint8_t> mask(20 * 20);
    for (int y = 0; y < 20; ++y)
        for (int x = 0; x <= y; ++x) mask[y * 20 + x] = 1;
    const auto exact = mask_polygons(mask.data(), 20, 20, 0.0f);
    const auto simple = mask_polygons(mask.data(), 20, 20, 1.0f);
    ASSERT_EQ(exact.size(), 1u);
    ASSERT_EQ(simple.size(), 1u);
    EXPECT_EQ(exact[0].outer.size(), 2u * 42);
    EXPECT_LE(simple[0].outer.size(), 2u * 4);
}

}  // namespace
}  // namespace splitseg
