// Mask outlines as polygons (COCO "segmentation" style): the outer boundary of every region,
// traced along pixel edges and simplified with Douglas-Peucker.
#pragma once

#include <cstdint>
#include <vector>

namespace splitseg {

// Each polygon is a flat list x0, y0, x1, y1, ... of pixel-corner coordinates, clockwise on
// screen (y down). Holes are not reported. `tolerance` is the largest distance in pixels a
// dropped point may lie from the simplified outline.
std::vector<std::vector<float>> mask_polygons(const uint8_t* mask, int width, int height,
                                              float tolerance = 1.0f);

}  // namespace splitseg
