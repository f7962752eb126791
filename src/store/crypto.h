// The few cryptographic primitives the object-store request signers need (OpenSSL libcrypto).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace splitseg {

std::vector<uint8_t> sha256(std::span<const uint8_t> data);
std::vector<uint8_t> hmac_sha256(std::span<const uint8_t> key, std::string_view message);

std::string to_hex(std::span<const uint8_t> bytes);  // lowercase
std::string base64_encode(std::span<const uint8_t> bytes);
// Throws std::invalid_argument unless `text` is valid padded base64.
std::vector<uint8_t> base64_decode(std::string_view text);

inline std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace splitseg
