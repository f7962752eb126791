// ByteReader: a bounds-checked cursor over untrusted bytes, shared by the weight-file parsers.
// Every read checks the remaining length first and throws FormatError("truncated <what>").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "engine/weights/format_error.h"

namespace splitseg {

// Little-endian unsigned integer at p (files are little-endian; so are our targets).
template <typename T>
T load_le(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

class ByteReader {
  public:
    explicit ByteReader(std::span<const uint8_t> bytes, size_t pos = 0) : bytes_(bytes), pos_(pos) {
        if (pos > bytes.size())
            throw FormatError("offset " + std::to_string(pos) + " past the end");
    }

    size_t pos() const { return pos_; }
    size_t remaining() const { return bytes_.size() - pos_; }

    std::span<const uint8_t> take(size_t n, std::string_view what) {
        if (n > remaining()) throw FormatError("truncated " + std::string(what));
        std::span<const uint8_t> s = bytes_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::string_view take_string(size_t n, std::string_view what) {
        std::span<const uint8_t> s = take(n, what);
        return {reinterpret_cast<const char*>(s.data()), s.size()};
    }
    template <typename T>
    T le(std::string_view what) {
        return load_le<T>(take(sizeof(T), what).data());
    }
    uint8_t u8(std::string_view what) { return take(1, what)[0]; }
    uint16_t u16(std::string_view what) { return le<uint16_t>(what); }
    uint32_t u32(std::string_view what) { return le<uint32_t>(what); }
    uint64_t u64(std::string_view what) { return le<uint64_t>(what); }

  private:
    std::span<const uint8_t> bytes_;
    size_t pos_;
};

}  // namespace splitseg
