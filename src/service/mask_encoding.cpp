#include "service/mask_encoding.h"

#include <algorithm>
#include <cstring>

namespace splitseg {

// The mask as 0/1 bytes in the order of its runs: copied, or transposed in tiles (a column walk
// of the row-major mask would miss the cache on every pixel).
static std::vector<uint8_t> bits_in_run_order(const uint8_t* mask, int width, int height,
                                              bool column_major) {
    const size_t w = static_cast<size_t>(width), h = static_cast<size_t>(height);
    std::vector<uint8_t> bits(w * h);
    if (!column_major) {
        for (size_t i = 0; i < bits.size(); ++i) bits[i] = mask[i] != 0;
        return bits;
    }
    constexpr size_t kTile = 64;
    for (size_t y0 = 0; y0 < h; y0 += kTile)
        for (size_t x0 = 0; x0 < w; x0 += kTile)
            for (size_t x = x0; x < std::min(x0 + kTile, w); ++x)
                for (size_t y = y0; y < std::min(y0 + kTile, h); ++y)
                    bits[x * h + y] = mask[y * w + x] != 0;
    return bits;
}

std::vector<uint32_t> run_lengths(const uint8_t* mask, int width, int height, bool column_major) {
    const std::vector<uint8_t> bits = bits_in_run_order(mask, width, height, column_major);
    std::vector<uint32_t> counts;
    const uint8_t *at = bits.data(), *end = at + bits.size();
    uint8_t current = 0;  // runs alternate, starting with background
    for (;;) {  // each run ends at the next byte of the other value (memchr is vectorised)
        const void* change = std::memchr(at, current ^ 1, static_cast<size_t>(end - at));
        const uint8_t* run_end = change ? static_cast<const uint8_t*>(change) : end;
        counts.push_back(static_cast<uint32_t>(run_end - at));
        if (run_end == end) return counts;
        at = run_end;
        current ^= 1;
    }
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
        int64_t count = 0;  // branch-free, so that it vectorises
        for (int x = 0; x < width; ++x) count += row[x] != 0;
        if (!count) continue;
        e.area += count;
        int first = 0, last = width - 1;
        while (!row[first]) ++first;
        while (!row[last]) --last;
        x0 = std::min(x0, first);
        x1 = std::max(x1, last);
        y0 = std::min(y0, y);
        y1 = y;
    }
    if (e.area) e.bbox = {x0, y0, x1 - x0 + 1, y1 - y0 + 1};
    return e;
}

}  // namespace splitseg
