#include "store/blob_store.h"

#include <algorithm>
#include <stdexcept>

namespace splitseg {

Blob::Blob(std::vector<uint8_t> bytes) {
    auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    data_ = owned->data();
    size_ = owned->size();
    owner_ = std::move(owned);
}

StoreStats StoreCounters::stats(std::string tier, uint64_t entries, uint64_t bytes,
                                uint64_t max_bytes) const {
    StoreStats s;
    s.tier = std::move(tier);
    s.entries = entries;
    s.bytes = bytes;
    s.max_bytes = max_bytes;
    s.hits = hits.load(std::memory_order_relaxed);
    s.misses = misses.load(std::memory_order_relaxed);
    s.puts = puts.load(std::memory_order_relaxed);
    s.evictions = evictions.load(std::memory_order_relaxed);
    return s;
}

void sort_by_key(std::vector<BlobInfo>& blobs) {
    std::sort(blobs.begin(), blobs.end(),
              [](const BlobInfo& a, const BlobInfo& b) { return a.key < b.key; });
}

StoreStats listed_stats(std::string tier, const std::vector<BlobInfo>& blobs,
                        const StoreCounters& counters) {
    uint64_t bytes = 0;
    for (const BlobInfo& b : blobs) bytes += b.size;
    return counters.stats(std::move(tier), blobs.size(), bytes);
}

bool is_valid_key(const std::string& key) {
    if (key.empty() || key.size() > 200 || key[0] == '.') return false;
    if (key.find("..") != std::string::npos) return false;
    for (char c : key) {
        const bool ok =
            (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

void check_key(const std::string& key) {
    if (!is_valid_key(key))
        throw std::invalid_argument("invalid store key '" + key.substr(0, 64) +
                                    "' (1-200 of [0-9a-z._-], not starting with '.')");
}

}  // namespace splitseg
