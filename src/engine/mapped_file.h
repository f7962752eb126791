// MappedFile: a whole file mapped read-only into memory (RAII). Weight files and bundles are
// read through it so that tensors can point straight into the page cache without a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace splitseg {

class MappedFile {
  public:
    // Throws std::system_error, what() "<path>: cannot open: <reason>", when the file cannot be
    // opened or mapped.
    explicit MappedFile(const std::string& path);
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    std::span<const uint8_t> bytes() const { return {data_, size_}; }

  private:
    void unmap() noexcept;
    const uint8_t* data_ = nullptr;  // null for an empty file
    size_t size_ = 0;
};

}  // namespace splitseg
