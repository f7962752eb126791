// TinyViT image encoder as MobileSAM uses it: a convolutional patch embedding, MBConv layers,
// then layers of windowed attention (with learned attention biases), a depthwise "local" conv and
// an MLP; patch merging between layers; SAM's conv neck on top.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/linear.h"
#include "engine/tensor.h"
#include "engine/trace.h"
#include "engine/weights/weight_file.h"

namespace splitseg {

// Inferred from the tensors, except what the checkpoint cannot tell (image_size, the downsample
// strides: see tiny_vit.cpp).
struct TinyVitConfig {
    std::vector<int> embed_dims;    // per layer, e.g. 64, 128, 160, 320
    std::vector<int> depths;        // blocks per layer
    std::vector<int> num_heads;     // per layer; 0 for convolutional (MBConv) layers
    std::vector<int> window_sizes;  // per layer; 0 for convolutional layers
    float mlp_ratio = 4.0f;
    float mbconv_expand_ratio = 4.0f;
    int num_conv_layers = 1;  // the leading layers are built of MBConv blocks, the rest attention
    int out_chans = 256;      // neck output channels
    int num_classes = 1000;   // the unused classification head official checkpoints carry
    int image_size = 1024;

    bool operator==(const TinyVitConfig&) const = default;
};

// "mobilesam": TinyViT-5M as MobileSAM ships it.
TinyVitConfig tiny_vit_preset(const std::string& arch);

// Every tensor an official checkpoint holds for this config, in state_dict order, including
// BatchNorm running statistics and the scalar num_batches_tracked (empty Shape, stored as int64).
std::vector<std::pair<std::string, Shape>> tiny_vit_tensor_shapes(
    const TinyVitConfig& cfg, const std::string& prefix = "image_encoder.");

// Infers the configuration from tensor shapes alone (names include prefix). Throws FormatError when
// a needed tensor is missing or the shapes make no sense; load() then checks every shape it reads.
TinyVitConfig infer_tiny_vit_config(const std::map<std::string, Shape>& shapes,
                                    const std::string& prefix = "image_encoder.");

// Index into a window attention's bias table for every (query, key) pair of a window of
// window*window tokens: the reference numbers the offsets (|dy|, |dx|) in first-seen order.
std::vector<int> tiny_vit_attention_bias_index(int window);

namespace tiny_vit {

// Convolution with its BatchNorm folded in. 1x1 convolutions run as a Linear on tokens.
struct ConvBn {
    Tensor weight, bias;  // other convolutions
    Linear linear;        // 1x1
    int stride = 1;
};
// 1x1 conv -> GELU -> depthwise 3x3 conv -> GELU -> 1x1 conv: the body of an MBConv block (which
// adds a residual and a GELU) and, with a strided depthwise conv, TinyViT's PatchMerging.
struct Bottleneck {
    ConvBn expand, depthwise, project;
};
struct AttentionBlock {
    int heads = 0, window = 0;
    Tensor attn_norm_w, attn_norm_b;
    Linear qkv;  // rows regrouped to [q of all heads; k; v]
    Linear proj;
    Tensor bias;        // [heads, window^2, window^2], attention biases expanded by index
    ConvBn local_conv;  // depthwise 3x3
    Tensor mlp_norm_w, mlp_norm_b;
    Linear fc1, fc2;
};
struct Layer {
    std::vector<Bottleneck> conv_blocks;  // MBConv blocks, or
    std::vector<AttentionBlock> attn_blocks;
    std::optional<Bottleneck> downsample;  // PatchMerging; every layer but the last
};

}  // namespace tiny_vit

class TinyVitEncoder {
  public:
    static bool detect(const WeightFile& w, const std::string& prefix = "image_encoder.");
    // Folds every BatchNorm into its convolution; the linear layers (and 1x1 convolutions)
    // compute at `precision`. Throws FormatError.
    static TinyVitEncoder load(const WeightFile& w, Precision precision = Precision::F32,
                               const std::string& prefix = "image_encoder.");
    // The same from tensors already in memory (synthetic weights, tests), keys under prefix.
    static TinyVitEncoder from_tensors(std::map<std::string, Tensor> tensors,
                                       Precision precision = Precision::F32,
                                       const std::string& prefix = "image_encoder.");

    // image [3, 1024, 1024], normalised and padded -> embedding [256, 64, 64].
    // Traces "enc.layer<i>" (tokens [N, C], after the layer's patch merging).
    Tensor encode(const Tensor& image, const Trace& trace = {}) const;

    const TinyVitConfig& config() const { return cfg_; }

  private:
    // name (with prefix) and expected shape -> tensor; throws FormatError.
    using TensorSource = std::function<Tensor(const std::string& name, const Shape& shape)>;
    static TinyVitEncoder build(const TinyVitConfig& cfg, const TensorSource& source,
                                Precision precision, const std::string& prefix);
    TinyVitEncoder() = default;

    TinyVitConfig cfg_;
    tiny_vit::ConvBn embed0_, embed1_;
    std::vector<tiny_vit::Layer> layers_;
    Linear neck_conv1_;  // 1x1, no bias
    Tensor neck_norm1_w_, neck_norm1_b_, neck_conv2_, neck_norm2_w_, neck_norm2_b_;
};

}  // namespace splitseg
