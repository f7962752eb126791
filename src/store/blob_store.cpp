#include "store/blob_store.h"

#include <stdexcept>

namespace splitseg {

Blob::Blob(std::vector<uint8_t> bytes) {
    auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    data_ = owned->data();
    size_ = owned->size();
    owner_ = std::move(owned);
}

void StoreCounters::fill(StoreStats* s) const {
    s->hits = hits.load(std::memory_order_relaxed);
    s->misses = misses.load(std::memory_order_relaxed);
    s->puts = puts.load(std::memory_order_relaxed);
    s->evictions = evictions.load(std::memory_order_relaxed);
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
