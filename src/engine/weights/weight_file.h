// WeightFile: the tensors of one checkpoint, by name, whatever the file format.
//  - PyTorch .pt/.pth: a zip holding data.pkl and raw storages, read by a restricted unpickler
//    that accepts only what a state_dict needs and never executes anything (pickle_reader.h).
//  - safetensors: 8-byte header length, JSON header, raw data (safetensors.h).
// The file is memory-mapped; contiguous tensors point into the mapping, others are copied.
// Format details and the checks made: zip_reader.h, pickle_reader.h, torch_checkpoint.h,
// safetensors.h.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/tensor.h"
#include "engine/weights/format_error.h"
#include "engine/weights/tensor_ref.h"

namespace splitseg {

class WeightFile {
  public:
    // Detects the format from the file's first bytes. A checkpoint that nests its state_dict
    // (e.g. {"model": state_dict} as SAM 2.1 ships) is unwrapped. Throws FormatError.
    static WeightFile open(const std::string& path);
    // The same for a file already in memory (a bundle fetched over the network); `name` stands
    // for the path in messages and path().
    static WeightFile from_bytes(std::vector<uint8_t> bytes, std::string name);

    bool has(const std::string& name) const;
    const TensorRef& ref(const std::string& name) const;  // throws FormatError naming the key
    Tensor get(const std::string& name) const;            // converted to float32
    Tensor get(const std::string& name, const Shape& expected) const;  // also checks the shape
    std::vector<std::string> names() const;                            // sorted
    // safetensors "__metadata__" (empty for PyTorch files).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::string& path() const { return path_; }
    // xxh64 of the tensors' names, dtypes, shapes and bytes, as 16 hex digits: identifies a
    // model whatever the file format. Computed on first use (thread-safe), then cached.
    std::string content_hash() const;

    WeightFile(WeightFile&&) noexcept;
    WeightFile& operator=(WeightFile&&) noexcept;
    ~WeightFile();

  private:
    WeightFile();
    void load(std::span<const uint8_t> bytes);  // parses into tensors_, metadata_
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::string path_;
    std::map<std::string, TensorRef> tensors_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace splitseg
