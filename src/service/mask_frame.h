// Binary WebSocket frames for masks (a session message sent with "output": "binary"): each mask
// of a reply goes out as one binary frame after the reply's JSON text frame.
//
// Layout, all integers little-endian, 32-byte header then the payload:
//   0  char[4] magic "SSMK"      16 uint32 width
//   4  uint16  version (1)       20 uint32 height
//   6  uint16  encoding          24 uint32 payload bytes
//   8  uint32  sequence          28 uint32 reserved (0)
//   12 uint32  mask index (into the text frame's body.masks)
// Encodings:
//   1 row_runs_u32: run lengths over the row-major pixels (the order of a canvas' ImageData),
//     alternating outside/inside and starting outside (a first run may be 0); they sum to
//     width * height. A client paints a run with one TypedArray.fill on a Uint32Array view of
//     the ImageData, and a blob's frame is a few bytes per row.
//   2 bitmap_1bit: pixel i (row-major) is bit (i % 8) of byte i / 8, no row padding. Chosen
//     instead whenever the runs would take more bytes (ragged masks), so a frame is never larger
//     than width * height / 8 bytes.
// The 32-byte header keeps the payload 4-byte aligned, so a client can view the runs in place.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace splitseg {

enum class MaskFrameEncoding : uint16_t { row_runs_u32 = 1, bitmap_1bit = 2 };

constexpr size_t kMaskFrameHeaderBytes = 32;
constexpr uint16_t kMaskFrameVersion = 1;

// The frame of a row-major mask (width * height bytes, non-zero = inside).
std::string encode_mask_frame(const uint8_t* mask, int width, int height, uint32_t mask_index,
                              uint32_t sequence);
// Rewrites the sequence of an encoded frame (a stored frame sent again, e.g. after an undo).
void set_mask_frame_sequence(std::string& frame, uint32_t sequence);

struct MaskFrame {
    uint32_t sequence = 0, mask_index = 0;
    int width = 0, height = 0;
    MaskFrameEncoding encoding = MaskFrameEncoding::row_runs_u32;
    std::vector<uint8_t> mask;  // row-major, 0 or 1
};
// Reads a frame back; throws std::invalid_argument naming what is wrong with a malformed one.
MaskFrame decode_mask_frame(std::string_view frame);

}  // namespace splitseg
