// Embedding bundle v1: one image's encoder outputs as a safetensors file, readable by any
// safetensors reader. Tensors (batch dimension 1, names as the widely used ONNX decoders expect):
//   SAM, MobileSAM: image_embeddings [1, 256, 64, 64]
//   SAM 2.1:        image_embed [1, 256, 64, 64], high_res_feats_0 [1, 32, 256, 256],
//                   high_res_feats_1 [1, 64, 128, 128]
// int8 storage adds "<name>.scale" (F32): one scale per channel ([256]) for image embeddings, one
// per channel row ([C, H]) for the high-resolution features; value = int8 * scale.
// __metadata__: format "splitseg.bundle", format_version "1", model_family, model_hash,
// image_hash, orig_w, orig_h, resized_w, resized_h, input_size, resize_mode, storage_dtype and
// checksum (xxh64 over every tensor's name and bytes, in name order, 16 hex digits).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/segmenter.h"

namespace splitseg {

enum class BundleDType { F32, F16, BF16, Int8 };
const char* bundle_dtype_name(BundleDType t);  // "f32", "f16", "bf16", "int8"
bool bundle_dtype_from_name(const std::string& name, BundleDType* out);

std::vector<uint8_t> serialize_bundle(const Embedding& e, BundleDType dtype = BundleDType::F16);
void write_bundle(const std::string& path, const Embedding& e,
                  BundleDType dtype = BundleDType::F16);

// Verifies the format, every bound and the checksum; throws FormatError naming the problem.
Embedding parse_bundle(std::vector<uint8_t> bytes, const std::string& name = "bundle");
Embedding read_bundle(const std::string& path);

// Content hash of image bytes (XXH3-128, 32 hex digits): the image half of a cache key.
std::string image_content_hash(const uint8_t* data, size_t size);

}  // namespace splitseg
