// DiskStore: the local disk tier, one file per entry in a single directory.
//  - Writes are atomic: a temporary file in the same directory (".tmp-*", never a valid key),
//    written, fsync'ed, renamed over the key and the directory fsync'ed. A reader sees the old
//    entry or the new one, never part of one, even if the writer is killed.
//  - A writer holds an flock on its temporary file until the rename, so opening a store removes
//    exactly the temporary files whose writer died, even while other processes write.
//  - Reads map the file (no copy); a replaced or evicted file stays valid while mapped.
//  - Least-recently-used eviction by total bytes. get() sets the file's mtime, so the order
//    survives a restart: opening a store rebuilds its index from the directory, oldest first.
// Several processes may share a directory; each evicts by its own view of it.
#pragma once

#include <list>
#include <mutex>
#include <unordered_map>

#include "store/blob_store.h"

namespace splitseg {

class DiskStore : public BlobStore {
  public:
    // Creates the directory if needed, removes dead writers' temporary files, indexes the entries
    // and evicts down to max_bytes (0 = unbounded). Throws std::system_error.
    explicit DiskStore(std::string dir, uint64_t max_bytes = 0);
    ~DiskStore() override;
    DiskStore(const DiskStore&) = delete;
    DiskStore& operator=(const DiskStore&) = delete;

    std::optional<Blob> get(const std::string& key) override;
    void put(const std::string& key, std::span<const uint8_t> bytes) override;
    void remove(const std::string& key) override;
    bool contains(const std::string& key) override;
    std::vector<BlobInfo> list() override;
    StoreStats stats() override;
    std::optional<uint64_t> evict_to(uint64_t max_bytes) override;
    std::string describe() const override { return "disk:" + dir_; }

    const std::string& dir() const { return dir_; }

  private:
    struct Entry {
        uint64_t size = 0;
        std::list<std::string>::iterator pos;  // into order_
    };

    void open_index();
    int create_temp_file(std::string* name);
    void touch_locked(const std::string& key, uint64_t size);
    void erase_locked(const std::string& key);
    uint64_t evict_locked(uint64_t max_bytes);

    const std::string dir_;
    const uint64_t max_bytes_;
    int dir_fd_ = -1;
    std::mutex mu_;
    std::list<std::string> order_;  // most recently used first
    std::unordered_map<std::string, Entry> index_;
    uint64_t bytes_ = 0;
    StoreCounters counters_;
};

}  // namespace splitseg
