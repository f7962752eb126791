// TieredStore: tiers in lookup order, fastest first (memory, disk, object storage).
//  - get() tries each tier in turn; a hit in tier i is copied into tiers 0..i-1, so the next
//    lookup is served from the fastest. A failed copy is counted, never fails the read.
//  - An optional verifier checks each hit; an entry that fails is removed from the tier that held
//    it and the next tier is tried, so a corrupt entry is never served.
//  - put() writes through every tier, the slowest (most durable) first: by the time an entry is
//    visible in a fast tier it is already stored below it. A failing tier fails the put.
#pragma once

#include <functional>
#include <memory>

#include "store/blob_store.h"

namespace splitseg {

class TieredStore : public BlobStore {
  public:
    // Returns false for an entry that must not be served.
    using Verifier = std::function<bool(const Blob&)>;

    // Throws std::invalid_argument for no tiers.
    explicit TieredStore(std::vector<std::unique_ptr<BlobStore>> tiers);

    std::optional<Blob> get(const std::string& key) override { return get(key, {}); }
    std::optional<Blob> get(const std::string& key, const Verifier& verify);
    void put(const std::string& key, std::span<const uint8_t> bytes) override;
    void remove(const std::string& key) override;    // from every tier
    bool contains(const std::string& key) override;  // in any tier
    std::vector<BlobInfo> list() override;           // every key of every tier
    // Lookups and puts of the whole; entries and bytes of list().
    StoreStats stats() override;
    // Evicts in each tier that evicts; std::nullopt when none does.
    std::optional<uint64_t> evict_to(uint64_t max_bytes) override;
    std::string describe() const override;  // the tiers', comma-separated

    size_t tier_count() const { return tiers_.size(); }
    BlobStore& tier(size_t i) { return *tiers_.at(i); }
    // Each tier's stats() with the corrupt entries and fill errors seen through this store.
    std::vector<StoreStats> tier_stats();

  private:
    struct TierCounters {
        std::atomic<uint64_t> corrupt{0}, fill_errors{0};
    };

    void fill_above(size_t tier, const std::string& key, const Blob& blob);

    std::vector<std::unique_ptr<BlobStore>> tiers_;
    std::vector<TierCounters> tier_counters_;
    StoreCounters counters_;
};

}  // namespace splitseg
