// End to end against the reference: image file -> Segmenter (preprocess, encode, decode,
// postprocess) -> masks, for every golden model, image and prompt case, with the checkpoint read
// both as the reference's .pth and as our safetensors conversion.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/weights/convert.h"
#include "golden.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

namespace splitseg {
namespace {

struct PipelineCase {
    std::string model;    // golden folder
    std::string weights;  // "pth" or "safetensors"
};

class Pipeline : public testing::TestWithParam<PipelineCase> {};

// The checkpoint path for the case: the .pth itself, or a safetensors copy made with our tool.
std::string weights_path(const std::string& dir, const PipelineCase& c) {
    const std::string pth = dir + "/weights.pth";
    if (c.weights == "pth") return pth;
    const std::string out =
        (std::filesystem::temp_directory_path() / ("splitseg_golden_" + c.model + ".safetensors"))
            .string();
    convert_to_safetensors(WeightFile::open(pth), out);
    return out;
}

TEST_P(Pipeline, MatchesReference) {
    const PipelineCase& pc = GetParam();
    SPLITSEG_REQUIRE_GOLDEN(dir, pc.model);
    const WeightFile vectors = WeightFile::open(dir + "/vectors.safetensors");
    nlohmann::json cases;
    std::ifstream(dir + "/cases.json") >> cases;
    auto model = Segmenter::load(weights_path(dir, pc));
    const bool sam2 = model->family() == ModelFamily::Sam2;

    for (const std::string img : {"img0", "img1"}) {
        SCOPED_TRACE(img);
        const Embedding e = model->encode(load_image(dir + "/" + img + ".png"));
        golden::expect_features_close(
            e.image_embed, vectors.get(img + (sam2 ? ".image_embed" : ".image_embedding")),
            img + " image embedding");
        if (sam2 && vectors.has(img + ".high_res_feats_0")) {
            golden::expect_features_close(e.high_res_0, vectors.get(img + ".high_res_feats_0"),
                                          "high_res_feats_0");
            golden::expect_features_close(e.high_res_1, vectors.get(img + ".high_res_feats_1"),
                                          "high_res_feats_1");
        }
        // A bundle round trip in f32 must not change anything the decoder sees.
        const Embedding loaded = parse_bundle(serialize_bundle(e, BundleDType::F32));
        const DecoderImage prepared = model->prepare(loaded);

        for (const auto& c : cases.at("cases")) {
            if (c.at("image") != img) continue;
            const std::string key = img + "." + c.at("case").get<std::string>();
            SCOPED_TRACE(key);
            const Masks m = model->decode(
                prepared, loaded.geom,
                golden::case_prompts(vectors, key, c.at("multimask_output").get<bool>()),
                MaskOutput::Logits);
            golden::expect_max_diff(m.low_res_logits, vectors.get(key + ".low_res_logits"), 5e-3,
                                    key + " low_res_logits");
            const Tensor iou = Tensor::from({m.count()}, m.iou.data());
            golden::expect_max_diff(iou, vectors.get(key + ".iou"), 1e-3, key + " iou");
            if (vectors.has(key + ".masks_logits"))
                golden::expect_features_close(m.logits, vectors.get(key + ".masks_logits"),
                                              key + " masks_logits");
            if (vectors.has(key + ".masks")) {
                const Tensor ref = vectors.get(key + ".masks");
                ASSERT_EQ(static_cast<size_t>(ref.numel()), m.masks.size());
                const int64_t plane = static_cast<int64_t>(m.width) * m.height;
                for (int i = 0; i < m.count(); ++i) {
                    EXPECT_GE(
                        golden::mask_iou(m.masks.data() + i * plane, ref.data() + i * plane, plane),
                        0.999)
                        << key << " mask " << i;
                }
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Golden, Pipeline,
                         testing::Values(PipelineCase{"sam-vit-tiny", "pth"},
                                         PipelineCase{"sam-vit-tiny", "safetensors"},
                                         PipelineCase{"mobilesam", "pth"},
                                         PipelineCase{"mobilesam", "safetensors"},
                                         PipelineCase{"sam2.1-hiera-mini", "pth"},
                                         PipelineCase{"sam2.1-hiera-mini", "safetensors"}),
                         [](const auto& p) {
                             return golden::test_name(p.param.model + "_" + p.param.weights);
                         });

}  // namespace
}  // namespace splitseg
