// Reduced-precision bundles keep the masks: for every golden model, image and prompt case, masks
// decoded from an f16, bf16 or int8 bundle have IoU >= 0.99 with the masks from float32.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "golden.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

namespace splitseg {
namespace {

class BundlePrecision : public testing::TestWithParam<std::string> {};

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
            for (const auto& c : cases.at("cases")) {
                if (c.at("image") != img) continue;
                const std::string key = img + "." + c.at("case").get<std::string>();
                const Prompts p =
                    golden::case_prompts(vectors, key, c.at("multimask_output").get<bool>());
                const Masks want = model->decode(exact, e.geom, p);
                const Masks got = model->decode(reduced, e.geom, p);
                ASSERT_EQ(want.masks.size(), got.masks.size());
                const int64_t plane = static_cast<int64_t>(want.width) * want.height;
                for (int i = 0; i < want.count(); ++i) {
                    EXPECT_GE(golden::mask_iou(want.masks.data() + i * plane,
                                               got.masks.data() + i * plane, plane),
                              0.99)
                        << key << " mask " << i << " from a " << bundle_dtype_name(dtype)
                        << " bundle";
                }
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Golden, BundlePrecision,
                         testing::Values("sam-vit-tiny", "mobilesam", "sam2.1-hiera-mini"),
                         [](const auto& p) { return golden::test_name(p.param); });

}  // namespace
}  // namespace splitseg
