// Mask outlines as polygons (COCO "segmentation" style): the outer boundary of every region and
// the boundaries of its holes, traced along pixel edges and simplified with Douglas-Peucker.
#pragma once

#include <cstdint>
#include <vector>

namespace splitseg {

// Each ring is a flat list x0, y0, x1, y1, ... of pixel-corner coordinates: outer outlines run
// clockwise on screen (y down), holes counter-clockwise. A region inside a hole is a region of
// its own. `tolerance` is the largest distance in pixels a dropped point may lie from the
// simplified outline.
struct MaskPolygon {
    std::vector<float> outer;
    std::vector<std::vector<float>> holes;
};
std::vector<MaskPolygon> mask_polygons(const uint8_t* mask, int width, int height,
                                       float tolerance = 1.0f);

}  // namespace splitseg
