// Mask outputs for the API: COCO run-length encoding (as pycocotools writes it), bounding boxes
// (binary payloads go out as base64: store/crypto.h).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace splitseg {

// Run lengths of a binary mask, alternating outside/inside and starting with a run of zeros
// (possibly empty), over its pixels in column-major order (pycocotools') or row-major order (a
// canvas' ImageData). `mask` is row-major, width * height bytes, non-zero = inside.
std::vector<uint32_t> run_lengths(const uint8_t* mask, int width, int height, bool column_major);
// The COCO RLE counts: run_lengths in column-major order.
std::vector<uint32_t> coco_rle_counts(const uint8_t* mask, int width, int height);
// pycocotools' compressed string form of run lengths (rleToString).
std::string coco_rle_string(const std::vector<uint32_t>& counts);

struct MaskExtent {
    std::array<int, 4> bbox{0, 0, 0, 0};  // x, y, w, h (COCO); all zero for an empty mask
    int64_t area = 0;                     // pixels inside
};
MaskExtent mask_extent(const uint8_t* mask, int width, int height);

}  // namespace splitseg
