// Helpers shared by the store tests: scratch directories, self-checking blobs, small bundles.
#pragma once

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "runtime/bundle.h"
#include "store/blob_store.h"

namespace splitseg::test {

// A fresh directory under the test temp dir, removed with everything in it at scope end.
class ScratchDir {
  public:
    ScratchDir() {
        std::string templ = ::testing::TempDir() + "splitseg-store-XXXXXX";
        if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
        path_ = templ;
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

  private:
    std::string path_;
};

// `size` bytes (at least 8) whose first 8 are the xxh64 of the rest: a torn or mixed entry
// fails is_intact().
inline std::vector<uint8_t> checked_blob(size_t size, uint64_t seed) {
    std::vector<uint8_t> b(std::max<size_t>(size, 8));
    std::mt19937_64 rng(seed);
    for (size_t i = 8; i < b.size(); i += 8) {
        const uint64_t v = rng();
        std::memcpy(b.data() + i, &v, std::min<size_t>(8, b.size() - i));
    }
    const uint64_t h = XXH64(b.data() + 8, b.size() - 8, 0);
    std::memcpy(b.data(), &h, 8);
    return b;
}

inline bool is_intact(std::span<const uint8_t> b) {
    if (b.size() < 8) return false;
    uint64_t h = 0;
    std::memcpy(&h, b.data(), 8);
    return h == XXH64(b.data() + 8, b.size() - 8, 0);
}

// prefix followed by the numbers, '-'-separated: numbered("r", {3, 4}) == "r3-4".
inline std::string numbered(const std::string& prefix, std::initializer_list<long> numbers) {
    std::string out = prefix;
    for (long n : numbers) {
        if (out.size() > prefix.size()) out += '-';
        out += std::to_string(n);
    }
    return out;
}

inline std::vector<uint8_t> bytes(const std::string& s) {
    return {s.begin(), s.end()};
}
inline std::string text(const Blob& b) {
    return {b.data(), b.data() + b.size()};
}

// A SAM-shaped embedding ([256, 64, 64], pseudo-random) of the given hashes.
inline Embedding test_embedding(const std::string& image_hash, const std::string& model_hash,
                                uint32_t seed = 1) {
    Embedding e;
    e.family = ModelFamily::Sam;
    e.image_hash = image_hash;
    e.model_hash = model_hash;
    e.geom = {640, 480, 1024, 768, 1024, ResizeMode::LongestSide};
    e.image_embed = Tensor({256, 64, 64});
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < e.image_embed.numel(); ++i) e.image_embed[i] = dist(rng);
    return e;
}

}  // namespace splitseg::test
