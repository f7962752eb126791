// Whole-file reads and crash-safe writes, shared by every layer that writes files
// (checkpoints, bundles, masks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace splitseg {

// The file's bytes; throws std::system_error naming the file.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// A file that appears at its path complete or not at all: written to a temporary beside it,
// synced, renamed over it, and the directory synced. Destroyed uncommitted, it removes the
// temporary. Writing in pieces lets multi-GB files stream without one big buffer.
class AtomicFile {
public:
    explicit AtomicFile(const std::string& path);
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile();

    void write(const void* data, size_t n);
    void commit();

private:
    std::string path_, tmp_;
    int fd_ = -1;
    bool committed_ = false;
};

// Writes `bytes` through an AtomicFile. Throws std::system_error naming the file.
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace splitseg
