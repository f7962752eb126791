// Image preprocessing and mask postprocessing exactly as the reference predictors do them:
//  - SAM / MobileSAM (segment_anything SamPredictor.set_image): resize the long side to 1024 with
//    PIL's bilinear filter on uint8 (antialiased when shrinking), normalise with the pixel
//    mean/std in [0, 255], pad bottom/right with zeros to 1024 x 1024.
//  - SAM 2.1 (SAM2ImagePredictor.set_image): scale to [0, 1], resize to 1024 x 1024 (aspect ratio
//    not kept) with torch's antialiased bilinear on float, normalise with ImageNet mean/std.
// The geometry of the resize maps prompts into the model frame and low-res logits back out.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "runtime/image.h"

namespace splitseg {

enum class ResizeMode {
    LongestSide,  // SAM, MobileSAM: long side to input_size, aspect kept, zero padding
    Square,       // SAM 2.1: both sides to input_size
};

struct ImageGeometry {
    int orig_w = 0, orig_h = 0;
    int resized_w = 0, resized_h = 0;  // the image's extent inside the model input
    int input_size = 1024;
    ResizeMode mode = ResizeMode::LongestSide;
};

struct Preprocessed {
    Tensor input;  // [3, input_size, input_size], normalised (and zero-padded for SAM)
    ImageGeometry geom;
};

// Geometry of an orig_w x orig_h image; LongestSide rounds as get_preprocess_shape: int(x + 0.5).
ImageGeometry make_geometry(int orig_w, int orig_h, ResizeMode mode, int input_size = 1024);

Preprocessed preprocess_sam(const Image& image, int input_size = 1024);
Preprocessed preprocess_sam2(const Image& image, int input_size = 1024);

// PIL Image.resize(size, BILINEAR) on 8-bit RGB: separable (horizontal then vertical pass, each
// rounded to uint8), triangle filter widened by the scale when shrinking, weights in 22-bit fixed
// point. Matches PIL bit for bit.
Image resize_pil_bilinear(const Image& image, int width, int height);

// torch.nn.functional.interpolate(x, (oh, ow), mode="bilinear", align_corners=False,
// antialias=True) of x [C, H, W], computed in float as PyTorch's CPU kernel: separable (width
// first, then height), triangle filter whose support grows with the scale when shrinking, weights
// normalised per output sample. When enlarging this equals plain bilinear.
Tensor interpolate_bilinear_antialias(const Tensor& x, int64_t oh, int64_t ow);

// A point in original image pixels -> the model's input frame.
// LongestSide: scaled by resized/orig per axis (in double, as numpy); Square: x / orig_w * size
// (in float, as torch).
std::array<float, 2> to_model_frame(const ImageGeometry& geom, float x, float y);

// Low-res mask logits [C, 256, 256] -> logits at the original size [C, orig_h, orig_w].
// LongestSide (Sam.postprocess_masks): bilinear to input_size^2, keep the top-left
// resized_h x resized_w, bilinear to the original size; only the kept region is computed.
// Square (SAM2Transforms.postprocess_masks): bilinear straight to the original size.
// All bilinear steps use align_corners=False. SAM 2.1's predictor clamps the low-res logits it
// returns to [-32, 32] only after this upscale, so pass the unclamped logits.
Tensor upscale_logits(const Tensor& low_res, const ImageGeometry& geom);
// masks_from_logits(upscale_logits(low_res, geom)), with the last resize writing the 0/1 masks.
std::vector<uint8_t> upscale_masks(const Tensor& low_res, const ImageGeometry& geom);

// logits > threshold as on_value / 0, one byte per element in the tensor's order.
std::vector<uint8_t> masks_from_logits(const Tensor& logits, float threshold = 0.0f,
                                       uint8_t on_value = 1);

}  // namespace splitseg
