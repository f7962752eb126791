#include "store/memory_store.h"

namespace splitseg {

MemoryStore::MemoryStore(uint64_t max_bytes) : max_bytes_(max_bytes) {}

std::optional<Blob> MemoryStore::get(const std::string& key) {
    check_key(key);
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    counters_.count_lookup(it != index_.end());
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->blob;
}

void MemoryStore::put(const std::string& key, std::span<const uint8_t> bytes) {
    check_key(key);
    if (bytes.size() > max_bytes_) return;  // would evict everything and still not fit
    Blob blob(std::vector<uint8_t>(bytes.begin(), bytes.end()));  // copied outside the lock
    std::lock_guard lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) erase_locked(it->second);
    order_.push_front({key, std::move(blob)});
    index_.emplace(key, order_.begin());
    bytes_ += bytes.size();
    counters_.puts.fetch_add(1, std::memory_order_relaxed);
    evict_locked(max_bytes_);
}

void MemoryStore::remove(const std::string& key) {
    check_key(key);
    std::lock_guard lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) erase_locked(it->second);
}

bool MemoryStore::contains(const std::string& key) {
    check_key(key);
    std::lock_guard lock(mu_);
    return index_.count(key) > 0;
}

std::vector<BlobInfo> MemoryStore::list() {
    std::vector<BlobInfo> out;
    {
        std::lock_guard lock(mu_);
        for (const Entry& e : order_) out.push_back({e.key, e.blob.size()});
    }
    sort_by_key(out);
    return out;
}

StoreStats MemoryStore::stats() {
    std::string tier = describe();
    std::lock_guard lock(mu_);
    return counters_.stats(std::move(tier), index_.size(), bytes_, max_bytes_);
}

std::optional<uint64_t> MemoryStore::evict_to(uint64_t max_bytes) {
    std::lock_guard lock(mu_);
    return evict_locked(max_bytes);
}

void MemoryStore::erase_locked(Order::iterator it) {
    bytes_ -= it->blob.size();
    index_.erase(it->key);
    order_.erase(it);
}

uint64_t MemoryStore::evict_locked(uint64_t max_bytes) {
    uint64_t evicted = 0;
    while (bytes_ > max_bytes && !order_.empty()) {
        erase_locked(std::prev(order_.end()));
        ++evicted;
    }
    counters_.evictions.fetch_add(evicted, std::memory_order_relaxed);
    return evicted;
}

}  // namespace splitseg
