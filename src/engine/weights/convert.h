// Checkpoint conversion: any readable checkpoint to safetensors, tensors kept as stored.
#pragma once

#include <string>

#include "engine/weights/weight_file.h"

namespace splitseg {

// Writes every tensor of w (dtype and shape unchanged) and its metadata to `out`, atomically,
// adding "converted_from" = the source file's name.
void convert_to_safetensors(const WeightFile& w, const std::string& out);

}  // namespace splitseg
