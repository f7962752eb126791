#include "service/mask_frame.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "service/mask_encoding.h"

namespace splitseg {

namespace {

constexpr char kMagic[4] = {'S', 'S', 'M', 'K'};

void put_u16(std::string& out, size_t at, uint16_t v) {
    out[at] = static_cast<char>(v & 0xff);
    out[at + 1] = static_cast<char>(v >> 8);
}

void put_u32(std::string& out, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t get_u32(std::string_view in, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(static_cast<uint8_t>(in[at + i])) << (8 * i);
    return v;
}

}  // namespace

std::string encode_mask_frame(const uint8_t* mask, int width, int height, uint32_t mask_index,
                              uint32_t sequence) {
    const size_t pixels = static_cast<size_t>(width) * height;
    const std::vector<uint32_t> runs = run_lengths(mask, width, height, false);
    const size_t bitmap_bytes = (pixels + 7) / 8;
    const bool use_runs = runs.size() * 4 <= bitmap_bytes;
    const size_t payload = use_runs ? runs.size() * 4 : bitmap_bytes;

    std::string frame(kMaskFrameHeaderBytes + payload, '\0');
    std::memcpy(frame.data(), kMagic, 4);
    put_u16(frame, 4, kMaskFrameVersion);
    put_u16(frame, 6,
            static_cast<uint16_t>(use_runs ? MaskFrameEncoding::row_runs_u32
                                           : MaskFrameEncoding::bitmap_1bit));
    put_u32(frame, 8, sequence);
    put_u32(frame, 12, mask_index);
    put_u32(frame, 16, static_cast<uint32_t>(width));
    put_u32(frame, 20, static_cast<uint32_t>(height));
    put_u32(frame, 24, static_cast<uint32_t>(payload));
    if (use_runs) {
        for (size_t i = 0; i < runs.size(); ++i)
            put_u32(frame, kMaskFrameHeaderBytes + 4 * i, runs[i]);
    } else {
        char* bits = frame.data() + kMaskFrameHeaderBytes;
        for (size_t i = 0; i < pixels; ++i)
            if (mask[i]) bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
    }
    return frame;
}

void set_mask_frame_sequence(std::string& frame, uint32_t sequence) {
    if (frame.size() < kMaskFrameHeaderBytes) throw std::invalid_argument("not a mask frame");
    put_u32(frame, 8, sequence);
}

MaskFrame decode_mask_frame(std::string_view frame) {
    if (frame.size() < kMaskFrameHeaderBytes || std::memcmp(frame.data(), kMagic, 4) != 0) {
        throw std::invalid_argument("not a mask frame (no SSMK header)");
    }
    const uint32_t head = get_u32(frame, 4);
    if ((head & 0xffff) != kMaskFrameVersion)
        throw std::invalid_argument("unknown mask frame version");
    MaskFrame out;
    out.encoding = static_cast<MaskFrameEncoding>(head >> 16);
    out.sequence = get_u32(frame, 8);
    out.mask_index = get_u32(frame, 12);
    const uint32_t width = get_u32(frame, 16), height = get_u32(frame, 20);
    const uint32_t payload = get_u32(frame, 24);
    if (width > (1u << 16) || height > (1u << 16))
        throw std::invalid_argument("mask frame too large");
    if (payload != frame.size() - kMaskFrameHeaderBytes)
        throw std::invalid_argument("mask frame payload length does not match the frame");
    out.width = static_cast<int>(width);
    out.height = static_cast<int>(height);
    const size_t pixels = size_t(width) * height;
    const std::string_view data = frame.substr(kMaskFrameHeaderBytes);
    out.mask.assign(pixels, 0);
    if (out.encoding == MaskFrameEncoding::bitmap_1bit) {
        if (data.size() != (pixels + 7) / 8)
            throw std::invalid_argument("bitmap size does not match width * height");
        for (size_t i = 0; i < pixels; ++i)
            out.mask[i] = (static_cast<uint8_t>(data[i / 8]) >> (i % 8)) & 1;
    } else if (out.encoding == MaskFrameEncoding::row_runs_u32) {
        if (data.size() % 4 != 0) throw std::invalid_argument("runs are not whole uint32s");
        size_t at = 0;
        for (size_t i = 0; i < data.size() / 4; ++i) {
            const uint32_t run = get_u32(data, 4 * i);
            if (run > pixels - at) throw std::invalid_argument("runs cover more than the mask");
            if (i % 2 == 1) std::fill_n(out.mask.begin() + at, run, uint8_t(1));
            at += run;
        }
        if (at != pixels) throw std::invalid_argument("runs do not cover the mask");
    } else {
        throw std::invalid_argument("unknown mask frame encoding");
    }
    return out;
}

}  // namespace splitseg
