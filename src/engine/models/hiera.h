// SAM 2.1 image encoder: the Hiera trunk (hierarchical windowed attention with query pooling at
// stage changes), the FPN neck, and the image-path extras of the SAM 2.1 model (no_mem_embed added
// to the lowest-resolution level, the decoder's conv_s0/conv_s1 applied once per image to the two
// high-resolution levels, as SAM2ImagePredictor.set_image does).
//
// What the tensors tell (inferred on load):
//  - embed_dim from patch_embed.proj, the stage layout from the blocks that carry a `proj` (the
//    first block of every stage after the first: the width doubles there and the query is
//    max-pooled 2x2), window_spec[0] from pos_embed_window, the background positional size from
//    pos_embed, the neck's width from its lateral convs (their inputs are the stage widths).
// What they cannot tell (the number of heads, which blocks attend globally, the window sizes of
// stages 1..3) comes from the official configs, keyed by the stage layout:
//    arch             embed  heads  stages       global blocks  window_spec   pos_embed bkg
//    sam2.1_hiera_t     96     1    1,2,7,2      5,7,9          8,4,14,7      7x7
//    sam2.1_hiera_s     96     1    1,2,11,2     7,10,13        8,4,14,7      7x7
//    sam2.1_hiera_b+   112     2    2,3,16,3     12,16,20       8,4,14,7      14x14
//    sam2.1_hiera_l    144     2    2,6,36,4     23,33,43       8,4,16,8      7x7
// Any other layout: 1 head, window_spec 8,4,14,7 and global attention in the last block of the
// third stage (which also gives the reduced golden model: stages 1,1,2,1, global block 3).
// A safetensors file may override these through its metadata: "hiera.num_heads" ("2"),
// "hiera.global_blocks" ("5,7,9"; "" for none) and "hiera.window_spec" ("8,4,14,7").
// Fixed by the SAM 2.1 architecture for every size: 4 stages, q_stride 2, mlp_ratio 4, LayerNorm
// eps 1e-6, FPN top-down fusion (nearest 2x) into levels 2 and 3 only, and the lowest-resolution
// level dropped (scalp 1). The neck's sine position encodings are not computed: the image
// predictor discards them (the decoder builds its own dense positional encoding).
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

struct HieraConfig {
    int embed_dim = 0;                     // width of stage 0; doubles at every stage
    int num_heads = 0;                     // heads of stage 0; doubles at every stage
    std::vector<int> stages;               // blocks per stage
    std::vector<int> global_blocks;        // blocks with global attention (window size 0)
    std::vector<int> window_spec;          // window size per stage
    int window_pos_embed_bkg[2] = {0, 0};  // pos_embed's spatial size (h, w)
    std::vector<int> backbone_channels;    // neck inputs, lowest resolution first, as the yaml
    int fpn_dim = 256;                     // neck width (d_model)

    int depth() const;
    bool operator==(const HieraConfig&) const = default;
};

// The image-path outputs, as SAM2ImagePredictor keeps them (batch dimension dropped).
struct Sam2Features {
    Tensor image_embed;  // [256, 64, 64], no_mem_embed added
    Tensor high_res_0;   // [32, 256, 256], after conv_s0
    Tensor high_res_1;   // [64, 128, 128], after conv_s1
};

// Every tensor the image path reads, named as official SAM 2.1 checkpoints name them, with its
// shape, in checkpoint order: load() checks a checkpoint against it, and it is what
// `splitseg models synth` writes for full-size random weights.
std::vector<std::pair<std::string, Shape>> hiera_tensor_shapes(const HieraConfig& cfg);

// The official configs: "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l".
// Throws std::invalid_argument for another name.
HieraConfig hiera_preset(const std::string& arch);

// Infers the configuration from tensor shapes (and the optional metadata overrides above). Reads
// only the tensors that carry a hyperparameter; load() then checks every shape. Throws
// FormatError when a needed tensor is missing or the shapes contradict each other.
HieraConfig infer_hiera_config(const std::map<std::string, Shape>& shapes,
                               const std::map<std::string, std::string>& metadata = {});

class HieraEncoder {
  public:
    // True when the checkpoint holds a Hiera trunk ("image_encoder.trunk.patch_embed.proj.weight").
    static bool detect(const WeightFile& w);
    // Reads image_encoder.trunk.*, image_encoder.neck.*, no_mem_embed and
    // sam_mask_decoder.conv_s0/conv_s1. Throws FormatError on a missing or misshapen tensor.
    static HieraEncoder load(const WeightFile& w);
    // The same from tensors already in memory (synthetic weights, tests), official key names.
    static HieraEncoder from_tensors(std::map<std::string, Tensor> tensors,
                                     const std::map<std::string, std::string>& metadata = {});

    // image [3, 1024, 1024], normalised, resized without keeping the aspect ratio. Other sizes
    // work when they are multiples of 32 (features scale along). Traces "trunk.stage0".."stage3"
    // ([C, H, W], every stage's output as the golden vectors name them).
    Sam2Features encode(const Tensor& image, const Trace& trace = {}) const;

    const HieraConfig& config() const { return cfg_; }

  private:
    struct Block {
        int dim_out = 0, heads = 0;
        int window = 0;     // 0: global attention
        bool pool = false;  // first block of stages 1..3: query and shortcut max-pooled 2x2
        Tensor norm1_w, norm1_b;
        Linear qkv;    // dim -> 3 * dim_out: q, k, v, each heads x head_dim
        Tensor qkv_b;  // [3 * dim_out]
        Linear attn_proj;
        Tensor norm2_w, norm2_b;
        Linear mlp0, mlp1;
        Linear proj;  // shortcut projection to dim_out (pooling blocks only)
    };

    // name and expected shape -> tensor; throws FormatError.
    using TensorSource = std::function<Tensor(const std::string& name, const Shape& shape)>;
    static HieraEncoder build(const HieraConfig& cfg, const TensorSource& source);

    std::vector<Tensor> trunk(const Tensor& image, const Trace& trace) const;
    Tensor positional_embedding(int64_t h, int64_t w) const;
    void run_block(const Block& b, Tensor& x) const;
    Tensor window_attention(const Block& b, const Tensor& qkv) const;

    HieraConfig cfg_;
    Tensor patch_w_, patch_b_;  // [E, 3, 7, 7], [E]
    Tensor pos_embed_;          // [E, bkg_h, bkg_w]
    Tensor pos_embed_window_;   // [E, window_spec[0], window_spec[0]]
    std::vector<Block> blocks_;
    // Neck and extras as 1x1 convolutions [out, in] on the stage outputs. Levels 0 and 1 get no
    // top-down features, so the decoder's conv_s0/conv_s1 after their lateral convs fold into
    // one product each; no_mem_embed is a per-channel constant, folded into level 2's bias.
    Tensor high_res_0_w_, high_res_0_b_;  // conv_s0 . lateral conv of stage 0
    Tensor high_res_1_w_, high_res_1_b_;  // conv_s1 . lateral conv of stage 1
    Tensor level2_w_, level2_b_;          // lateral conv of stage 2 (+ no_mem_embed)
    Tensor level3_w_, level3_b_;          // lateral conv of stage 3 (top-down into level 2 only)
};

}  // namespace splitseg
