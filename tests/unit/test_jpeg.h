// A JPEG writer for tests (libjpeg-turbo), with the options the decoder tests need: an APP1
// segment, grayscale or CMYK input, a progressive scan script.
#pragma once

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE
#include <jpeglib.h>
// clang-format on

#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

namespace splitseg::test {

struct JpegOptions {
    int quality = 95;
    std::vector<uint8_t> app1;  // written as an APP1 segment when not empty
    bool grayscale = false;
    bool cmyk = false;                  // pixels then hold 4 channels
    std::vector<jpeg_scan_info> scans;  // progressive scan script when not empty
};

inline JpegOptions with_app1(std::vector<uint8_t> app1) {
    JpegOptions o;
    o.app1 = std::move(app1);
    return o;
}

inline std::vector<uint8_t> make_jpeg(const uint8_t* pixels, int w, int h,
                                      const JpegOptions& opt = {}) {
    jpeg_compress_struct cinfo{};
    jpeg_error_mgr err{};
    cinfo.err = jpeg_std_error(&err);  // the test data is valid: default errors are fine here
    jpeg_create_compress(&cinfo);
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&cinfo, &buf, &size);
    cinfo.image_width = w;
    cinfo.image_height = h;
    cinfo.input_components = opt.grayscale ? 1 : opt.cmyk ? 4 : 3;
    cinfo.in_color_space = opt.grayscale ? JCS_GRAYSCALE : opt.cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, opt.quality, TRUE);
    if (!opt.scans.empty()) {
        cinfo.scan_info = opt.scans.data();
        cinfo.num_scans = static_cast<int>(opt.scans.size());
    }
    jpeg_start_compress(&cinfo, TRUE);
    if (!opt.app1.empty())
        jpeg_write_marker(&cinfo, JPEG_APP0 + 1, opt.app1.data(),
                          static_cast<unsigned>(opt.app1.size()));
    const int stride = w * cinfo.input_components;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = const_cast<uint8_t*>(pixels) + cinfo.next_scanline * stride;
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    std::vector<uint8_t> out(buf, buf + size);
    jpeg_destroy_compress(&cinfo);
    std::free(buf);
    return out;
}

}  // namespace splitseg::test
