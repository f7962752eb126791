// The prompt encoder + mask decoder of SAM, MobileSAM and SAM 2.1 against their reference
// predictors: every prompt case of cases.json, from the reference's own image embeddings.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <tuple>

#include "engine/models/sam_decoder.h"
#include "golden.h"

namespace splitseg {
namespace {

const char* const kModels[] = {"sam-vit-tiny", "mobilesam", "sam2.1-hiera-mini"};
const char* const kImages[] = {"img0", "img1"};
const char* const kCases[] = {"point1", "points_fg_bg", "box", "box_points", "refine"};

// One model's golden folder, loaded once and shared by its cases.
struct GoldenModel {
    WeightFile vectors;
    std::unique_ptr<SamDecoder> decoder;
    nlohmann::json cases;

    static const GoldenModel* get(const std::string& dir) {
        static std::map<std::string, std::unique_ptr<GoldenModel>> cache;
        auto& slot = cache[dir];
        if (!slot) {
            slot.reset(new GoldenModel{WeightFile::open(dir + "/vectors.safetensors"),
                                       std::make_unique<SamDecoder>(SamDecoder::load(
                                           WeightFile::open(dir + "/weights.pth"))),
                                       nlohmann::json::parse(std::ifstream(dir + "/cases.json"))});
        }
        return slot.get();
    }

    const nlohmann::json& find_case(const std::string& image, const std::string& name) const {
        for (const auto& c : cases["cases"])
            if (c["image"] == image && c["case"] == name) return c;
        throw std::runtime_error("cases.json has no case " + image + "." + name);
    }
};

// The original image size, from a full-size output of the image's point1 case.
std::pair<double, double> original_hw(const WeightFile& vectors, const std::string& image) {
    const Shape& s = vectors.ref(image + ".point1.masks").shape;  // [C, H, W]
    return {static_cast<double>(s[1]), static_cast<double>(s[2])};
}

// Original pixels -> the 1024 model frame, as the reference predictors map prompts (the runtime
// has its own; this test keeps an independent copy). SAM's ResizeLongestSide scales x and y by
// the rounded resized size over the original size; SAM 2 normalises by the original size.
PromptPoint to_model_frame(DecoderVariant v, double h, double w, float x, float y, int label) {
    if (v == DecoderVariant::Sam2)
        return {x / static_cast<float>(w) * 1024.0f, y / static_cast<float>(h) * 1024.0f, label};
    const double scale = 1024.0 / std::max(h, w);
    const double new_h = static_cast<int>(h * scale + 0.5),
                 new_w = static_cast<int>(w * scale + 0.5);
    return {static_cast<float>(x * (new_w / w)), static_cast<float>(y * (new_h / h)), label};
}

Tensor drop_batch(Tensor t) {
    t.reshape(Shape(t.shape().begin() + 1, t.shape().end()));
    return t;
}

class SamDecoderGolden
    : public ::testing::TestWithParam<std::tuple<const char*, const char*, const char*>> {};

TEST_P(SamDecoderGolden, MatchesTheReferencePredictor) {
    const auto [model, image, name] = GetParam();
    SPLITSEG_REQUIRE_GOLDEN(dir, model);
    const GoldenModel& g = *GoldenModel::get(dir);
    const WeightFile& vec = g.vectors;
    const SamDecoder& decoder = *g.decoder;
    const std::string img(image), key = img + "." + name + ".";
    const bool sam2 = decoder.variant() == DecoderVariant::Sam2;
    if (sam2 && !vec.has(img + ".high_res_feats_0"))
        GTEST_SKIP() << img << " has no high-resolution features in the vectors: this case needs "
                     << "the SAM 2.1 image encoder (see the pipeline golden test)";

    const DecoderImage prepared =
        sam2 ? decoder.prepare(drop_batch(vec.get(img + ".image_embed")),
                               drop_batch(vec.get(img + ".high_res_feats_0")),
                               drop_batch(vec.get(img + ".high_res_feats_1")))
             : decoder.prepare(drop_batch(vec.get(img + ".image_embedding")));

    const auto [h, w] = original_hw(vec, img);
    Prompt prompt;
    if (vec.has(key + "point_coords")) {
        const Tensor coords = vec.get(key + "point_coords"), labels = vec.get(key + "point_labels");
        for (int64_t i = 0; i < labels.numel(); ++i)
            prompt.points.push_back(to_model_frame(decoder.variant(), h, w, coords[2 * i],
                                                   coords[2 * i + 1], static_cast<int>(labels[i])));
    }
    if (vec.has(key + "box")) {
        const Tensor b = vec.get(key + "box");
        const PromptPoint p0 = to_model_frame(decoder.variant(), h, w, b[0], b[1], 0);
        const PromptPoint p1 = to_model_frame(decoder.variant(), h, w, b[2], b[3], 0);
        prompt.box = std::array<float, 4>{p0.x, p0.y, p1.x, p1.y};
    }
    Tensor mask_input;
    if (vec.has(key + "mask_input")) {
        mask_input = vec.get(key + "mask_input");
        prompt.mask_input = &mask_input;
    }
    const bool multimask = g.find_case(img, name)["multimask_output"];

    const DecoderOutput out =
        decoder.decode(prepared, prompt, multimask ? MaskChoice::Multimask : MaskChoice::Single);
    const Tensor ref_logits = vec.get(key + "low_res_logits");
    const Tensor ref_iou = vec.get(key + "iou");
    EXPECT_EQ(out.low_res_logits.shape(), ref_logits.shape());
    golden::expect_max_diff(out.low_res_logits, ref_logits, 5e-3, "low_res_logits");
    golden::expect_max_diff(Tensor::from({static_cast<int64_t>(out.iou.size())}, out.iou.data()),
                            ref_iou, 1e-3, "iou");
    EXPECT_EQ(std::isfinite(out.object_score_logit), sam2);
}

INSTANTIATE_TEST_SUITE_P(AllCases, SamDecoderGolden,
                         ::testing::Combine(::testing::ValuesIn(kModels),
                                            ::testing::ValuesIn(kImages),
                                            ::testing::ValuesIn(kCases)),
                         [](const auto& test) {
                             std::string s = std::string(std::get<0>(test.param)) + "_" +
                                             std::get<1>(test.param) + "_" +
                                             std::get<2>(test.param);
                             for (char& c : s)
                                 if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                             return s;
                         });

class SamDecoderCheckpointKeys : public ::testing::TestWithParam<const char*> {};

// The golden decoders are full size: the listing for synthetic weights must be their key set.
TEST_P(SamDecoderCheckpointKeys, FullSizeShapesAreTheCheckpointsDecoderTensors) {
    SPLITSEG_REQUIRE_GOLDEN(dir, GetParam());
    const WeightFile w = WeightFile::open(dir + "/weights.pth");
    const DecoderVariant v = SamDecoder::load(w).variant();
    const std::string pe = v == DecoderVariant::Sam ? "prompt_encoder." : "sam_prompt_encoder.";
    const std::string md = v == DecoderVariant::Sam ? "mask_decoder." : "sam_mask_decoder.";
    std::map<std::string, Shape> in_file, listed;
    for (const std::string& name : w.names())
        if (name.starts_with(pe) || name.starts_with(md)) in_file[name] = w.ref(name).shape;
    for (const auto& [name, shape] : sam_decoder_tensor_shapes(v)) listed[name] = shape;
    EXPECT_EQ(listed, in_file);
}

INSTANTIATE_TEST_SUITE_P(AllModels, SamDecoderCheckpointKeys, ::testing::ValuesIn(kModels),
                         [](const auto& test) {
                             std::string s = test.param;
                             for (char& c : s)
                                 if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                             return s;
                         });

}  // namespace
}  // namespace splitseg
