// A torch.save checkpoint (zip format, PyTorch >= 1.6): <dir>/data.pkl describes the
// state_dict, <dir>/data/<key> hold the raw little-endian storages.
#pragma once

#include <cstdint>
#include <span>

#include "engine/weights/tensor_ref.h"

namespace splitseg {

// Tensors point into `file` (which must outlive the result) unless they are non-contiguous
// views, which are copied contiguous. Every view is bounds-checked against its storage.
// Throws FormatError.
TensorSet read_torch_checkpoint(std::span<const uint8_t> file);

}  // namespace splitseg
