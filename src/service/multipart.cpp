#include "service/multipart.h"

#include <algorithm>
#include <cctype>
#include <map>

namespace splitseg {

namespace {

[[noreturn]] void malformed(const std::string& message) {
    throw MultipartError(400, "invalid_multipart", "multipart body: " + message);
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// A header value "type; name=value; name="quoted value"": the type, lower case, and the
// parameters (names lower case, quoted strings unescaped).
struct HeaderValue {
    std::string type;
    std::map<std::string, std::string> params;
};

HeaderValue parse_header_value(std::string_view value) {
    HeaderValue out;
    size_t i = value.find(';');
    out.type = lower(trim(value.substr(0, i)));
    while (i != std::string_view::npos && i < value.size()) {
        ++i;  // past ';'
        const size_t eq = value.find('=', i), semi = value.find(';', i);
        if (eq == std::string_view::npos || eq > semi) {
            if (semi == std::string_view::npos && trim(value.substr(i)).empty()) break;  // "a;"
            malformed("a header parameter without '='");
        }
        const std::string name = lower(trim(value.substr(i, eq - i)));
        size_t j = eq + 1;
        while (j < value.size() && (value[j] == ' ' || value[j] == '\t')) ++j;
        std::string param;
        if (j < value.size() && value[j] == '"') {
            for (++j;; ++j) {
                if (j >= value.size()) malformed("an unterminated quoted string");
                if (value[j] == '"') break;
                if (value[j] == '\\' && j + 1 < value.size()) ++j;
                param += value[j];
            }
            i = value.find(';', j);
            if (!trim(value.substr(j + 1, i == std::string_view::npos ? i : i - j - 1)).empty())
                malformed("text after a quoted string");
        } else {
            i = value.find(';', j);
            param = std::string(trim(value.substr(j, i == std::string_view::npos ? i : i - j)));
        }
        if (name.empty()) malformed("a header parameter without a name");
        if (!out.params.emplace(name, std::move(param)).second)
            malformed("the header parameter " + name + " given twice");
    }
    return out;
}

bool valid_boundary(std::string_view b) {
    static constexpr std::string_view kExtra = "'()+_,-./:=? ";
    if (b.empty() || b.size() > 70 || b.back() == ' ') return false;
    return std::all_of(b.begin(), b.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) ||
               kExtra.find(ch) != std::string_view::npos;
    });
}

// What a part's headers say about it.
struct PartHeaders {
    std::string name, content_type;
    std::optional<std::string> filename;
};

PartHeaders parse_part_headers(std::string_view block) {
    PartHeaders out;
    bool disposition = false;
    while (!block.empty()) {
        const size_t eol = block.find("\r\n");
        const std::string_view line = block.substr(0, eol);
        block = eol == std::string_view::npos ? std::string_view() : block.substr(eol + 2);
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0 || line.front() == ' ' ||
            line.front() == '\t') {
            malformed("a part header line is not 'Name: value'");
        }
        const std::string name = lower(line.substr(0, colon));
        const std::string_view value = trim(line.substr(colon + 1));
        if (name == "content-disposition") {
            if (disposition) malformed("a part has two Content-Disposition headers");
            disposition = true;
            HeaderValue v = parse_header_value(value);
            if (v.type != "form-data") malformed("a part's Content-Disposition is not form-data");
            auto it = v.params.find("name");
            if (it == v.params.end()) malformed("a part's Content-Disposition has no name");
            out.name = it->second;
            // filename* (RFC 5987) is discouraged by RFC 7578 but still marks a file.
            for (const char* key : {"filename", "filename*"})
                if ((it = v.params.find(key)) != v.params.end()) out.filename = it->second;
        } else if (name == "content-type") {
            out.content_type = std::string(value);
        } else if (name == "content-transfer-encoding") {
            const std::string encoding = lower(value);
            if (encoding != "binary" && encoding != "8bit" && encoding != "7bit")
                malformed("Content-Transfer-Encoding " + std::string(value) + " is not supported");
        }
    }
    if (!disposition) malformed("a part has no Content-Disposition header");
    return out;
}

}  // namespace

std::optional<std::string> multipart_boundary(std::string_view content_type) {
    const HeaderValue v = [&] {
        try {
            return parse_header_value(content_type);
        } catch (const MultipartError&) {
            // Only form-data is ours to refuse; a malformed header of another type is raw.
            if (lower(trim(content_type.substr(0, content_type.find(';')))) !=
                "multipart/form-data")
                return HeaderValue{};
            throw;
        }
    }();
    if (v.type != "multipart/form-data") return std::nullopt;
    auto it = v.params.find("boundary");
    if (it == v.params.end()) malformed("multipart/form-data without a boundary parameter");
    if (!valid_boundary(it->second)) malformed("the boundary is not 1-70 of RFC 2046's bchars");
    return it->second;
}

MultipartFile multipart_file(std::string_view body, std::string_view boundary,
                             const MultipartLimits& limits) {
    if (!valid_boundary(boundary)) malformed("the boundary is not 1-70 of RFC 2046's bchars");
    const std::string delimiter = "\r\n--" + std::string(boundary);
    // The first boundary line opens the body or follows a preamble; the others follow a CRLF.
    size_t pos = body.rfind(delimiter.substr(2), 0) == 0 ? 0 : body.find(delimiter);
    if (pos == std::string_view::npos) malformed("no boundary line");
    pos += body.compare(pos, 2, "\r\n") == 0 ? delimiter.size() : delimiter.size() - 2;

    std::optional<MultipartFile> file;
    for (size_t parts = 0;; ++parts) {
        if (body.compare(pos, 2, "--") == 0) break;  // the close delimiter; the rest is epilogue
        while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
        if (body.compare(pos, 2, "\r\n") != 0) {
            malformed(pos >= body.size() ? "the body ends without a closing boundary"
                                         : "a boundary line is followed by text");
        }
        pos += 2;
        if (parts == limits.max_parts) {
            malformed("more than " + std::to_string(limits.max_parts) + " parts");
        }
        // Headers end at an empty line; a part may have none (then it starts with CRLF).
        size_t data_start;
        std::string_view headers;
        if (body.compare(pos, 2, "\r\n") == 0) {
            data_start = pos + 2;
        } else {
            const std::string_view window = body.substr(pos, limits.max_header_bytes + 4);
            const size_t end = window.find("\r\n\r\n");
            if (end == std::string_view::npos || end > limits.max_header_bytes) {
                malformed(window.size() > limits.max_header_bytes
                              ? "a part's headers are over " +
                                    std::to_string(limits.max_header_bytes) + " bytes"
                              : "a part's headers are unterminated");
            }
            headers = window.substr(0, end);
            data_start = pos + end + 4;
        }
        const size_t data_end = body.find(delimiter, data_start);
        if (data_end == std::string_view::npos) malformed("a part is unterminated");
        const PartHeaders h = parse_part_headers(headers);
        const std::string_view data = body.substr(data_start, data_end - data_start);
        const size_t limit = h.filename ? limits.max_file_bytes : limits.max_field_bytes;
        if (data.size() > limit) {
            throw MultipartError(413, "part_too_large",
                                 "multipart body: the part '" + h.name + "' is over " +
                                     std::to_string(limit) + " bytes");
        }
        if (h.filename) {
            if (file) malformed("more than one file part; upload one image per request");
            file = MultipartFile{h.name, *h.filename, h.content_type, data};
        }
        pos = data_end + delimiter.size();
    }
    if (!file) malformed("no file part (a part whose Content-Disposition has a filename)");
    return *file;
}

}  // namespace splitseg
