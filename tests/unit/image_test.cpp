// Image decoding and encoding: round trips through each codec (test files are made here with the
// same libraries), EXIF orientation, PNG colour types, and malformed or oversized input.
#include "runtime/image.h"

#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>
#include <webp/encode.h>
#include <zlib.h>

#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "test_jpeg.h"

namespace splitseg {
namespace {

using test::JpegOptions;
using test::make_jpeg;
using test::with_app1;

// Appends bytes one by one (GCC 12's -O3 warns wrongly on vector::insert of a short list).
void append(std::vector<uint8_t>& v, std::initializer_list<uint8_t> bytes) {
    for (uint8_t b : bytes) v.push_back(b);
}

// A smooth RGB test pattern (compresses well, so lossy codecs stay close).
Image gradient(int w, int h) {
    Image im{w, h, {}};
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            append(im.rgb, {uint8_t(x * 255 / std::max(1, w - 1)),
                            uint8_t(y * 255 / std::max(1, h - 1)), uint8_t(96)});
    return im;
}

double mean_abs_diff(const Image& a, const Image& b) {
    double sum = 0;
    for (size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    return sum / static_cast<double>(a.rgb.size());
}

// TIFF block ("Exif\0\0" + header + IFD0 with one SHORT Orientation entry).
std::vector<uint8_t> exif_block(int orientation, bool little_endian, bool with_prefix = true) {
    std::vector<uint8_t> b;
    if (with_prefix) b = {'E', 'x', 'i', 'f', 0, 0};
    auto u16 = [&](unsigned v) {
        if (little_endian)
            append(b, {uint8_t(v), uint8_t(v >> 8)});
        else
            append(b, {uint8_t(v >> 8), uint8_t(v)});
    };
    auto u32 = [&](unsigned v) {
        if (little_endian) {
            u16(v & 0xFFFF);
            u16(v >> 16);
        } else {
            u16(v >> 16);
            u16(v & 0xFFFF);
        }
    };
    append(b, {uint8_t(little_endian ? 'I' : 'M'), uint8_t(little_endian ? 'I' : 'M')});
    u16(42);
    u32(8);       // IFD0 right after the header
    u16(2);       // two entries: an unrelated one, then Orientation
    u16(0x010F);  // Make, ASCII, 4 bytes inline
    u16(2);
    u32(4);
    append(b, {'a', 'b', 'c', 0});
    u16(0x0112);
    u16(3);  // SHORT
    u32(1);
    u16(orientation);
    u16(0);
    u32(0);  // no next IFD
    return b;
}

// --- encoders used to make test files -----------------------------------------------------------

struct PngOptions {
    int color_type = PNG_COLOR_TYPE_RGB;
    int bit_depth = 8;
    bool interlaced = false;
    std::vector<png_color> palette;
    std::vector<uint8_t> exif;  // eXIf chunk (TIFF data) when not empty
};

PngOptions png_type(int color_type, int bit_depth = 8) {
    PngOptions o;
    o.color_type = color_type;
    o.bit_depth = bit_depth;
    return o;
}

void png_append(png_structp png, png_bytep data, size_t n) {
    auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
    out->insert(out->end(), data, data + n);
}

// rows: packed samples as PNG stores them (big-endian 16-bit, packed sub-byte depths).
std::vector<uint8_t> make_png(const std::vector<uint8_t>& rows, int w, int h,
                              const PngOptions& opt = {}) {
    std::vector<uint8_t> out;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        ADD_FAILURE() << "libpng failed to write the test file";
        return {};
    }
    png_set_write_fn(png, &out, png_append, nullptr);
    png_set_IHDR(png, info, w, h, opt.bit_depth, opt.color_type,
                 opt.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (!opt.palette.empty())
        png_set_PLTE(png, info, opt.palette.data(), static_cast<int>(opt.palette.size()));
    if (!opt.exif.empty())
        png_set_eXIf_1(png, info, static_cast<png_uint_32>(opt.exif.size()),
                       const_cast<png_bytep>(opt.exif.data()));
    png_write_info(png, info);
    const size_t stride = rows.size() / h;
    std::vector<png_bytep> ptrs(h);
    for (int y = 0; y < h; ++y) ptrs[y] = const_cast<png_bytep>(rows.data() + y * stride);
    png_write_image(png, ptrs.data());
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return out;
}

std::vector<uint8_t> make_webp_lossless(const Image& im) {
    uint8_t* buf = nullptr;
    const size_t n = WebPEncodeLosslessRGB(im.rgb.data(), im.width, im.height, im.width * 3, &buf);
    std::vector<uint8_t> out(buf, buf + n);
    WebPFree(buf);
    return out;
}

void put_le(std::vector<uint8_t>& b, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

// Extended WebP: VP8X header + the image chunk of a simple file + an EXIF chunk.
std::vector<uint8_t> webp_with_exif(const std::vector<uint8_t>& simple, int w, int h,
                                    const std::vector<uint8_t>& exif) {
    std::vector<uint8_t> body = {'W', 'E', 'B', 'P', 'V', 'P', '8', 'X'};
    put_le(body, 10, 4);
    append(body, {0x08, 0, 0, 0});  // flags: EXIF present
    put_le(body, w - 1, 3);
    put_le(body, h - 1, 3);
    body.insert(body.end(), simple.begin() + 12, simple.end());  // the VP8L chunk
    append(body, {'E', 'X', 'I', 'F'});
    put_le(body, static_cast<uint32_t>(exif.size()), 4);
    body.insert(body.end(), exif.begin(), exif.end());
    if (exif.size() & 1) body.push_back(0);
    std::vector<uint8_t> file = {'R', 'I', 'F', 'F'};
    put_le(file, static_cast<uint32_t>(body.size()), 4);
    file.insert(file.end(), body.begin(), body.end());
    return file;
}

Image decode(const std::vector<uint8_t>& bytes, size_t max_pixels = 0) {
    return decode_image(bytes.data(), bytes.size(), max_pixels);
}

// --- round trips --------------------------------------------------------------------------------

TEST(DecodeImage, PngRgbRoundTripIsExact) {
    const Image im = gradient(37, 21);
    const Image out = decode(make_png(im.rgb, im.width, im.height));
    EXPECT_EQ(out.width, 37);
    EXPECT_EQ(out.height, 21);
    EXPECT_EQ(out.rgb, im.rgb);
}

TEST(DecodeImage, JpegRoundTripIsClose) {
    const Image im = gradient(64, 48);
    const Image out = decode(make_jpeg(im.rgb.data(), im.width, im.height));
    ASSERT_EQ(out.width, 64);
    ASSERT_EQ(out.height, 48);
    EXPECT_LT(mean_abs_diff(out, im), 2.0);
}

TEST(DecodeImage, GrayscaleJpegBecomesRgb) {
    std::vector<uint8_t> gray(32 * 16, 140);
    JpegOptions opt;
    opt.grayscale = true;
    const Image out = decode(make_jpeg(gray.data(), 32, 16, opt));
    ASSERT_EQ(out.rgb.size(), 32u * 16 * 3);
    for (uint8_t v : out.rgb) EXPECT_NEAR(v, 140, 1);
}

TEST(DecodeImage, AdobeCmykJpegIsInverted) {
    // Adobe CMYK JPEGs store 255 - ink: C'=255 (no cyan), M'=128, Y'=0 (full yellow), K'=255.
    std::vector<uint8_t> cmyk;
    for (int i = 0; i < 16 * 16; ++i) append(cmyk, {255, 128, 0, 255});
    JpegOptions opt;
    opt.cmyk = true;
    const Image out = decode(make_jpeg(cmyk.data(), 16, 16, opt));
    ASSERT_EQ(out.rgb.size(), 16u * 16 * 3);
    EXPECT_NEAR(out.rgb[0], 255, 2);
    EXPECT_NEAR(out.rgb[1], 128, 2);
    EXPECT_NEAR(out.rgb[2], 0, 2);
}

TEST(DecodeImage, WebpLosslessIsExactAndLossyIsClose) {
    const Image im = gradient(40, 30);
    EXPECT_EQ(decode(make_webp_lossless(im)).rgb, im.rgb);
    uint8_t* buf = nullptr;
    const size_t n = WebPEncodeRGB(im.rgb.data(), im.width, im.height, im.width * 3, 95, &buf);
    const std::vector<uint8_t> lossy(buf, buf + n);
    WebPFree(buf);
    const Image out = decode(lossy);
    ASSERT_EQ(out.width, 40);
    EXPECT_LT(mean_abs_diff(out, im), 3.0);
}

// --- PNG colour types: as PIL's convert("RGB") ----------------------------------------------

TEST(DecodePng, GrayAlphaPaletteSixteenBitAndInterlaced) {
    {  // 8-bit gray: replicated
        const Image out = decode(make_png({0, 100, 200, 255}, 2, 2, png_type(PNG_COLOR_TYPE_GRAY)));
        EXPECT_EQ(out.rgb,
                  (std::vector<uint8_t>{0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255}));
    }
    {  // 1-bit gray: expanded to 0 / 255
        const Image out = decode(make_png({0b10000000}, 2, 1, png_type(PNG_COLOR_TYPE_GRAY, 1)));
        EXPECT_EQ(out.rgb, (std::vector<uint8_t>{255, 255, 255, 0, 0, 0}));
    }
    {  // RGBA: alpha dropped, colour kept as stored
        const Image out = decode(
            make_png({10, 20, 30, 0, 40, 50, 60, 255}, 2, 1, png_type(PNG_COLOR_TYPE_RGB_ALPHA)));
        EXPECT_EQ(out.rgb, (std::vector<uint8_t>{10, 20, 30, 40, 50, 60}));
    }
    {  // gray + alpha
        const Image out = decode(make_png({77, 0}, 1, 1, png_type(PNG_COLOR_TYPE_GRAY_ALPHA)));
        EXPECT_EQ(out.rgb, (std::vector<uint8_t>{77, 77, 77}));
    }
    {  // palette
        PngOptions opt = png_type(PNG_COLOR_TYPE_PALETTE);
        opt.palette = {{1, 2, 3}, {200, 100, 50}};
        const Image out = decode(make_png({1, 0}, 2, 1, opt));
        EXPECT_EQ(out.rgb, (std::vector<uint8_t>{200, 100, 50, 1, 2, 3}));
    }
    {  // 16-bit RGB: the high byte of each big-endian sample
        const Image out = decode(
            make_png({0x12, 0x34, 0xAB, 0xCD, 0xFF, 0x00}, 1, 1, png_type(PNG_COLOR_TYPE_RGB, 16)));
        EXPECT_EQ(out.rgb, (std::vector<uint8_t>{0x12, 0xAB, 0xFF}));
    }
    {  // Adam7 interlacing
        const Image im = gradient(13, 11);
        PngOptions opt;
        opt.interlaced = true;
        EXPECT_EQ(decode(make_png(im.rgb, 13, 11, opt)).rgb, im.rgb);
    }
}

// --- EXIF orientation ---------------------------------------------------------------------------

// Pixels a..f of a 3x2 image (red channel = letter) and what each orientation shows, as PIL's
// ImageOps.exif_transpose: a b c / d e f.
struct OrientationCase {
    int orientation, width;
    const char* expect;  // rows concatenated
};
constexpr OrientationCase kOrientations[] = {
    {1, 3, "abcdef"}, {2, 3, "cbafed"}, {3, 3, "fedcba"}, {4, 3, "defabc"},
    {5, 2, "adbecf"}, {6, 2, "daebfc"}, {7, 2, "fcebda"}, {8, 2, "cfbead"},
};

std::string letters(const Image& im) {
    std::string s;
    for (size_t i = 0; i < im.rgb.size(); i += 3) s += static_cast<char>(im.rgb[i]);
    return s;
}

Image abcdef() {
    Image im{3, 2, {}};
    for (char ch : std::string("abcdef")) append(im.rgb, {uint8_t(ch), 7, 9});
    return im;
}

TEST(Orientation, AllEightFromPngExif) {
    const Image im = abcdef();
    for (const OrientationCase& c : kOrientations) {
        PngOptions opt;
        opt.exif = exif_block(c.orientation, c.orientation % 2 == 0, false);
        const Image out = decode(make_png(im.rgb, 3, 2, opt));
        EXPECT_EQ(out.width, c.width) << c.orientation;
        EXPECT_EQ(letters(out), c.expect) << "orientation " << c.orientation;
    }
}

TEST(Orientation, JpegApp1RotatesBothByteOrders) {
    // 16x8, left half dark, right half light. Orientation 6 (rotate 90 clockwise) puts the left
    // half on top: the result is 8x16 with a dark top.
    std::vector<uint8_t> px;
    for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 16; ++x) {
            const uint8_t v = x < 8 ? 20 : 230;
            append(px, {v, v, v});
        }
    for (bool little : {true, false}) {
        const Image out = decode(make_jpeg(px.data(), 16, 8, with_app1(exif_block(6, little))));
        ASSERT_EQ(out.width, 8);
        ASSERT_EQ(out.height, 16);
        EXPECT_NEAR(out.rgb[(2 * 8 + 4) * 3], 20, 8);    // top half
        EXPECT_NEAR(out.rgb[(13 * 8 + 4) * 3], 230, 8);  // bottom half
    }
}

TEST(Orientation, WebpExifChunk) {
    const Image im = abcdef();
    const std::vector<uint8_t> file =
        webp_with_exif(make_webp_lossless(im), 3, 2, exif_block(8, true));
    const Image out = decode(file);
    EXPECT_EQ(out.width, 2);
    EXPECT_EQ(letters(out), "cfbead");
}

TEST(Orientation, MalformedExifIsIgnored) {
    std::vector<uint8_t> px(16 * 8 * 3, 128);
    std::vector<std::vector<uint8_t>> bad = {
        {'E', 'x', 'i', 'f', 0, 0, 'I', 'I'},  // truncated header
        {'E', 'x', 'i', 'f', 0, 0, 'X', 'X', 42, 0, 8, 0, 0, 0},
    };
    std::vector<uint8_t> far_ifd = exif_block(6, true);
    far_ifd[10] = 0xFF;  // IFD0 offset beyond the block
    bad.push_back(far_ifd);
    std::vector<uint8_t> cut = exif_block(6, true);
    cut.erase(cut.end() - 14, cut.end());  // Orientation entry cut off
    bad.push_back(cut);
    bad.push_back(exif_block(9, true));  // out of range
    for (const auto& app1 : bad) {
        const Image out = decode(make_jpeg(px.data(), 16, 8, with_app1(app1)));
        EXPECT_EQ(out.width, 16);
        EXPECT_EQ(out.height, 8);
    }
}

// --- malformed and oversized input ----------------------------------------------------------

TEST(DecodeImage, RejectsEmptyAndUnknownData) {
    EXPECT_THROW(decode_image(nullptr, 0), ImageError);
    const std::vector<uint8_t> garbage = {'G', 'I', 'F', '8', '9', 'a', 1, 2, 3, 4, 5, 6};
    try {
        decode(garbage);
        FAIL() << "no exception";
    } catch (const ImageError& e) {
        EXPECT_NE(std::string(e.what()).find("unrecognised"), std::string::npos) << e.what();
    }
}

TEST(DecodeImage, RejectsTruncatedFilesOfEveryFormat) {
    const Image im = gradient(64, 64);
    const std::vector<std::vector<uint8_t>> files = {
        make_png(im.rgb, 64, 64), make_jpeg(im.rgb.data(), 64, 64), make_webp_lossless(im)};
    for (const auto& f : files) {
        for (size_t keep : {f.size() / 2, size_t{3}, size_t{12}, size_t{40}}) {
            const std::vector<uint8_t> cut(f.begin(), f.begin() + std::min(keep, f.size()));
            EXPECT_THROW(decode(cut), ImageError) << "kept " << keep << " of " << f.size();
        }
    }
}

TEST(DecodeImage, RejectsCorruptPngData) {
    const Image im = gradient(32, 32);
    std::vector<uint8_t> f = make_png(im.rgb, 32, 32);
    for (size_t i = 60; i < f.size() - 20; ++i) f[i] ^= 0x5A;  // IDAT content and CRC broken
    EXPECT_THROW(decode(f), ImageError);
}

TEST(DecodeImage, MaxPixelsRejectsBeforeDecoding) {
    const Image im = gradient(64, 48);
    const auto png = make_png(im.rgb, 64, 48);
    EXPECT_NO_THROW(decode(png, 64 * 48));
    EXPECT_THROW(decode(png, 64 * 48 - 1), ImageError);
    EXPECT_THROW(decode(make_jpeg(im.rgb.data(), 64, 48), 1000), ImageError);
    EXPECT_THROW(decode(make_webp_lossless(im), 1000), ImageError);
}

// Headers claiming huge images with almost no data: rejected from the header alone (a decoder
// that allocated first would need gigabytes here).
TEST(DecodeImage, DecompressionBombHeadersAreRejected) {
    const size_t cap = 4096 * 4096;
    const Image im = gradient(16, 16);
    {  // PNG: 60000 x 60000 in IHDR, with a valid CRC
        std::vector<uint8_t> f = make_png(im.rgb, 16, 16);
        const uint8_t dims[8] = {0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60};
        std::memcpy(&f[16], dims, 8);
        const uint32_t crc = static_cast<uint32_t>(crc32(0, &f[12], 17));
        for (int i = 0; i < 4; ++i) f[29 + i] = uint8_t(crc >> (24 - 8 * i));
        try {
            decode(f, cap);
            FAIL() << "no exception";
        } catch (const ImageError& e) {
            EXPECT_NE(std::string(e.what()).find("60000x60000"), std::string::npos) << e.what();
        }
    }
    {  // JPEG: 65000 x 65000 in the SOF0 segment
        std::vector<uint8_t> f = make_jpeg(im.rgb.data(), 16, 16);
        size_t sof = 2;
        while (sof + 9 < f.size() && !(f[sof] == 0xFF && f[sof + 1] == 0xC0)) ++sof;
        ASSERT_LT(sof + 9, f.size());
        const uint8_t dims[4] = {0xFD, 0xE8, 0xFD, 0xE8};
        std::memcpy(&f[sof + 5], dims, 4);
        EXPECT_THROW(decode(f, cap), ImageError);
    }
    {  // WebP lossless: 16384 x 16384 in the VP8L header (14-bit fields after the signature)
        std::vector<uint8_t> f = make_webp_lossless(im);
        ASSERT_EQ(f[20], 0x2F);
        f[21] = 0xFF;
        f[22] = 0xFF;
        f[23] = 0xFF;
        f[24] |= 0x0F;
        EXPECT_THROW(decode(f, cap), ImageError);
    }
}

// A valid progressive grayscale JPEG with 704 scans: every coefficient sent alone, bit by bit
// (successive approximation from bit 10). Real encoders use about ten; each scan costs a pass.
TEST(DecodeImage, JpegWithHundredsOfScansIsRejected) {
    std::vector<jpeg_scan_info> scans;
    auto add = [&](int ss, int ah, int al) { scans.push_back({1, {0, 0, 0, 0}, ss, ss, ah, al}); };
    for (int ss = 0; ss < 64; ++ss) {
        add(ss, 0, 10);
        for (int al = 9; al >= 0; --al) add(ss, al + 1, al);
    }
    JpegOptions opt;
    opt.grayscale = true;
    opt.scans = scans;
    std::vector<uint8_t> gray(16 * 16, 99);
    try {
        decode(make_jpeg(gray.data(), 16, 16, opt));
        FAIL() << "no exception";
    } catch (const ImageError& e) {
        EXPECT_NE(std::string(e.what()).find("scans"), std::string::npos) << e.what();
    }
    opt.scans.assign(scans.begin(), scans.begin() + 64);  // a legal, partly refined file
    EXPECT_EQ(decode(make_jpeg(gray.data(), 16, 16, opt)).width, 16);
}

TEST(DecodeImage, AnimatedWebpIsRejected) {
    const Image im = gradient(8, 8);
    std::vector<uint8_t> f = webp_with_exif(make_webp_lossless(im), 8, 8, exif_block(1, true));
    f[20] |= 0x02;  // VP8X flags: animation
    EXPECT_THROW(decode(f), ImageError);
}

// --- probe_image: the header only ----------------------------------------------------------

ImageInfo probe(const std::vector<uint8_t>& bytes, size_t max_pixels = 0) {
    return probe_image(bytes.data(), bytes.size(), max_pixels);
}

// The file with its first `type` chunk moved to just before IEND (after the image data).
std::vector<uint8_t> png_chunk_to_end(const std::vector<uint8_t>& f, const char* type) {
    auto be32 = [&](size_t at) {
        return uint32_t{f[at]} << 24 | f[at + 1] << 16 | f[at + 2] << 8 | f[at + 3];
    };
    std::vector<uint8_t> chunk, rest(f.begin(), f.begin() + 8);
    for (size_t at = 8; at + 12 <= f.size();) {
        const size_t end = at + 12 + be32(at);
        std::vector<uint8_t>& into =
            chunk.empty() && std::memcmp(&f[at + 4], type, 4) == 0 ? chunk : rest;
        into.insert(into.end(), f.begin() + at, f.begin() + end);
        at = end;
    }
    EXPECT_FALSE(chunk.empty()) << "no " << type << " chunk";
    rest.insert(rest.end() - 12, chunk.begin(), chunk.end());  // IEND is the last 12 bytes
    return rest;
}

// Every kind of file the decoder tests use: the probe must report the size decode_image returns,
// EXIF orientation included (a 3x2 image stored with orientation 5-8 decodes as 2x3).
TEST(ProbeImage, ReportsTheSizeDecodeReturns) {
    const Image im = gradient(37, 21);
    const Image letters3x2 = abcdef();
    struct Case {
        std::string name;
        std::vector<uint8_t> bytes;
        ImageFormat format;
    };
    std::vector<Case> cases = {
        {"png rgb", make_png(im.rgb, 37, 21), ImageFormat::png},
        {"png 16-bit",
         make_png({0x12, 0x34, 0xAB, 0xCD, 0xFF, 0x00}, 1, 1, png_type(PNG_COLOR_TYPE_RGB, 16)),
         ImageFormat::png},
        {"jpeg", make_jpeg(im.rgb.data(), 37, 21), ImageFormat::jpeg},
        {"webp lossless", make_webp_lossless(im), ImageFormat::webp},
        {"webp exif 8", webp_with_exif(make_webp_lossless(letters3x2), 3, 2, exif_block(8, true)),
         ImageFormat::webp},
    };
    std::vector<uint8_t> gray(32 * 16, 140);
    JpegOptions gray_options;
    gray_options.grayscale = true;
    cases.push_back({"jpeg gray", make_jpeg(gray.data(), 32, 16, gray_options), ImageFormat::jpeg});
    for (bool little : {true, false})
        cases.push_back({"jpeg exif 6",
                         make_jpeg(im.rgb.data(), 37, 21, with_app1(exif_block(6, little))),
                         ImageFormat::jpeg});
    for (const OrientationCase& c : kOrientations) {
        PngOptions opt;
        opt.exif = exif_block(c.orientation, true, false);
        const std::vector<uint8_t> png = make_png(letters3x2.rgb, 3, 2, opt);
        const std::string name = "png exif " + std::to_string(c.orientation);
        cases.push_back({name, png, ImageFormat::png});
        cases.push_back({name + " after IDAT", png_chunk_to_end(png, "eXIf"), ImageFormat::png});
    }
    for (const Case& c : cases) {
        const Image decoded = decode(c.bytes);
        const ImageInfo info = probe(c.bytes);
        EXPECT_EQ(info.format, c.format) << c.name;
        EXPECT_EQ(info.width, decoded.width) << c.name;
        EXPECT_EQ(info.height, decoded.height) << c.name;
    }
    EXPECT_EQ(probe(cases.back().bytes).width, 2);  // orientation 8 after IDAT: turned
    EXPECT_STREQ(image_format_name(ImageFormat::webp), "webp");
}

// A header that is fine in front of data that is cut or broken: the probe accepts it (it never
// reads the data) and decode_image is what finds the damage.
TEST(ProbeImage, AcceptsAGoodHeaderWhoseDataIsCut) {
    const Image im = gradient(256, 192);
    for (const std::vector<uint8_t>& f :
         {make_png(im.rgb, 256, 192), make_jpeg(im.rgb.data(), 256, 192), make_webp_lossless(im)}) {
        const std::vector<uint8_t> cut(f.begin(), f.begin() + f.size() / 2);
        const ImageInfo info = probe(cut);
        EXPECT_EQ(info.width, 256);
        EXPECT_EQ(info.height, 192);
        EXPECT_THROW(decode(cut), ImageError) << image_format_name(info.format);
    }
}

TEST(ProbeImage, RejectsGarbageTruncatedHeadersAndTooManyPixels) {
    EXPECT_THROW(probe_image(nullptr, 0), ImageError);
    EXPECT_THROW(probe({'G', 'I', 'F', '8', '9', 'a', 1, 2, 3, 4, 5, 6}), ImageError);
    EXPECT_THROW(probe({0xFF, 0xD8, 0xFF, 0xE0, 0x00}), ImageError);  // JPEG magic, then nothing
    const Image im = gradient(64, 48);
    const std::vector<std::vector<uint8_t>> files = {
        make_png(im.rgb, 64, 48), make_jpeg(im.rgb.data(), 64, 48), make_webp_lossless(im)};
    for (const auto& f : files) {
        for (size_t keep : {size_t{3}, size_t{12}, size_t{20}, size_t{24}}) {
            const std::vector<uint8_t> cut(f.begin(), f.begin() + keep);
            EXPECT_THROW(probe(cut), ImageError) << "kept " << keep << " of " << f.size();
        }
        EXPECT_EQ(probe(f, 64 * 48).width, 64);
        try {
            probe(f, 64 * 48 - 1);
            ADD_FAILURE() << "no exception";
        } catch (const ImageError& e) {  // the words the service maps to 413 image_too_large
            EXPECT_NE(std::string(e.what()).find("above the limit"), std::string::npos) << e.what();
        }
    }
    std::vector<uint8_t> zero_width = files[0];  // IHDR width 0, with a valid CRC
    std::memset(&zero_width[16], 0, 4);
    const uint32_t crc = static_cast<uint32_t>(crc32(0, &zero_width[12], 17));
    for (int i = 0; i < 4; ++i) zero_width[29 + i] = uint8_t(crc >> (24 - 8 * i));
    EXPECT_THROW(probe(zero_width), ImageError);
}

// --- encoding and files ---------------------------------------------------------------------

TEST(EncodePng, GrayAndRgbaRoundTrip) {
    std::vector<uint8_t> mask(50 * 20);
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i % 7 < 3) ? 255 : 0;
    const Image g = decode(encode_png_gray(mask.data(), 50, 20));
    ASSERT_EQ(g.width, 50);
    for (size_t i = 0; i < mask.size(); ++i) ASSERT_EQ(g.rgb[i * 3 + 1], mask[i]);

    std::vector<uint8_t> rgba = {1, 2, 3, 4, 5, 6, 7, 8};
    const Image c = decode(encode_png_rgba(rgba.data(), 2, 1));
    EXPECT_EQ(c.rgb, (std::vector<uint8_t>{1, 2, 3, 5, 6, 7}));
    EXPECT_THROW(encode_png_gray(mask.data(), 0, 20), std::invalid_argument);
}

class TempDir : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/splitseg_image_test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    std::string dir;
};

TEST_F(TempDir, WriteAtomicReplacesWholeFileAndLeavesNoTemporaries) {
    const std::string path = dir + "/mask.png";
    write_file_atomic(path, {1, 2, 3});
    write_file_atomic(path, {4, 5});
    EXPECT_EQ(read_file_bytes(path), (std::vector<uint8_t>{4, 5}));
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.exists();
    EXPECT_EQ(files, 1);
    EXPECT_THROW(write_file_atomic(dir + "/missing/x.png", {1}), std::runtime_error);
    EXPECT_THROW(read_file_bytes(dir + "/nothing"), std::runtime_error);
}

TEST_F(TempDir, LoadImageNamesTheFile) {
    const Image im = gradient(5, 4);
    write_file_atomic(dir + "/a.png", make_png(im.rgb, 5, 4));
    EXPECT_EQ(load_image(dir + "/a.png").rgb, im.rgb);
    write_file_atomic(dir + "/b.png", {1, 2, 3});
    try {
        load_image(dir + "/b.png");
        FAIL() << "no exception";
    } catch (const ImageError& e) {
        EXPECT_NE(std::string(e.what()).find("b.png"), std::string::npos) << e.what();
    }
    EXPECT_THROW(load_image(dir + "/none.jpg"), ImageError);
}

}  // namespace
}  // namespace splitseg
