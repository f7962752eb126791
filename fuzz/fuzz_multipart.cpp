// libFuzzer target: the upload route's multipart/form-data parser on arbitrary bytes. The input's
// first line is the Content-Type header, the rest the body. It must either find a file part that
// lies inside the body and within the limits, or throw MultipartError with a 4xx; never crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "service/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const size_t eol = input.find('\n');
    const std::string_view content_type = input.substr(0, eol);
    const std::string_view body =
        eol == std::string_view::npos ? std::string_view() : input.substr(eol + 1);
    splitseg::MultipartLimits limits;
    limits.max_parts = 8;
    limits.max_header_bytes = 256;
    limits.max_field_bytes = 1024;
    limits.max_file_bytes = 4096;
    try {
        const std::optional<std::string> boundary = splitseg::multipart_boundary(content_type);
        if (!boundary) return 0;
        const splitseg::MultipartFile file = splitseg::multipart_file(body, *boundary, limits);
        const bool inside = file.data.data() >= body.data() &&
                            file.data.data() + file.data.size() <= body.data() + body.size();
        if (!inside || file.data.size() > limits.max_file_bytes) std::abort();
    } catch (const splitseg::MultipartError& e) {
        if (e.status < 400 || e.status > 499) std::abort();
    }
    return 0;
}
