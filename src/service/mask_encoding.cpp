#include "service/mask_encoding.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#ifdef __AVX512VBMI2__
#include "engine/x86_simd.h"
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace splitseg {

static_assert(std::endian::native == std::endian::little, "byte i of a word is bits 8i..8i+7");

// 1 in each byte of v that is not 0, else 0.
static inline uint64_t nonzero_bytes(uint64_t v) {
    constexpr uint64_t low7 = 0x7F7F7F7F7F7F7F7FULL;
    return ((v | ((v & low7) + low7)) & ~low7) >> 7;
}

#ifdef __AVX512VBMI2__
// The run ends in bytes [i, i + 64) of bits (i >= 1) at out, as runs_of_bits records them;
// returns out past them, having written up to 16 entries past that. The 64 bytes against the
// 64 before them by one give the ends as a bit mask; a byte compress packs their offsets, which
// widen to positions 16 at a time: no loop over the ends (a textured mask has ~7 a block).
static uint32_t* ends_in64(const uint8_t* bits, size_t i, uint32_t* out) {
    const __mmask64 d =
        _mm512_cmpneq_epi8_mask(_mm512_loadu_si512(bits + i), _mm512_loadu_si512(bits + i - 1));
    if (!d) return out;
    alignas(64) static constexpr uint8_t kOffsets[64] = {
        0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
        44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
    const __m512i packed = _mm512_maskz_compress_epi8(d, _mm512_load_si512(kOffsets));
    const __m512i base = _mm512_set1_epi32(static_cast<int>(i));
    const int count = std::popcount(d);
    auto widen = [&](__m128i offsets, int k) {
        _mm512_storeu_si512(out + k, _mm512_add_epi32(base, _mm512_cvtepu8_epi32(offsets)));
    };
    widen(_mm512_castsi512_si128(packed), 0);
    if (count > 16) widen(_mm512_extracti32x4_epi32(packed, 1), 16);
    if (count > 32) widen(_mm512_extracti32x4_epi32(packed, 2), 32);
    if (count > 48) widen(_mm512_extracti32x4_epi32(packed, 3), 48);
    return out + count;
}
#endif

// The runs of 0/1 bytes, starting with a run of zeros (possibly empty). Eight bytes at a time:
// each byte XOR the one before it is 1 where a run ends. The ends in a word are written without
// a branch per end (a textured mask has one in most words, at no predictable place): four
// always, four more when the word has more, and the output advances by their count.
static std::vector<uint32_t> runs_of_bits(const uint8_t* bits, size_t n) {
    // At most one end per byte, the last, and 16 written ahead; left uninitialised, so that only
    // the pages the ends reach are touched (a texture's ~10^5 of 786,432 for 1024 x 768).
    const std::unique_ptr<uint32_t[]> ends(new uint32_t[n + 17]);
    uint32_t* out = ends.get();
    uint64_t last = 0;  // the byte before word i, in the top byte
    auto ends_in = [&](uint64_t word, size_t at) {
        uint64_t d = word ^ ((word << 8) | (last >> 56));
        last = word;
        const int count = std::popcount(d);
        auto next_end = [&] {  // the byte of d's lowest bit, which it then clears
            const auto end =
                static_cast<uint32_t>(at + static_cast<size_t>(std::countr_zero(d)) / 8);
            d &= d - 1;
            return end;
        };
        for (int k = 0; k < 4; ++k) out[k] = next_end();
        if (count > 4)
            for (int k = 4; k < 8; ++k) out[k] = next_end();
        out += count;
    };
    auto word_ends = [&](size_t at) {  // the 8 bytes from `at`
        uint64_t word;
        std::memcpy(&word, bits + at, 8);
        ends_in(word, at);
    };
    size_t i = 0;
#ifdef __AVX512VBMI2__
    if (n >= 128) {  // the first 64 bytes by words (no byte before them to load), then vectors
        for (; i < 64; i += 8) word_ends(i);
        for (; i + 64 <= n; i += 64) out = ends_in64(bits, i, out);
        last = static_cast<uint64_t>(bits[i - 1]) << 56;
    }
#endif
    for (; i + 64 <= n; i += 64) {  // a blob's mask: most blocks continue the run before them
        uint64_t words[8], changed = 0;
        std::memcpy(words, bits + i, 64);
        const uint64_t same = (last >> 56) * 0x0101010101010101ULL;
        for (uint64_t w : words) changed |= w ^ same;
        if (!changed) continue;
        for (int k = 0; k < 8; ++k) ends_in(words[k], i + 8 * k);
    }
    for (; i + 8 <= n; i += 8) word_ends(i);
    if (i < n) {
        uint64_t word = 0;  // the tail's bytes, then copies of its last one: no run ends there
        std::memcpy(&word, bits + i, n - i);
        for (size_t k = n - i; k < 8; ++k) word |= static_cast<uint64_t>(bits[n - 1]) << (8 * k);
        ends_in(word, i);
    }
    *out++ = static_cast<uint32_t>(n);
    const size_t runs = static_cast<size_t>(out - ends.get());
    std::vector<uint32_t> counts(runs);
    counts[0] = ends[0];
    for (size_t r = 1; r < runs; ++r) counts[r] = ends[r] - ends[r - 1];
    return counts;
}

#ifdef __SSE2__
// A 16 x 16 tile of 0/non-0 bytes (rows src_ld apart) transposed into 0/1 bytes (rows dst_ld
// apart): four rounds of unpacks, bytes to pairs to quads to halves.
static void transpose_tile16(const uint8_t* src, size_t src_ld, uint8_t* dst, size_t dst_ld) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; ++i)
        a[i] = _mm_min_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_ld)),
                            _mm_set1_epi8(1));
    for (int i = 0; i < 8; ++i) {  // rows 2i, 2i + 1 interleaved: columns 0-7, 8-15
        b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // rows 4g .. 4g + 3: columns 0-3, 4-7, 8-11, 12-15
        a[4 * g] = _mm_unpacklo_epi16(b[4 * g], b[4 * g + 2]);
        a[4 * g + 1] = _mm_unpackhi_epi16(b[4 * g], b[4 * g + 2]);
        a[4 * g + 2] = _mm_unpacklo_epi16(b[4 * g + 1], b[4 * g + 3]);
        a[4 * g + 3] = _mm_unpackhi_epi16(b[4 * g + 1], b[4 * g + 3]);
    }
    for (int half = 0; half < 2; ++half)  // rows 8 half .. + 7: b[8 half + k], columns 2k, 2k + 1
        for (int q = 0; q < 4; ++q) {
            const __m128i* c = a + 8 * half;
            b[8 * half + 2 * q] = _mm_unpacklo_epi32(c[q], c[4 + q]);
            b[8 * half + 2 * q + 1] = _mm_unpackhi_epi32(c[q], c[4 + q]);
        }
    for (int k = 0; k < 8; ++k) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * k * dst_ld),
                         _mm_unpacklo_epi64(b[k], b[8 + k]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * k + 1) * dst_ld),
                         _mm_unpackhi_epi64(b[k], b[8 + k]));
    }
}
#endif

// The mask as 0/1 bytes, transposed: [w][h], so that the runs are then read down the columns as
// memory (sorting the boundaries between rows into columns, as before, took a branch per
// boundary that no predictor learns). Tiles of 16 x 16 bytes by unpacks; without SSE2, tiles of
// 8 x 8 through eight 64-bit words in three rounds of swaps (bytes, pairs, quads). The COCO counts
// of bench_kernels' 1024 x 768 masks, transpose and runs: a disc 144-160 -> 65-73 us and stripes
// 248-259 -> 80-100 us with the 16 x 16 tiles.
static std::unique_ptr<uint8_t[]> transposed_bits(const uint8_t* mask, size_t w, size_t h) {
    std::unique_ptr<uint8_t[]> out(new uint8_t[w * h]);  // every byte is written
#ifdef __SSE2__
    const size_t tw = w / 16 * 16, th = h / 16 * 16;
    for (size_t y = 0; y < th; y += 16)
        for (size_t x = 0; x < tw; x += 16)
            transpose_tile16(mask + y * w + x, w, out.get() + x * h + y, h);
#else
    const size_t tw = w / 8 * 8, th = h / 8 * 8;
    for (size_t y = 0; y < th; y += 8)
        for (size_t x = 0; x < tw; x += 8) {
            uint64_t r[8];
            for (int i = 0; i < 8; ++i) {
                std::memcpy(&r[i], mask + (y + i) * w + x, 8);
                r[i] = nonzero_bytes(r[i]);
            }
            uint64_t mixed = 0;  // a tile inside or outside a blob is its own transpose
            for (int i = 1; i < 8; ++i) mixed |= r[i] ^ r[0];
            if (!mixed && (r[0] == 0 || r[0] == 0x0101010101010101ULL)) {
                for (int i = 0; i < 8; ++i) std::memcpy(out.get() + (x + i) * h + y, &r[0], 8);
                continue;
            }
            for (int i = 0; i < 8; i += 2) {  // bytes within 2 x 2 blocks
                const uint64_t a = r[i], b = r[i + 1], m = 0x00FF00FF00FF00FFULL;
                r[i] = (a & m) | ((b << 8) & ~m);
                r[i + 1] = ((a >> 8) & m) | (b & ~m);
            }
            for (int i : {0, 1, 4, 5}) {  // byte pairs within 4 x 4 blocks
                const uint64_t a = r[i], b = r[i + 2], m = 0x0000FFFF0000FFFFULL;
                r[i] = (a & m) | ((b << 16) & ~m);
                r[i + 2] = ((a >> 16) & m) | (b & ~m);
            }
            for (int i = 0; i < 4; ++i) {  // quads
                const uint64_t a = r[i], b = r[i + 4], m = 0x00000000FFFFFFFFULL;
                r[i] = (a & m) | (b << 32);
                r[i + 4] = (a >> 32) | (b & ~m);
            }
            for (int i = 0; i < 8; ++i) std::memcpy(out.get() + (x + i) * h + y, &r[i], 8);
        }
#endif
    for (size_t y = 0; y < h; ++y)  // the columns and rows the tiles left
        for (size_t x = y < th ? tw : 0; x < w; ++x) out[x * h + y] = mask[y * w + x] != 0;
    return out;
}

std::vector<uint32_t> run_lengths(const uint8_t* mask, int width, int height, bool column_major) {
    const size_t w = static_cast<size_t>(width), h = static_cast<size_t>(height);
    if (column_major) return runs_of_bits(transposed_bits(mask, w, h).get(), w * h);
    std::vector<uint8_t> bits(w * h);
    for (size_t i = 0; i < bits.size(); ++i) bits[i] = mask[i] != 0;
    return runs_of_bits(bits.data(), bits.size());
}

std::vector<uint32_t> coco_rle_counts(const uint8_t* mask, int width, int height) {
    return run_lengths(mask, width, height, true);
}

// One value of coco_rle_string at p; returns the end of what it wrote. x: the run, or after the
// third its difference to the run two before.
static char* rle_value(int64_t x, char* p) {
    const int magnitude = std::bit_width(static_cast<uint64_t>(x ^ (x >> 63)));
    const int groups = (magnitude + 5) / 5;  // the digits and the sign bit
    auto group = [&](int k) {
        return static_cast<char>(48 + ((x >> (5 * k)) & 0x1f) + (k + 1 < groups ? 0x20 : 0));
    };
    for (int k = 0; k < 2; ++k) p[k] = group(k);
    for (int k = 2; k < groups; ++k) p[k] = group(k);
    return p + groups;
}

#ifdef __AVX512VBMI2__
// Values i .. i + 15 (i >= 3) of coco_rle_string, one per 32-bit lane: its up to four groups as
// the lane's bytes, the unused bytes squeezed out by a byte compress; 64 bytes are stored, the
// caller leaves room. Returns null, writing nothing, when a lane needs more than four groups (a
// difference of 2^19 pixels or more) or a run is 2^31 or more (the lanes' arithmetic would wrap).
// 83,000 runs of 1-40 pixels: 29 us, against 462 value by value.
static char* rle_values16(const uint32_t* counts, size_t i, char* p) {
    const __m512i cur = _mm512_loadu_si512(counts + i), prev = _mm512_loadu_si512(counts + i - 2);
    if (_mm512_movepi32_mask(_mm512_or_si512(cur, prev))) return nullptr;
    const __m512i x = _mm512_sub_epi32(cur, prev);
    const __m512i magnitude = _mm512_sub_epi32(
        _mm512_set1_epi32(32), _mm512_lzcnt_epi32(_mm512_xor_si512(x, _mm512_srai_epi32(x, 31))));
    // (magnitude + 5) / 5 as a multiply and shift, exact for magnitudes up to 32
    const __m512i groups =
        _mm512_srli_epi32(_mm512_mullo_epi32(_mm512_add_epi32(magnitude, _mm512_set1_epi32(5)),
                                             _mm512_set1_epi32(205)),
                          10);
    if (_mm512_cmpgt_epi32_mask(groups, _mm512_set1_epi32(4))) return nullptr;
    __m512i bytes = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
        const __m512i digit =
            _mm512_and_si512(_mm512_srai_epi32(x, 5 * k), _mm512_set1_epi32(0x1f));
        const __mmask16 more = _mm512_cmpgt_epi32_mask(groups, _mm512_set1_epi32(k + 1));
        const __m512i c0 = _mm512_add_epi32(digit, _mm512_set1_epi32(48));
        const __m512i c = _mm512_mask_add_epi32(c0, more, c0, _mm512_set1_epi32(0x20));
        bytes = _mm512_or_si512(bytes, _mm512_slli_epi32(c, 8 * k));
    }
    // Byte k of a lane is kept when k < groups: ~(~0 << 8 groups), the shift giving 0 at 32.
    const __m512i kept =
        _mm512_andnot_si512(_mm512_sllv_epi32(_mm512_set1_epi32(-1), _mm512_slli_epi32(groups, 3)),
                            _mm512_set1_epi32(-1));
    const __mmask64 keep = _mm512_test_epi8_mask(kept, kept);
    _mm512_storeu_si512(p, _mm512_maskz_compress_epi8(keep, bytes));
    return p + std::popcount(keep);
}
#endif

std::string coco_rle_string(const std::vector<uint32_t>& counts) {
    // Each value goes out as 5-bit groups, low first, 0x20 on all but the last, until the rest
    // is its sign (a signed LEB128 of 5-bit digits), each group + 48. The group count follows
    // from the value's width, so that the first two (all but rare values need no more) are
    // written without a branch on the value.
    const size_t n = counts.size();
    std::string out(n * 7 + 64, '\0');  // 33-bit differences: 7 groups at most; the vector's slack
    char* p = out.data();
    // Runs after the third are stored as the difference to the run two before (i > 2 is
    // pycocotools' own condition, kept for byte-identical strings).
    size_t i = 0;
    auto difference = [&](size_t k) { return int64_t{counts[k]} - counts[k - 2]; };
    for (; i < n && i < 3; ++i) p = rle_value(counts[i], p);
#ifdef __AVX512VBMI2__
    for (; i + 16 <= n; i += 16) {
        if (char* end = rle_values16(counts.data(), i, p)) {
            p = end;
            continue;
        }
        for (size_t k = i; k < i + 16; ++k) p = rle_value(difference(k), p);
    }
#endif
    for (; i < n; ++i) p = rle_value(difference(i), p);
    out.resize(static_cast<size_t>(p - out.data()));
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
