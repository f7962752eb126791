// Whole-file reads and crash-safe writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace splitseg {

// The file's bytes; throws std::runtime_error naming the file and the system error.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Writes to a temporary file beside `path`, flushes it to disk and renames it over `path`, so
// readers see either the old content or the new one, never a partial file. Throws
// std::runtime_error (the temporary file is removed).
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace splitseg
