// Images in and out: JPEG, PNG and WebP decoded to 8-bit RGB (EXIF orientation applied, alpha
// dropped, as PIL's ImageOps.exif_transpose + convert("RGB")); masks and cut-outs encoded as PNG.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/file_io.h"

namespace splitseg {

// 8-bit RGB, row-major, interleaved: rgb[(y * width + x) * 3 + c].
struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;
};

// Malformed, truncated, unsupported or too large image data.
struct ImageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Largest side accepted from any format (JPEG's and WebP's own limits are at most this).
inline constexpr int kMaxImageSide = 65535;

enum class ImageFormat { jpeg, png, webp };
const char* image_format_name(ImageFormat format);  // "jpeg", "png", "webp"

// What an image's header says: its format and the size decode_image would return (EXIF
// orientation applied, so a rotated photo reports its upright size).
struct ImageInfo {
    ImageFormat format;
    int width = 0, height = 0;
};

// Reads only the header (JPEG markers up to the first scan, PNG chunks up to the image data,
// WebP's RIFF header): cheap even on a 50 MP photo. Its checks are decode_image's: unknown,
// corrupt or truncated headers, zero or too large sides and, when max_pixels > 0, more pixels
// than that throw ImageError. A body damaged after the header is only found by decode_image.
ImageInfo probe_image(const uint8_t* data, size_t size, size_t max_pixels = 0);

// Decodes JPEG, PNG or WebP (recognised by their magic bytes). max_pixels > 0 rejects images with
// more pixels, judged from the header before any pixel memory is allocated. Throws ImageError.
Image decode_image(const uint8_t* data, size_t size, size_t max_pixels = 0);
// Reads and decodes a file; throws ImageError (also when the file cannot be read).
Image load_image(const std::string& path, size_t max_pixels = 0);

// PNG encoders: 8-bit grayscale (masks) and 8-bit RGBA (cut-outs), pixels row-major.
std::vector<uint8_t> encode_png_gray(const uint8_t* pixels, int width, int height);
std::vector<uint8_t> encode_png_rgba(const uint8_t* pixels, int width, int height);

}  // namespace splitseg
