// The prompt side of SAM, MobileSAM and SAM 2.1: prompt encoder + mask decoder. One image's
// embedding and a prompt (points, a box, the low-res logits of an earlier decode) go in; low-res
// mask logits and predicted IoUs come out. SAM and MobileSAM share one decoder (Sam); SAM 2.1
// adds an object-score token and high-resolution features in the upscaling (Sam2).
#pragma once

#include <array>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/linear.h"
#include "engine/tensor.h"
#include "engine/weights/weight_file.h"

namespace splitseg {

// A click in the model-input frame (image_size x image_size, after the runtime's resize).
struct PromptPoint {
    float x = 0, y = 0;
    int label = 1;  // 1 = foreground, 0 = background
};

struct Prompt {
    std::vector<PromptPoint> points;
    std::optional<std::array<float, 4>> box;  // x0, y0, x1, y1 in the same frame
    const Tensor* mask_input = nullptr;       // [1, 256, 256] or [256, 256] low-res logits
};

struct DecoderOutput {
    Tensor low_res_logits;           // [C, 256, 256], C = 3 (multimask) or 1; not clamped
    std::vector<float> iou;          // [C] predicted IoU (SAM 2.1: after the sigmoid)
    float object_score_logit = NAN;  // SAM 2.1 only: > 0 when an object is predicted present
};

enum class DecoderVariant { Sam, Sam2 };

// Which masks a decode returns (and upscales: each costs a pass of the mask product).
enum class MaskChoice {
    Single,           // the single-mask token's (SAM 2 with dynamic_multimask: see the config)
    Multimask,        // the 3 multimask tokens' (for ambiguous prompts such as one click)
    BestOfMultimask,  // the multimask token's with the highest predicted IoU: the interactive path
};

// Sizes of one decoder. All are read from the checkpoint except those marked otherwise.
struct SamDecoderConfig {
    DecoderVariant variant = DecoderVariant::Sam;
    int embed_dim = 256;
    int depth = 2;            // two-way transformer layers
    int mlp_dim = 2048;       // transformer MLP hidden width
    int attn_dim = 128;       // cross-attention width (embed_dim / downsample rate)
    int num_mask_tokens = 4;  // single-mask token + 3 multimask tokens
    int mask_in_chans = 16;   // mask downscaling width
    int hyper_depth = 3;      // layers of each mask token's hypernetwork MLP
    int iou_head_dim = 256;
    int iou_head_depth = 3;
    int obj_head_depth = 3;  // SAM 2: pred_obj_score_head layers (1 = a plain Linear)
    // Not stored in checkpoints; the same in every released SAM / MobileSAM / SAM 2 model:
    int num_heads = 8;
    int image_size = 1024;  // the prompt coordinate frame
    int grid = 64;          // image embedding side, image_size / 16
    // SAM 2 only: iou_prediction_use_sigmoid, on in every sam2/sam2.1 config.
    bool iou_sigmoid = false;
    // SAM 2's dynamic_multimask_via_stability: a single-mask output whose stability score (IoU
    // of the mask at +-delta) is below thresh is replaced by the multimask output with the best
    // predicted IoU. Off in the mask decoder module, the configs and the golden vectors;
    // build_sam2(apply_postprocessing=True) turns it on with these values.
    bool dynamic_multimask = false;
    float stability_delta = 0.05f;
    float stability_thresh = 0.98f;

    // The configuration of every released checkpoint of the variant.
    static SamDecoderConfig full_size(DecoderVariant variant);
    int mask_size() const { return 4 * grid; }  // side of mask_input and of the output logits
    bool operator==(const SamDecoderConfig&) const = default;
};

// Per-image, prompt-independent state: built once per image by prepare(), read by every decode.
struct DecoderImage {
    Tensor image_embed;  // [C, g, g]
    // Layer 0's image-side attention projections without a mask prompt (a mask prompt adds a
    // term of low rank): token->image keys and values, image->token queries. [attn_dim, g*g]
    // each.
    Tensor layer0_keys, layer0_values, layer0_queries;
    // SAM 2: high_res_1 [C/4, 2g, 2g] and high_res_0 [C/8, 4g, 4g] plus the output upscaling's
    // biases, in the upscaling's pixel order: [C/4, 4g*g], [C/8, 16g*g].
    Tensor upscale_add_1, upscale_add_2;
    // The image's term of the first upscaling convolution, folded through the transformer's
    // norms (G_0 image_embed, sam_decoder.cpp's fold_first_upscale): [4 * C/4, g*g]. With bf16
    // compute in IEEE half instead, times upscale_base_scale (a power of two that keeps it in
    // half's range): every click reads it from memory, and half keeps 3 bits more than bf16.
    Tensor upscale_base;
    std::vector<uint16_t> upscale_base_f16;
    float upscale_base_scale = 1.0f;
};

struct SamDecoderWeights;

class SamDecoder {
  public:
    // SAM keys "prompt_encoder." + "mask_decoder."; SAM 2 "sam_prompt_encoder." +
    // "sam_mask_decoder.".
    static bool detect(const WeightFile& w);
    // The variant follows from the key prefixes, the sizes from the tensors. Throws FormatError.
    // With Precision::BF16 the attention products over the 64x64 image tokens and the second
    // upscaling convolution take bf16 inputs (f32 accumulation), and the token side's MLPs and
    // final attention read their weights in IEEE half; the rest of the token side, the norms,
    // the softmax and the first upscaling convolution stay f32.
    static SamDecoder load(const WeightFile& w, Precision precision = Precision::F32);

    DecoderVariant variant() const { return cfg_.variant; }
    Precision precision() const { return precision_; }
    const SamDecoderConfig& config() const { return cfg_; }
    // See SamDecoderConfig::dynamic_multimask. Set before decoding, not while other threads do.
    void set_dynamic_multimask(bool on) { cfg_.dynamic_multimask = on; }

    // image_embed [C, g, g] (SAM 2: no_mem_embed already added) and, for SAM 2, the
    // high-resolution features. Throws std::invalid_argument on wrong shapes.
    DecoderImage prepare(Tensor image_embed, Tensor high_res_0 = {}, Tensor high_res_1 = {}) const;

    // Const and thread-safe: any number of threads may decode (the same or other images) at once.
    // Throws std::invalid_argument on a bad prompt (non-finite coordinates, unknown label,
    // mask_input of the wrong size).
    DecoderOutput decode(const DecoderImage& image, const Prompt& prompt, MaskChoice choice) const;

    SamDecoder(SamDecoder&&) noexcept;
    SamDecoder& operator=(SamDecoder&&) noexcept;
    ~SamDecoder();

  private:
    SamDecoder();
    Tensor embed_prompt(const Prompt& prompt) const;  // [P, C] sparse prompt tokens
    Tensor mask_features(const Tensor& mask) const;   // [Cm, g, g]: the dense prompt before
                                                      // its 1x1 convolution to C channels

    SamDecoderConfig cfg_;
    Precision precision_ = Precision::F32;
    std::unique_ptr<SamDecoderWeights> w_;
    Tensor dense_pe_;                      // [C, g, g] positional encoding of the embedding grid
    std::vector<uint16_t> dense_pe_bf16_;  // bf16 compute: the same rounded, in pixel blocks
    // Image index of each pixel of the output upscaling's order, after one and two steps.
    std::vector<int32_t> upscale_order_1_, upscale_order_2_;
};

// Names and shapes of the prompt encoder's and mask decoder's tensors for a configuration, as
// load() reads them. SAM 2 also lists conv_s0/conv_s1, which live under sam_mask_decoder. but are
// applied by the image encoder.
std::vector<std::pair<std::string, Shape>> sam_decoder_tensor_shapes(const SamDecoderConfig& cfg);
// The same for an official checkpoint of the variant (full size): for writing random weights.
std::vector<std::pair<std::string, Shape>> sam_decoder_tensor_shapes(DecoderVariant variant);

}  // namespace splitseg
