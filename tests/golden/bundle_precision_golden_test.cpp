// Reduced precision keeps the masks: for every golden model, image and prompt case, masks decoded
// from an f16, bf16 or int8 bundle, or from an embedding the encoder computed in bf16, have
// IoU >= 0.99 with the masks of the float32 path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

namespace splitseg {
namespace {

class BundlePrecision : public testing::TestWithParam<std::string> {};

// Every case of `img`: the masks `reduced_model` decodes from `reduced` against those `model`
// decodes from `exact`. Returns the lowest IoU (printed by the tests: the margin above 0.99 is
// what a precision change spends).
double expect_same_masks(const Segmenter& model, const Segmenter& reduced_model,
                         const WeightFile& vectors, const nlohmann::json& cases,
                         const std::string& img, const DecoderImage& exact,
                         const DecoderImage& reduced, const ImageGeometry& geom,
                         const std::string& what) {
    double lowest = 1.0;
    for (const auto& c : cases.at("cases")) {
        if (c.at("image") != img) continue;
        const std::string key = img + "." + c.at("case").get<std::string>();
        const Prompts p = golden::case_prompts(vectors, key, c.at("multimask_output").get<bool>());
        const Masks want = model.decode(exact, geom, p);
        const Masks got = reduced_model.decode(reduced, geom, p);
        EXPECT_EQ(want.masks.size(), got.masks.size()) << key;
        if (want.masks.size() != got.masks.size()) return 0.0;
        const int64_t plane = static_cast<int64_t>(want.width) * want.height;
        for (int i = 0; i < want.count(); ++i) {
            const double iou = golden::mask_iou(want.masks.data() + i * plane,
                                                got.masks.data() + i * plane, plane);
            EXPECT_GE(iou, 0.99) << key << " mask " << i << " from " << what;
            lowest = std::min(lowest, iou);
        }
    }
    return lowest;
}

TEST_P(BundlePrecision, MasksKeepIoUAbove099) {
    SPLITSEG_REQUIRE_GOLDEN(dir, GetParam());
    const WeightFile vectors = WeightFile::open(dir + "/vectors.safetensors");
    nlohmann::json cases;
    std::ifstream(dir + "/cases.json") >> cases;
    auto model = Segmenter::load(dir + "/weights.pth");

    for (const std::string img : {"img0", "img1"}) {
        const Embedding e = model->encode(load_image(dir + "/" + img + ".png"));
        const DecoderImage exact = model->prepare(e);
        for (BundleDType dtype : {BundleDType::F16, BundleDType::BF16, BundleDType::Int8}) {
            const std::vector<uint8_t> bytes = serialize_bundle(e, dtype);
            if (model->family() != ModelFamily::Sam2) {  // 256x64x64 values
                const size_t limit = dtype == BundleDType::Int8 ? 1100 * 1000 : 2100 * 1000;
                EXPECT_LE(bytes.size(), limit) << bundle_dtype_name(dtype) << " bundle size";
            }
            const DecoderImage reduced = model->prepare(parse_bundle(bytes));
            expect_same_masks(*model, *model, vectors, cases, img, exact, reduced, e.geom,
                              std::string("a ") + bundle_dtype_name(dtype) + " bundle");
        }
    }
}

// --precision bf16: the encoder's and the prompt decoder's products in bf16, against f32.
TEST_P(BundlePrecision, Bf16ComputeKeepsIoUAbove099) {
    SPLITSEG_REQUIRE_GOLDEN(dir, GetParam());
    if (!precision_supported(Precision::BF16))
        GTEST_SKIP() << "this CPU cannot run oneDNN's bf16 products (no AVX-512)";
    const WeightFile vectors = WeightFile::open(dir + "/vectors.safetensors");
    nlohmann::json cases;
    std::ifstream(dir + "/cases.json") >> cases;
    auto model = Segmenter::load(dir + "/weights.pth");
    auto bf16 = Segmenter::load(dir + "/weights.pth", Precision::BF16);

    double lowest = 1.0;
    for (const std::string img : {"img0", "img1"}) {
        const Image image = load_image(dir + "/" + img + ".png");
        const Embedding e = model->encode(image);
        const DecoderImage reduced = bf16->prepare(bf16->encode(image));
        lowest = std::min(
            lowest, expect_same_masks(*model, *bf16, vectors, cases, img, model->prepare(e),
                                      reduced, e.geom, "bf16 compute (" + bf16->describe() + ")"));
    }
    std::printf("%s: lowest mask IoU of bf16 compute against f32: %.5f\n", GetParam().c_str(),
                lowest);
}

INSTANTIATE_TEST_SUITE_P(Golden, BundlePrecision,
                         testing::Values("sam-vit-tiny", "mobilesam", "sam2.1-hiera-mini"),
                         [](const auto& p) { return golden::test_name(p.param); });

}  // namespace
}  // namespace splitseg
