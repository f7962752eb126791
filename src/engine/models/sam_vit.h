// SAM ViT image encoder (ViT-B/L/H and reduced sizes): patch embedding, absolute positions,
// windowed and global attention with decomposed relative positions, conv neck.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/linear.h"
#include "engine/tensor.h"
#include "engine/trace.h"
#include "engine/weights/weight_file.h"

namespace splitseg {

// Everything is inferred from the tensors: no size is hard-coded.
struct SamVitConfig {
    int embed_dim = 0;    // 768 / 1024 / 1280 for B / L / H
    int depth = 0;        // 12 / 24 / 32
    int num_heads = 0;    // embed_dim / head dim (the relative-position tables' width)
    int mlp_dim = 0;      // 4 * embed_dim in the official models
    int patch_size = 0;   // 16: the patch embedding's kernel
    int image_size = 0;   // 1024: patch_size * the absolute position grid
    int window_size = 0;  // 14: from a windowed block's relative-position table; 0 if none
    int out_chans = 0;    // 256: the neck's width
    std::vector<int> global_blocks;  // blocks whose relative-position table spans the image

    int grid() const { return patch_size ? image_size / patch_size : 0; }  // 64
    int head_dim() const { return num_heads ? embed_dim / num_heads : 0; }
    bool is_global(int block) const;

    bool operator==(const SamVitConfig&) const = default;
};

// The official sizes: "vit_b", "vit_l", "vit_h". Throws std::invalid_argument for other names.
SamVitConfig sam_vit_preset(const std::string& arch);

// Every tensor the encoder reads, with its shape, in checkpoint order (names include prefix).
// load() checks a checkpoint against this list; synthetic weights are written from it.
std::vector<std::pair<std::string, Shape>> sam_vit_tensor_shapes(
    const SamVitConfig& cfg, const std::string& prefix = "image_encoder.");

// Infers the configuration from tensor shapes alone (names include prefix). Reads only the
// tensors that carry a hyperparameter; load() then checks every shape. Throws FormatError when a
// needed tensor is missing or the shapes contradict each other.
SamVitConfig infer_sam_vit_config(const std::map<std::string, Shape>& shapes,
                                  const std::string& prefix = "image_encoder.");

class SamVitEncoder {
  public:
    // Loads from keys under prefix ("image_encoder." in official checkpoints); the linear layers
    // compute at `precision`. Throws FormatError.
    static SamVitEncoder load(const WeightFile& w, Precision precision = Precision::F32,
                              const std::string& prefix = "image_encoder.");
    // The same from tensors already in memory (synthetic weights, tests), keys under prefix.
    static SamVitEncoder from_tensors(std::map<std::string, Tensor> tensors,
                                      Precision precision = Precision::F32,
                                      const std::string& prefix = "image_encoder.");
    static bool detect(const WeightFile& w, const std::string& prefix = "image_encoder.");

    // image [3, 1024, 1024], normalised and padded -> embedding [256, 64, 64].
    // Traces "enc.embed" and "enc.block<i>" ([64, 64, C], HWC) as the golden vectors name them.
    Tensor encode(const Tensor& image, const Trace& trace = {}) const;

    const SamVitConfig& config() const { return cfg_; }

  private:
    struct Block {
        int window = 0;  // 0: global attention
        Tensor norm1_w, norm1_b;
        Linear qkv;                   // C -> 3C: q, k, v, each heads x head_dim
        Tensor qkv_b;                 // [3C]: the q, k, v of a zero (padding) token
        Tensor rel_pos_h, rel_pos_w;  // [2S - 1, head_dim]
        Linear proj;                  // C -> C
        Tensor norm2_w, norm2_b;
        Linear lin1, lin2;  // C -> mlp -> C
    };

    // name (with prefix) and expected shape -> tensor; throws FormatError.
    using TensorSource = std::function<Tensor(const std::string& name, const Shape& shape)>;
    static SamVitEncoder build(const SamVitConfig& cfg, const TensorSource& source,
                               Precision precision, const std::string& prefix);

    // Activations reused by every block of one encode: fresh multi-megabyte allocations would
    // page-fault on every use.
    struct Workspace {
        explicit Workspace(const SamVitConfig& cfg);
        Tensor normed;  // [N, C]: norm1 / norm2 output, and the attention output
        Tensor qkv;     // [N, 3C]
        Tensor hidden;  // [N, mlp]
    };

    Tensor patch_embed(const Tensor& image) const;
    void run_block(const Block& b, Tensor& x, Workspace& ws) const;
    void global_attention(const Block& b, Workspace& ws) const;
    void windowed_attention(const Block& b, Workspace& ws) const;
    Tensor neck(const Tensor& x) const;

    SamVitConfig cfg_;
    Precision precision_ = Precision::F32;  // of the linear layers and global attention
    Linear patch_;                          // 3 * P * P -> C: the conv kernel as a matrix
    Tensor pos_embed_;                      // [G, G, C]
    std::vector<Block> blocks_;
    Tensor neck_conv1_w_;  // [out, C, 1, 1]
    Tensor neck_norm1_w_, neck_norm1_b_;
    Tensor neck_conv2_w_;  // [out, out, 3, 3]
    Tensor neck_norm2_w_, neck_norm2_b_;
};

}  // namespace splitseg
