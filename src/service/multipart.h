// multipart/form-data uploads (RFC 7578 on RFC 2046's multipart syntax): finds the one file part
// of a body. It reads untrusted bytes, so every limit is explicit and every malformation is a
// MultipartError with a 4xx status (fuzz/fuzz_multipart.cpp). No dependencies beyond the library.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace splitseg {

struct MultipartError : std::runtime_error {
    MultipartError(int status_, std::string code_, const std::string& message)
        : std::runtime_error(message), status(status_), code(std::move(code_)) {}
    int status;        // 400, or 413 for a part over its limit
    std::string code;  // "invalid_multipart" or "part_too_large"
};

struct MultipartLimits {
    size_t max_parts = 16;
    size_t max_header_bytes = 8 << 10;  // one part's header block
    size_t max_field_bytes = 64 << 10;  // a part that is not a file (ignored, but bounded)
    size_t max_file_bytes = 32 << 20;
};

struct MultipartFile {
    std::string field_name, filename, content_type;  // as the part's headers give them
    std::string_view data;                           // into the body it was found in
};

// The boundary of a "multipart/form-data; boundary=..." Content-Type; nullopt for any other
// type. Throws MultipartError when form-data has no valid boundary (1-70 of RFC 2046's bchars).
std::optional<std::string> multipart_boundary(std::string_view content_type);

// The body's one file part: the part whose Content-Disposition has a filename. Throws
// MultipartError when the body is malformed, has no file part or more than one, or a part is
// over its limit.
MultipartFile multipart_file(std::string_view body, std::string_view boundary,
                             const MultipartLimits& limits = {});

}  // namespace splitseg
