#include "service/mask_encoding.h"

#include <algorithm>

namespace splitseg {

std::vector<uint32_t> run_lengths(const uint8_t* mask, int width, int height, bool column_major) {
    std::vector<uint32_t> counts;
    uint8_t current = 0;  // runs alternate, starting with background
    uint32_t run = 0;
    const int outer = column_major ? width : height, inner = column_major ? height : width;
    for (int o = 0; o < outer; ++o) {
        for (int i = 0; i < inner; ++i) {
            const size_t at = column_major ? static_cast<size_t>(i) * width + o
                                           : static_cast<size_t>(o) * width + i;
            const uint8_t v = mask[at] ? 1 : 0;
            if (v != current) {
                counts.push_back(run);
                run = 0;
                current = v;
            }
            ++run;
        }
    }
    counts.push_back(run);
    return counts;
}

std::vector<uint32_t> coco_rle_counts(const uint8_t* mask, int width, int height) {
    return run_lengths(mask, width, height, true);
}

std::string coco_rle_string(const std::vector<uint32_t>& counts) {
    std::string out;
    for (size_t i = 0; i < counts.size(); ++i) {
        // Runs after the third are stored as the difference to the run two before (i > 2 is
        // pycocotools' own condition, kept for byte-identical strings).
        int64_t x = counts[i];
        if (i > 2) x -= counts[i - 2];
        bool more = true;
        while (more) {
            int64_t c = x & 0x1f;
            x >>= 5;  // arithmetic shift: negative differences end at -1
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            out.push_back(static_cast<char>(c + 48));
        }
    }
    return out;
}

MaskExtent mask_extent(const uint8_t* mask, int width, int height) {
    MaskExtent e;
    int x0 = width, y0 = height, x1 = -1, y1 = -1;
    for (int y = 0; y < height; ++y) {
        const uint8_t* row = mask + static_cast<size_t>(y) * width;
        for (int x = 0; x < width; ++x) {
            if (!row[x]) continue;
            ++e.area;
            x0 = std::min(x0, x);
            x1 = std::max(x1, x);
            y0 = std::min(y0, y);
            y1 = std::max(y1, y);
        }
    }
    if (e.area) e.bbox = {x0, y0, x1 - x0 + 1, y1 - y0 + 1};
    return e;
}

}  // namespace splitseg
