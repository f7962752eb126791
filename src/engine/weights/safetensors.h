// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
// then the data area that the offsets index. https://github.com/huggingface/safetensors
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "engine/weights/tensor_ref.h"

namespace splitseg {

// Parses a whole file held in memory; the tensors point into `file`, which must outlive them.
// Every offset, size and shape is checked; throws FormatError.
TensorSet read_safetensors(std::span<const uint8_t> file);

struct SafetensorsEntry {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    const void* data = nullptr;
    size_t nbytes = 0;  // must equal numel(shape) * dtype_size(dtype)
};

// The file's bytes: the header padded with spaces to a multiple of 8, then the entries' data,
// largest element size first so that every tensor is aligned to its element size. Throws
// std::invalid_argument for a bad entry (size mismatch, duplicate or reserved name).
std::vector<uint8_t> serialize_safetensors(const std::vector<SafetensorsEntry>& entries,
                                           const std::map<std::string, std::string>& metadata);

// Writes the same bytes to `path` atomically: a temporary file in the same directory, fsync,
// rename over `path`, fsync of the directory. Throws std::system_error on I/O failure.
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata);

}  // namespace splitseg
