// Segmenter: one loaded model (encoder + prompt decoder) behind a family-independent API.
// Load once, then encode many images and decode many prompts; encode() and decode() are const
// and may run concurrently on different images.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/linear.h"
#include "engine/models/sam_decoder.h"
#include "engine/tensor.h"
#include "engine/trace.h"
#include "runtime/image.h"
#include "runtime/preprocess.h"

namespace splitseg {

enum class ModelFamily { Sam, MobileSam, Sam2 };
const char* family_name(ModelFamily f);  // "sam", "mobilesam", "sam2.1"
bool family_from_name(const std::string& name, ModelFamily* out);

// The encoder's output for one image plus what the decoder needs to map coordinates back.
// This is the content of an embedding bundle.
struct Embedding {
    ModelFamily family = ModelFamily::Sam;
    std::string model_hash;  // WeightFile::content_hash() of the model that made it
    std::string image_hash;  // content hash of the encoded image's bytes (may be empty)
    ImageGeometry geom;
    Tensor image_embed;  // [256, 64, 64]
    Tensor high_res_0;   // [32, 256, 256], SAM 2.1 only
    Tensor high_res_1;   // [64, 128, 128], SAM 2.1 only
};

// A click in original image pixels: label 1 = foreground, 0 = background.
struct Click {
    float x = 0, y = 0;
    int label = 1;
};

struct Prompts {
    std::vector<Click> points;
    std::optional<std::array<float, 4>> box;  // x0, y0, x1, y1 in original pixels
    std::optional<Tensor> mask_input;         // [1, 256, 256] low-res logits of an earlier decode
    bool multimask = false;
    // With multimask: only the candidate of highest predicted IoU, the only one upscaled (the
    // interactive path: a tool shows the best mask and offers the others on request).
    bool best_only = false;
};

enum class MaskOutput {
    LowResOnly,  // only the 256x256 logits (client-side upscaling)
    Masks,       // plus u8 masks at the original size
    Logits,      // plus float logits at the original size
};

struct Masks {
    Tensor low_res_logits;       // [C, 256, 256]
    std::vector<float> iou;      // [C]
    Tensor logits;               // [C, H, W] at the original size (MaskOutput::Logits)
    std::vector<uint8_t> masks;  // C * H * W, logits > 0 (MaskOutput::Masks and Logits)
    int width = 0, height = 0;   // original size
    double decoder_ms = 0;       // decode()'s time in the mask decoder
    double upscale_ms = 0;       // and upscaling to the original size
    int count() const { return static_cast<int>(iou.size()); }
    int best() const;  // index of the highest predicted IoU
};

// Prompts in original pixels -> masks: maps them into the model frame, decodes, upscales. What
// Segmenter::decode does, for a decoder loaded without its encoder (the WASM build).
Masks decode_prompts(const SamDecoder& decoder, ModelFamily family, const DecoderImage& image,
                     const ImageGeometry& geom, const Prompts& prompts, MaskOutput output);

class Segmenter {
  public:
    // Loads a checkpoint (.pth/.pt or safetensors) and infers the family and size from its
    // tensors; the heavy products compute at `precision`: the image encoder's (SAM and MobileSAM;
    // SAM 2.1's stays f32) and the prompt decoder's image-side products. Throws FormatError.
    static std::unique_ptr<Segmenter> load(const std::string& path,
                                           Precision precision = Precision::F32);
    ~Segmenter();

    ModelFamily family() const { return family_; }
    const std::string& model_hash() const { return model_hash_; }
    Precision precision() const { return precision_; }
    std::string describe() const;  // one line: family and inferred architecture

    Preprocessed preprocess(const Image& image) const;
    Embedding encode(const Image& image, const Trace& trace = {}) const;
    Embedding encode_preprocessed(const Preprocessed& input, const Trace& trace = {}) const;

    // Prompt-independent decoder state of one image: built once, reused for every click.
    DecoderImage prepare(const Embedding& embedding) const;
    Masks decode(const DecoderImage& image, const ImageGeometry& geom, const Prompts& prompts,
                 MaskOutput output = MaskOutput::Masks) const;

    // Throws std::invalid_argument unless the embedding was made by this model.
    void check_embedding(const Embedding& embedding) const;

  private:
    Segmenter();
    struct Encoders;
    ModelFamily family_ = ModelFamily::Sam;
    std::string model_hash_;
    Precision precision_ = Precision::F32;
    std::unique_ptr<Encoders> encoders_;
    std::unique_ptr<SamDecoder> decoder_;
};

}  // namespace splitseg
