#include "runtime/image.h"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>
#include <webp/decode.h>
#include <zlib.h>

#include <csetjmp>
#include <cstring>

namespace splitseg {

// ---------------------------------------------------------------------------------------------
// libjpeg and libpng report fatal errors through a callback that must not return. Ours records
// the message and longjmps back into guarded(), the only frame that calls setjmp. The code run
// under guarded() is C library calls and plain loops: no object with a destructor lives in a
// frame the jump skips, which is what makes longjmp well-defined in C++.

struct CodecError {
    std::jmp_buf jump;
    char message[200] = "unknown error";
};

template <class F>
static bool guarded(CodecError& err, F&& body) {
    if (setjmp(err.jump)) return false;
    body();
    return true;
}

[[noreturn]] static void codec_fail(CodecError& err, const char* message) {
    std::snprintf(err.message, sizeof err.message, "%s", message);
    std::longjmp(err.jump, 1);
}

// Rejects bad or too large dimensions before any pixel memory is allocated.
static void check_dimensions(const char* format, uint64_t w, uint64_t h, size_t max_pixels) {
    if (w == 0 || h == 0)
        throw ImageError(std::string(format) + ": image has zero width or height");
    if (w > kMaxImageSide || h > kMaxImageSide)
        throw ImageError(std::string(format) + ": image is " + std::to_string(w) + "x" +
                         std::to_string(h) + ", larger than " + std::to_string(kMaxImageSide) +
                         " on a side");
    if (max_pixels > 0 && w * h > max_pixels)
        throw ImageError(std::string(format) + ": image is " + std::to_string(w) + "x" +
                         std::to_string(h) + " = " + std::to_string(w * h) +
                         " pixels, above the limit of " + std::to_string(max_pixels));
}

static Image blank_image(uint32_t w, uint32_t h) {
    Image im;
    im.width = static_cast<int>(w);
    im.height = static_cast<int>(h);
    im.rgb.resize(size_t{w} * h * 3);
    return im;
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation (tag 0x0112 of IFD0 in a TIFF structure), from a JPEG APP1 segment, a PNG
// eXIf chunk or a WebP EXIF chunk. Anything missing or malformed reads as 1 (upright).

static int exif_orientation(const uint8_t* p, size_t n) {
    if (n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0) {
        p += 6;
        n -= 6;
    }
    if (n < 8) return 1;
    const bool little = p[0] == 'I' && p[1] == 'I';
    if (!little && !(p[0] == 'M' && p[1] == 'M')) return 1;
    auto u16 = [&](size_t at) -> uint32_t {
        return little ? p[at] | p[at + 1] << 8 : p[at] << 8 | p[at + 1];
    };
    auto u32 = [&](size_t at) -> uint32_t {
        return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2);
    };
    if (u16(2) != 42) return 1;
    const size_t ifd = u32(4);
    if (ifd > n || n - ifd < 2) return 1;
    const size_t entries = u16(ifd);
    for (size_t i = 0; i < entries; ++i) {
        const size_t e = ifd + 2 + 12 * i;
        if (e + 12 > n) break;
        if (u16(e) != 0x0112) continue;
        const uint32_t type = u16(e + 2), count = u32(e + 4);
        if (count < 1) return 1;
        const uint32_t v = type == 3 ? u16(e + 8) : type == 4 ? u32(e + 8) : 0;  // SHORT, LONG
        return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
    }
    return 1;
}

// PIL's ImageOps.exif_transpose. Output pixel (x, y) reads source (u, v) = swap ? (y, x) : (x, y),
// each mirrored when its flip is set:
//   2 mirror | 3 rotate 180 | 4 flip | 5 transpose | 6 rotate 90 clockwise | 7 transverse |
//   8 rotate 90 counter-clockwise.
struct Transform {
    bool swap, flip_u, flip_v;
};
static constexpr Transform kOrientations[9] = {
    {false, false, false}, {false, false, false}, {false, true, false},
    {false, true, true},   {false, false, true},  {true, false, false},
    {true, false, true},   {true, true, true},    {true, true, false},
};

static Image apply_orientation(Image src, int orientation) {
    if (orientation < 2 || orientation > 8) return src;
    const Transform t = kOrientations[orientation];
    const int64_t W = src.width, H = src.height;
    Image out;
    out.width = static_cast<int>(t.swap ? H : W);
    out.height = static_cast<int>(t.swap ? W : H);
    out.rgb.resize(src.rgb.size());
#pragma omp parallel for if (W * H > 262144)
    for (int64_t y = 0; y < out.height; ++y)
        for (int64_t x = 0; x < out.width; ++x) {
            int64_t u = t.swap ? y : x, v = t.swap ? x : y;
            if (t.flip_u) u = W - 1 - u;
            if (t.flip_v) v = H - 1 - v;
            std::memcpy(&out.rgb[(y * out.width + x) * 3], &src.rgb[(v * W + u) * 3], 3);
        }
    return out;
}

// The size decode_image returns for a stored w x h image with this orientation.
static ImageInfo upright_info(ImageFormat format, uint32_t w, uint32_t h, int orientation) {
    const bool swap = orientation >= 2 && orientation <= 8 && kOrientations[orientation].swap;
    return {format, static_cast<int>(swap ? h : w), static_cast<int>(swap ? w : h)};
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo), decoded with the library defaults PIL also uses (islow DCT, fancy
// upsampling). CMYK/YCCK files are taken as Adobe's inverted CMYK.

struct JpegErrorManager {
    jpeg_error_mgr pub;
    CodecError err;
};

static void jpeg_on_error(j_common_ptr cinfo) {
    auto* m = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    codec_fail(m->err, text);
}

// Warnings (level -1) are tolerated as PIL does, except a truncated file.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

// A progressive JPEG may hold thousands of tiny scans that each cost a pass over the image (a
// known denial of service); real encoders write at most a few dozen.
static constexpr int kMaxJpegScans = 500;

static void jpeg_on_progress(j_common_ptr cinfo) {
    if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number > kMaxJpegScans)
        codec_fail(reinterpret_cast<JpegErrorManager*>(cinfo->err)->err, "too many scans");
}

struct JpegDecoder {
    jpeg_decompress_struct cinfo{};
    JpegErrorManager errors{};
    jpeg_progress_mgr progress{};
    JpegDecoder() {
        cinfo.err = jpeg_std_error(&errors.pub);
        errors.pub.error_exit = jpeg_on_error;
        errors.pub.emit_message = jpeg_on_message;
        errors.pub.output_message = [](j_common_ptr) {};
        progress.progress_monitor = jpeg_on_progress;
    }
    ~JpegDecoder() { jpeg_destroy_decompress(&cinfo); }  // safe on a never-created struct
};

static int jpeg_orientation(const jpeg_decompress_struct& cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            std::memcmp(m->data, "Exif\0\0", 6) == 0)
            return exif_orientation(m->data, m->data_length);
    return 1;
}

// Reads the markers up to the first scan (APP1 kept for the orientation) and checks the size.
static void read_jpeg_header(JpegDecoder& d, const uint8_t* data, size_t size, size_t max_pixels) {
    jpeg_decompress_struct& cinfo = d.cinfo;
    const bool header_ok = guarded(d.errors.err, [&] {
        jpeg_create_decompress(&cinfo);
        cinfo.progress = &d.progress;
        jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
        jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
        jpeg_read_header(&cinfo, TRUE);
    });
    if (!header_ok) throw ImageError(std::string("JPEG: ") + d.errors.err.message);
    check_dimensions("JPEG", cinfo.image_width, cinfo.image_height, max_pixels);
}

static ImageInfo probe_jpeg(const uint8_t* data, size_t size, size_t max_pixels) {
    JpegDecoder d;
    read_jpeg_header(d, data, size, max_pixels);
    return upright_info(ImageFormat::jpeg, d.cinfo.image_width, d.cinfo.image_height,
                        jpeg_orientation(d.cinfo));
}

static Image decode_jpeg(const uint8_t* data, size_t size, size_t max_pixels) {
    JpegDecoder d;
    jpeg_decompress_struct& cinfo = d.cinfo;
    read_jpeg_header(d, data, size, max_pixels);
    const int orientation = jpeg_orientation(cinfo);  // saved markers die with the decode
    const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;

    Image im = blank_image(cinfo.image_width, cinfo.image_height);
    std::vector<uint8_t> cmyk_row(cmyk ? size_t{cinfo.image_width} * 4 : 0);
    const bool pixels_ok = guarded(d.errors.err, [&] {
        jpeg_start_decompress(&cinfo);
        if (cinfo.output_width != cinfo.image_width || cinfo.output_height != cinfo.image_height)
            codec_fail(d.errors.err, "unexpected output size");
        while (cinfo.output_scanline < cinfo.output_height) {
            uint8_t* out = im.rgb.data() + size_t{cinfo.output_scanline} * cinfo.output_width * 3;
            JSAMPROW row = cmyk ? cmyk_row.data() : out;
            if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) codec_fail(d.errors.err, "no data");
            // Adobe stores ink inverted (255 = none): R = (255 - C) * (255 - K) / 255 reads
            // as C' * K' / 255 on the stored bytes.
            for (size_t x = 0; cmyk && x < cinfo.output_width; ++x) {
                const uint8_t* p = &cmyk_row[x * 4];
                for (int c = 0; c < 3; ++c)
                    out[x * 3 + c] = static_cast<uint8_t>(p[c] * p[3] / 255);
            }
        }
        jpeg_finish_decompress(&cinfo);
    });
    if (!pixels_ok) throw ImageError(std::string("JPEG: ") + d.errors.err.message);
    return apply_orientation(std::move(im), orientation);
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng): every color type and depth to RGB8 as PIL's convert("RGB"): palette expanded,
// gray replicated, alpha dropped, 16-bit samples reduced to their high byte, gamma ignored.

struct PngSource {
    const uint8_t* data;
    size_t size, pos;
};

static void png_on_error(png_structp png, png_const_charp message) {
    codec_fail(*static_cast<CodecError*>(png_get_error_ptr(png)), message);
}

static void png_read_from(png_structp png, png_bytep out, size_t length) {
    auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
    if (length > src->size - src->pos) png_error(png, "truncated PNG data");
    std::memcpy(out, src->data + src->pos, length);
    src->pos += length;
}

struct PngDecoder {
    CodecError err;
    png_structp png = nullptr;
    png_infop info = nullptr;
    ~PngDecoder() { png_destroy_read_struct(&png, &info, nullptr); }
};

// Reads the chunks up to the image data and checks the size; `src` must outlive `d`'s reads.
static void read_png_header(PngDecoder& d, PngSource& src, size_t max_pixels) {
    d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d.err, png_on_error,
                                   [](png_structp, png_const_charp) {});
    if (d.png) d.info = png_create_info_struct(d.png);
    if (!d.png || !d.info) throw ImageError("PNG: out of memory");
    const bool header_ok = guarded(d.err, [&] {
        png_set_read_fn(d.png, &src, png_read_from);
        png_set_user_limits(d.png, kMaxImageSide, kMaxImageSide);
        png_read_info(d.png, d.info);
    });
    if (!header_ok) throw ImageError(std::string("PNG: ") + d.err.message);
    check_dimensions("PNG", png_get_image_width(d.png, d.info), png_get_image_height(d.png, d.info),
                     max_pixels);
}

static uint32_t be32(const uint8_t* p) {
    return uint32_t{p[0]} << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

// The orientation in the first eXIf chunk whose CRC holds (libpng drops one whose CRC does not),
// before or after the image data, found by walking the chunk headers without inflating anything.
static int png_chunk_orientation(const uint8_t* data, size_t size) {
    for (size_t at = 8; at + 12 <= size;) {
        const size_t length = be32(data + at);
        if (length > size - at - 12) break;
        const uint8_t* type = data + at + 4;
        if (std::memcmp(type, "IEND", 4) == 0) break;
        if (std::memcmp(type, "eXIf", 4) == 0 &&
            crc32(0, type, static_cast<uInt>(length + 4)) == be32(type + 4 + length))
            return exif_orientation(type + 4, length);
        at += 12 + length;
    }
    return 1;
}

static ImageInfo probe_png(const uint8_t* data, size_t size, size_t max_pixels) {
    PngDecoder d;
    PngSource src{data, size, 0};
    read_png_header(d, src, max_pixels);
    return upright_info(ImageFormat::png, png_get_image_width(d.png, d.info),
                        png_get_image_height(d.png, d.info), png_chunk_orientation(data, size));
}

static Image decode_png(const uint8_t* data, size_t size, size_t max_pixels) {
    PngDecoder d;
    PngSource src{data, size, 0};
    read_png_header(d, src, max_pixels);
    const png_uint_32 w = png_get_image_width(d.png, d.info);
    const png_uint_32 h = png_get_image_height(d.png, d.info);
    const bool layout_ok = guarded(d.err, [&] {
        const int type = png_get_color_type(d.png, d.info);
        if (png_get_bit_depth(d.png, d.info) == 16) png_set_strip_16(d.png);
        if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d.png);
        if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) {
            png_set_expand_gray_1_2_4_to_8(d.png);
            png_set_gray_to_rgb(d.png);
        }
        png_set_strip_alpha(d.png);
        png_set_interlace_handling(d.png);
        png_read_update_info(d.png, d.info);
        if (png_get_rowbytes(d.png, d.info) != size_t{w} * 3)
            codec_fail(d.err, "unsupported pixel layout");
    });
    if (!layout_ok) throw ImageError(std::string("PNG: ") + d.err.message);

    Image im = blank_image(w, h);
    std::vector<png_bytep> rows(h);
    for (png_uint_32 y = 0; y < h; ++y) rows[y] = im.rgb.data() + size_t{y} * w * 3;
    if (!guarded(d.err, [&] { png_read_image(d.png, rows.data()); }))
        throw ImageError(std::string("PNG: ") + d.err.message);
    // Chunks after the image data may hold eXIf; damage there does not spoil the pixels.
    guarded(d.err, [&] { png_read_end(d.png, d.info); });
    png_uint_32 exif_size = 0;
    png_bytep exif = nullptr;
    const int orientation =
        png_get_eXIf_1(d.png, d.info, &exif_size, &exif) ? exif_orientation(exif, exif_size) : 1;
    return apply_orientation(std::move(im), orientation);
}

// ---------------------------------------------------------------------------------------------
// WebP (libwebp): still images only; EXIF from the RIFF container's EXIF chunk.

static uint32_t le32(const uint8_t* p) {
    return p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24;
}

static int webp_orientation(const uint8_t* data, size_t size) {
    for (size_t at = 12; at + 8 <= size;) {
        const size_t length = le32(data + at + 4);
        if (length > size - at - 8) break;
        if (std::memcmp(data + at, "EXIF", 4) == 0) return exif_orientation(data + at + 8, length);
        at += 8 + length + (length & 1);
    }
    return 1;
}

static WebPBitstreamFeatures read_webp_header(const uint8_t* data, size_t size, size_t max_pixels) {
    WebPBitstreamFeatures features;
    const VP8StatusCode status = WebPGetFeatures(data, size, &features);
    if (status != VP8_STATUS_OK)
        throw ImageError("WebP: invalid header (status " + std::to_string(status) + ")");
    if (features.has_animation) throw ImageError("WebP: animated images are not supported");
    check_dimensions("WebP", static_cast<uint32_t>(features.width),
                     static_cast<uint32_t>(features.height), max_pixels);
    return features;
}

static ImageInfo probe_webp(const uint8_t* data, size_t size, size_t max_pixels) {
    const WebPBitstreamFeatures features = read_webp_header(data, size, max_pixels);
    return upright_info(ImageFormat::webp, static_cast<uint32_t>(features.width),
                        static_cast<uint32_t>(features.height), webp_orientation(data, size));
}

static Image decode_webp(const uint8_t* data, size_t size, size_t max_pixels) {
    const WebPBitstreamFeatures features = read_webp_header(data, size, max_pixels);
    Image im = blank_image(features.width, features.height);
    if (!WebPDecodeRGBInto(data, size, im.rgb.data(), im.rgb.size(), im.width * 3))
        throw ImageError("WebP: corrupt or truncated image data");
    return apply_orientation(std::move(im), webp_orientation(data, size));
}

// ---------------------------------------------------------------------------------------------

// The format from the magic bytes, the one place probe_image and decode_image tell them apart.
static ImageFormat sniff_format(const uint8_t* data, size_t size) {
    if (!data || size == 0) throw ImageError("empty image data");
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return ImageFormat::jpeg;
    if (size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::png;
    if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0)
        return ImageFormat::webp;
    throw ImageError("unrecognised image format (JPEG, PNG and WebP are supported)");
}

const char* image_format_name(ImageFormat format) {
    switch (format) {
        case ImageFormat::jpeg:
            return "jpeg";
        case ImageFormat::png:
            return "png";
        case ImageFormat::webp:
            return "webp";
    }
    return "unknown";
}

ImageInfo probe_image(const uint8_t* data, size_t size, size_t max_pixels) {
    switch (sniff_format(data, size)) {
        case ImageFormat::jpeg:
            return probe_jpeg(data, size, max_pixels);
        case ImageFormat::png:
            return probe_png(data, size, max_pixels);
        case ImageFormat::webp:
            return probe_webp(data, size, max_pixels);
    }
    throw ImageError("unrecognised image format");
}

Image decode_image(const uint8_t* data, size_t size, size_t max_pixels) {
    switch (sniff_format(data, size)) {
        case ImageFormat::jpeg:
            return decode_jpeg(data, size, max_pixels);
        case ImageFormat::png:
            return decode_png(data, size, max_pixels);
        case ImageFormat::webp:
            return decode_webp(data, size, max_pixels);
    }
    throw ImageError("unrecognised image format");
}

Image load_image(const std::string& path, size_t max_pixels) {
    std::vector<uint8_t> bytes;
    try {
        bytes = read_file_bytes(path);
    } catch (const std::runtime_error& e) {
        throw ImageError(e.what());
    }
    try {
        return decode_image(bytes.data(), bytes.size(), max_pixels);
    } catch (const ImageError& e) {
        throw ImageError(path + ": " + e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// PNG encoding into memory. The write callback must not throw through libpng: it records a
// failure and raises it as a libpng error once the exception is gone.

struct PngSink {
    std::vector<uint8_t> bytes;
    bool failed = false;
};

static void png_write_to(png_structp png, png_bytep data, size_t length) {
    auto* sink = static_cast<PngSink*>(png_get_io_ptr(png));
    try {
        sink->bytes.insert(sink->bytes.end(), data, data + length);
    } catch (...) {
        sink->failed = true;
    }
    if (sink->failed) png_error(png, "out of memory");
}

struct PngEncoder {
    CodecError err;
    png_structp png = nullptr;
    png_infop info = nullptr;
    ~PngEncoder() { png_destroy_write_struct(&png, &info); }
};

static std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int color_type,
                                       int channels) {
    if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide || !pixels)
        throw std::invalid_argument("encode_png: bad image size " + std::to_string(width) + "x" +
                                    std::to_string(height));
    PngEncoder e;
    e.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e.err, png_on_error,
                                    [](png_structp, png_const_charp) {});
    if (e.png) e.info = png_create_info_struct(e.png);
    if (!e.png || !e.info) throw ImageError("PNG: out of memory");
    PngSink sink;
    const bool ok = guarded(e.err, [&] {
        png_set_write_fn(e.png, &sink, png_write_to, nullptr);
        png_set_IHDR(e.png, e.info, width, height, 8, color_type, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_set_compression_level(e.png, 3);  // masks compress well; speed matters per click
        png_write_info(e.png, e.info);
        for (int y = 0; y < height; ++y)
            png_write_row(e.png, pixels + size_t(y) * width * channels);
        png_write_end(e.png, e.info);
    });
    if (!ok) throw ImageError(std::string("PNG encoding: ") + e.err.message);
    return std::move(sink.bytes);
}

std::vector<uint8_t> encode_png_gray(const uint8_t* pixels, int width, int height) {
    return encode_png(pixels, width, height, PNG_COLOR_TYPE_GRAY, 1);
}

std::vector<uint8_t> encode_png_rgba(const uint8_t* pixels, int width, int height) {
    return encode_png(pixels, width, height, PNG_COLOR_TYPE_RGB_ALPHA, 4);
}

}  // namespace splitseg
