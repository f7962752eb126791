// ZipReader: the index of a ZIP archive held in memory, as torch.save writes it: every entry
// stored (uncompressed), so an entry's bytes are a span of the archive itself. Reads the
// central directory, with ZIP64 records for archives past 4 GiB. Compressed or encrypted
// entries, multi-disk archives and inconsistent offsets are rejected with FormatError.
// CRCs are not verified: checking gigabytes on every load costs more than it protects.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>

namespace splitseg {

class ZipReader {
  public:
    explicit ZipReader(std::span<const uint8_t> archive);

    // Every entry's bytes, by name.
    const std::map<std::string, std::span<const uint8_t>>& entries() const { return entries_; }
    // The entry's bytes, or nullptr when absent.
    const std::span<const uint8_t>* find(const std::string& name) const;

  private:
    std::map<std::string, std::span<const uint8_t>> entries_;
};

}  // namespace splitseg
