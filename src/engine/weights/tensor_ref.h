// TensorRef: one stored tensor as the weight-file parsers hand it over, and TensorSet, what a
// parser makes of a whole file.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/tensor.h"

namespace splitseg {

// One stored tensor: contiguous, little-endian, row-major. data may be unaligned for its type.
struct TensorRef {
    DType dtype = DType::F32;
    Shape shape;
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
};

// The tensors of one file. Most point into the file's bytes (owned by the caller); views that
// had to be made contiguous point into `owned`, whose buffers never move.
struct TensorSet {
    std::map<std::string, TensorRef> tensors;
    std::map<std::string, std::string> metadata;
    std::deque<std::vector<uint8_t>> owned;
};

}  // namespace splitseg
