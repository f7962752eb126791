// BlobStore: one cache tier of immutable byte blobs under safe string keys. Every tier (memory,
// disk, Azure Blob, S3) implements it, and TieredStore composes them (tiered_store.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace splitseg {

// Immutable bytes of one entry, cheap to copy: it shares whatever owns the bytes (a heap
// buffer, or a read-only file mapping for the disk tier), which lives as long as any copy.
class Blob {
  public:
    explicit Blob(std::vector<uint8_t> bytes);
    // Keeps `owner` alive for as long as the blob; data/size point into it.
    Blob(std::shared_ptr<const void> owner, const uint8_t* data, size_t size)
        : owner_(std::move(owner)), data_(data), size_(size) {}

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    std::vector<uint8_t> to_vector() const { return {data_, data_ + size_}; }

  private:
    std::shared_ptr<const void> owner_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

struct BlobInfo {
    std::string key;
    uint64_t size = 0;
};

// What a tier holds and how it has been used since this process opened it.
struct StoreStats {
    std::string tier;        // describe() of the store
    uint64_t entries = 0;    // entries held now
    uint64_t bytes = 0;      // their total size
    uint64_t max_bytes = 0;  // byte budget; 0 = unbounded
    uint64_t hits = 0, misses = 0, puts = 0, evictions = 0;
    // Kept by TieredStore for each of its tiers:
    uint64_t corrupt = 0;      // entries dropped because they failed verification
    uint64_t fill_errors = 0;  // failed copies of a lower tier's hit into this tier
};

// Usage counters every store keeps; atomics so that readers need no lock.
struct StoreCounters {
    std::atomic<uint64_t> hits{0}, misses{0}, puts{0}, evictions{0};
    void count_lookup(bool hit) { (hit ? hits : misses).fetch_add(1, std::memory_order_relaxed); }
    // The stats of a tier that holds `entries` entries of `bytes` in all, with these counters.
    StoreStats stats(std::string tier, uint64_t entries, uint64_t bytes,
                     uint64_t max_bytes = 0) const;
};

// Sorts a listing by key (every store's list() returns one so).
void sort_by_key(std::vector<BlobInfo>& blobs);
// The counters' stats with entries and bytes counted off a listing (stores that keep no index).
StoreStats listed_stats(std::string tier, const std::vector<BlobInfo>& blobs,
                        const StoreCounters& counters);

// Keys are 1 to 200 characters of [0-9a-z._-], not starting with '.' (so "." and "..", hidden
// files and the disk tier's temporary files can never be keys) and never containing "..".
bool is_valid_key(const std::string& key);
// Throws std::invalid_argument naming the key unless is_valid_key().
void check_key(const std::string& key);

// All methods are thread-safe. Methods taking a key throw std::invalid_argument for an invalid
// one; I/O failures throw std::runtime_error (std::system_error for the local disk).
class BlobStore {
  public:
    virtual ~BlobStore() = default;

    virtual std::optional<Blob> get(const std::string& key) = 0;
    // Stores a copy of the bytes under key, replacing any entry there. A store with a byte budget
    // keeps nothing larger than the whole budget.
    virtual void put(const std::string& key, std::span<const uint8_t> bytes) = 0;
    // Removes the entry if there is one.
    virtual void remove(const std::string& key) = 0;
    virtual bool contains(const std::string& key) = 0;
    // Every entry, sorted by key. Object stores list their container (one request per 1000 keys).
    virtual std::vector<BlobInfo> list() = 0;
    virtual StoreStats stats() = 0;
    // Evicts least recently used entries until at most max_bytes remain and returns how many
    // went; std::nullopt for a store that never evicts (object storage keeps everything).
    virtual std::optional<uint64_t> evict_to(uint64_t max_bytes) { return std::nullopt; }
    // The tier in words, e.g. "disk:/var/cache/splitseg"; never contains secrets.
    virtual std::string describe() const = 0;
};

}  // namespace splitseg
