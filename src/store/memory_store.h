// MemoryStore: the in-process tier. A least-recently-used cache under a byte budget; get() and
// put() are O(1) and share one mutex (entries are shared, never copied out).
#pragma once

#include <list>
#include <mutex>
#include <unordered_map>

#include "store/blob_store.h"

namespace splitseg {

class MemoryStore : public BlobStore {
  public:
    explicit MemoryStore(uint64_t max_bytes);

    std::optional<Blob> get(const std::string& key) override;
    void put(const std::string& key, std::span<const uint8_t> bytes) override;
    void remove(const std::string& key) override;
    bool contains(const std::string& key) override;
    std::vector<BlobInfo> list() override;
    StoreStats stats() override;
    std::optional<uint64_t> evict_to(uint64_t max_bytes) override;
    std::string describe() const override { return "memory"; }

  private:
    struct Entry {
        std::string key;
        Blob blob;
    };
    using Order = std::list<Entry>;  // most recently used first

    void erase_locked(Order::iterator it);
    uint64_t evict_locked(uint64_t max_bytes);

    const uint64_t max_bytes_;
    std::mutex mu_;
    Order order_;
    std::unordered_map<std::string, Order::iterator> index_;
    uint64_t bytes_ = 0;
    StoreCounters counters_;
};

}  // namespace splitseg
