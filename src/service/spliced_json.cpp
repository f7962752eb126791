#include "service/spliced_json.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace splitseg {

namespace {

// The placeholder of held string i: a control character no reply of ours holds, and the index.
std::string placeholder(size_t i) {
    std::string p(1, '\x01');  // not "\x01" + ...: GCC 12 warns of a restrict overlap there
    p += std::to_string(i);
    return p;
}

// The offset of the first byte of s from `from` on that JSON needs escaped ('"', '\\', the
// control characters), or s.size(). 16 bytes a step: a mask's counts hold a backslash every 64
// bytes or so, and a byte-by-byte loop took ~1 ns a byte.
size_t next_escape(std::string_view s, size_t from) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i last_control = _mm_set1_epi8(0x1f);
    for (; from + 16 <= s.size(); from += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + from));
        const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);  // v <= 0x1f
        const __m128i hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), control);
        if (const int mask = _mm_movemask_epi8(hit)) return from + __builtin_ctz(mask);
    }
#endif
    for (; from < s.size(); ++from) {
        const unsigned char c = static_cast<unsigned char>(s[from]);
        if (c < 0x20 || c == '"' || c == '\\') break;
    }
    return from;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    size_t run = 0;  // start of the bytes not yet written
    for (size_t i = next_escape(s, 0); i < s.size(); i = next_escape(s, run)) {
        out.append(s.data() + run, i - run);
        run = i + 1;
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            continue;
        }
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
        out += escaped;
    }
    out.append(s.data() + run, s.size() - run);
    out += '"';
}

nlohmann::json SplicedJson::hold(std::string text) {
    strings_.push_back(std::move(text));
    return placeholder(strings_.size() - 1);
}

std::string SplicedJson::dump(const nlohmann::json& body) const {
    const std::string text = body.dump();
    struct Splice {
        size_t offset, length, string;  // the placeholder's dumped form in text, what replaces it
        bool operator<(const Splice& o) const { return offset < o.offset; }
    };
    std::vector<Splice> splices;
    size_t bytes = text.size();
    for (size_t i = 0; i < strings_.size(); ++i) {
        const std::string dumped = nlohmann::json(placeholder(i)).dump();  // quotes included
        const size_t first = text.find(dumped);
        if (first == std::string::npos || text.find(dumped, first + 1) != std::string::npos)
            throw std::logic_error("SplicedJson: a placeholder is not in the body exactly once");
        splices.push_back({first, dumped.size(), i});
        bytes += strings_[i].size() + 2;
    }
    std::sort(splices.begin(), splices.end());
    std::string out;
    out.reserve(bytes + bytes / 16);  // room for some escapes
    size_t copied = 0;
    for (const Splice& s : splices) {
        out.append(text, copied, s.offset - copied);
        append_json_string(out, strings_[s.string]);
        copied = s.offset + s.length;
    }
    out.append(text, copied, std::string::npos);
    return out;
}

}  // namespace splitseg
