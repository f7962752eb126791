#include "store/crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cctype>
#include <stdexcept>

namespace splitseg {

std::vector<uint8_t> sha256(std::span<const uint8_t> data) {
    std::vector<uint8_t> out(32);
    unsigned int n = 0;
    if (!EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr) || n != 32)
        throw std::runtime_error("SHA-256 failed");
    return out;
}

std::vector<uint8_t> hmac_sha256(std::span<const uint8_t> key, std::string_view message) {
    std::vector<uint8_t> out(32);
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(message.data()), message.size(), out.data(),
              &n) ||
        n != 32)
        throw std::runtime_error("HMAC-SHA256 failed");
    return out;
}

std::string to_hex(std::span<const uint8_t> bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (uint8_t b : bytes) {
        out.push_back(kDigits[b >> 4]);
        out.push_back(kDigits[b & 15]);
    }
    return out;
}

std::string base64_encode(std::span<const uint8_t> bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3), '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(),
                                  static_cast<int>(bytes.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

std::vector<uint8_t> base64_decode(std::string_view text) {
    size_t padding = 0;
    while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=')
        ++padding;
    if (text.size() % 4 != 0)
        throw std::invalid_argument("base64 text length is not a multiple of 4");
    // EVP_DecodeBlock skips whitespace and ignores misplaced padding: check the alphabet first.
    for (char c : text.substr(0, text.size() - padding))
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/')
            throw std::invalid_argument("invalid base64 character");
    std::vector<uint8_t> out(3 * (text.size() / 4));
    const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                  static_cast<int>(text.size()));
    if (n < 0) throw std::invalid_argument("invalid base64 text");
    out.resize(static_cast<size_t>(n) - padding);  // n counts the padding's zero bytes
    return out;
}

}  // namespace splitseg
