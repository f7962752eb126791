#include "engine/models/sam_decoder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "engine/weights/safetensors.h"

namespace splitseg {
namespace {

// A narrow decoder with every part of the full-size one (the image grid stays 64x64).
SamDecoderConfig small_config(DecoderVariant v) {
    SamDecoderConfig c = SamDecoderConfig::full_size(v);
    c.embed_dim = 32;
    c.mlp_dim = 48;
    c.attn_dim = 16;
    c.mask_in_chans = 8;
    c.iou_head_dim = 24;
    return c;
}

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale = 0.5f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = u(rng);
    return t;
}

// Writes random weights for `tensors` to a safetensors file and opens it.
WeightFile write_weights(const std::vector<std::pair<std::string, Shape>>& tensors,
                         const std::string& file_name) {
    std::mt19937 rng(11);
    std::vector<Tensor> data;
    std::vector<SafetensorsEntry> entries;
    for (const auto& [name, shape] : tensors) data.push_back(random_tensor(shape, rng));
    for (size_t i = 0; i < tensors.size(); ++i)
        entries.push_back({tensors[i].first, DType::F32, tensors[i].second, data[i].data(),
                           static_cast<size_t>(data[i].numel()) * sizeof(float)});
    const std::string path =
        (std::filesystem::temp_directory_path() / ("splitseg_" + file_name)).string();
    write_safetensors(path, entries, {});
    WeightFile w = WeightFile::open(path);
    std::filesystem::remove(path);  // the mapping stays valid
    return w;
}

struct SmallDecoder {
    SamDecoder decoder;
    DecoderImage image;
};

SmallDecoder small_decoder(DecoderVariant v) {
    const SamDecoderConfig c = small_config(v);
    const std::string name = v == DecoderVariant::Sam ? "sam_decoder_small.safetensors"
                                                      : "sam2_decoder_small.safetensors";
    SamDecoder d = SamDecoder::load(write_weights(sam_decoder_tensor_shapes(c), name));
    std::mt19937 rng(5);
    const int64_t C = c.embed_dim, g = c.grid;
    Tensor embed = random_tensor({C, g, g}, rng, 1.0f);
    DecoderImage image =
        v == DecoderVariant::Sam
            ? d.prepare(std::move(embed))
            : d.prepare(std::move(embed), random_tensor({C / 8, 4 * g, 4 * g}, rng),
                        random_tensor({C / 4, 2 * g, 2 * g}, rng));
    return {std::move(d), std::move(image)};
}

Prompt one_click() {
    Prompt p;
    p.points.push_back({300.0f, 410.5f, 1});
    return p;
}

bool all_finite(const Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t[i])) return false;
    return true;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
    float m = 0.0f;
    for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

float stability(const Tensor& logits, float delta) {
    int64_t inner = 0, outer = 0;
    for (int64_t i = 0; i < logits.numel(); ++i) {
        inner += logits[i] > delta;
        outer += logits[i] > -delta;
    }
    return outer ? static_cast<float>(inner) / static_cast<float>(outer) : 1.0f;
}

class SamDecoderVariants : public ::testing::TestWithParam<DecoderVariant> {};

TEST(SamDecoderShapes, FullSizeListingsHaveTheOfficialKeys) {
    std::map<std::string, Shape> sam, sam2;
    for (const auto& [n, s] : sam_decoder_tensor_shapes(DecoderVariant::Sam)) sam[n] = s;
    for (const auto& [n, s] : sam_decoder_tensor_shapes(DecoderVariant::Sam2)) sam2[n] = s;
    EXPECT_EQ(sam.size(), 137u);
    EXPECT_EQ(sam2.size(), 148u);  // + object-score token and head, conv_s0/conv_s1
    EXPECT_EQ(sam["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"], (Shape{2, 128}));
    EXPECT_EQ(sam["prompt_encoder.mask_downscaling.6.weight"], (Shape{256, 16, 1, 1}));
    EXPECT_EQ(sam["mask_decoder.transformer.layers.1.mlp.lin2.weight"], (Shape{256, 2048}));
    EXPECT_EQ(sam["mask_decoder.transformer.final_attn_token_to_image.k_proj.weight"],
              (Shape{128, 256}));
    EXPECT_EQ(sam["mask_decoder.output_upscaling.0.weight"], (Shape{256, 64, 2, 2}));
    EXPECT_EQ(sam["mask_decoder.output_hypernetworks_mlps.3.layers.2.weight"], (Shape{32, 256}));
    EXPECT_EQ(sam["mask_decoder.iou_prediction_head.layers.2.weight"], (Shape{4, 256}));
    EXPECT_EQ(sam2["sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight"],
              (Shape{2048, 256}));
    EXPECT_EQ(sam2["sam_mask_decoder.obj_score_token.weight"], (Shape{1, 256}));
    EXPECT_EQ(sam2["sam_mask_decoder.pred_obj_score_head.layers.2.weight"], (Shape{1, 256}));
    EXPECT_EQ(sam2["sam_mask_decoder.conv_s0.weight"], (Shape{32, 256, 1, 1}));
    EXPECT_EQ(sam2["sam_mask_decoder.conv_s1.weight"], (Shape{64, 256, 1, 1}));
}

TEST_P(SamDecoderVariants, LoadInfersTheConfigFromTheTensors) {
    const SmallDecoder s = small_decoder(GetParam());
    EXPECT_EQ(s.decoder.config(), small_config(GetParam()));
    EXPECT_EQ(s.decoder.variant(), GetParam());
}

TEST_P(SamDecoderVariants, DecodesEveryKindOfPrompt) {
    const SmallDecoder s = small_decoder(GetParam());
    const bool sam2 = GetParam() == DecoderVariant::Sam2;
    Tensor previous;
    std::vector<Prompt> prompts(4);
    prompts[0] = one_click();
    prompts[1].points = {{100, 200, 1}, {900, 30, 0}, {512, 512, 1}};
    prompts[2].box = std::array<float, 4>{100, 150, 700, 800};
    prompts[3] = one_click();
    prompts[3].box = std::array<float, 4>{0, 0, 1023, 1023};
    for (size_t i = 0; i < prompts.size(); ++i)
        for (bool multimask : {true, false}) {
            SCOPED_TRACE(::testing::Message() << "prompt " << i << " multimask " << multimask);
            const DecoderOutput out = s.decoder.decode(
                s.image, prompts[i], multimask ? MaskChoice::Multimask : MaskChoice::Single);
            const int64_t n = multimask ? 3 : 1;
            EXPECT_EQ(out.low_res_logits.shape(), (Shape{n, 256, 256}));
            ASSERT_EQ(out.iou.size(), static_cast<size_t>(n));
            EXPECT_TRUE(all_finite(out.low_res_logits));
            EXPECT_EQ(std::isfinite(out.object_score_logit), sam2);
            if (sam2) {
                for (float iou : out.iou) EXPECT_TRUE(iou > 0.0f && iou < 1.0f) << iou;
            }
            previous = out.low_res_logits;
        }

    // Refinement with the previous logits, with clicks and alone.
    previous.reshape({1, 256, 256});
    Prompt refine = one_click();
    refine.mask_input = &previous;
    const DecoderOutput with_mask = s.decoder.decode(s.image, refine, MaskChoice::Single);
    const DecoderOutput without = s.decoder.decode(s.image, one_click(), MaskChoice::Single);
    EXPECT_TRUE(all_finite(with_mask.low_res_logits));
    EXPECT_GT(max_abs_diff(with_mask.low_res_logits, without.low_res_logits), 1e-3f);
    Prompt mask_only;
    mask_only.mask_input = &previous;
    EXPECT_TRUE(
        all_finite(s.decoder.decode(s.image, mask_only, MaskChoice::Multimask).low_res_logits));
}

TEST(SamDecoder, Sam2SingleMaskFallsBackToTheBestMultimaskWhenUnstable) {
    SmallDecoder s = small_decoder(DecoderVariant::Sam2);
    EXPECT_FALSE(s.decoder.config().dynamic_multimask);  // as the reference module
    s.decoder.set_dynamic_multimask(true);
    const SamDecoderConfig& c = s.decoder.config();
    int fallbacks = 0;
    for (float x : {10.0f, 300.0f, 600.0f, 1000.0f}) {
        Prompt p;
        p.points.push_back({x, 1024.0f - x, 1});
        const DecoderOutput multi = s.decoder.decode(s.image, p, MaskChoice::Multimask);
        const DecoderOutput single = s.decoder.decode(s.image, p, MaskChoice::Single);
        const size_t best =
            std::max_element(multi.iou.begin(), multi.iou.end()) - multi.iou.begin();
        const bool fell_back = single.iou[0] == multi.iou[best];
        if (fell_back) {
            const Tensor best_logits =
                Tensor::from({256, 256}, multi.low_res_logits.data() + best * 256 * 256);
            EXPECT_EQ(max_abs_diff(single.low_res_logits, best_logits), 0.0f);
            ++fallbacks;
        } else {
            EXPECT_GE(stability(single.low_res_logits, c.stability_delta), c.stability_thresh);
        }
    }
    EXPECT_GT(fallbacks, 0);  // random weights give unstable single masks
}

// The interactive path upscales one mask only: it must be exactly the best multimask candidate.
TEST_P(SamDecoderVariants, BestOfMultimaskIsTheBestCandidate) {
    const SmallDecoder s = small_decoder(GetParam());
    for (float x : {10.0f, 300.0f, 600.0f, 1000.0f}) {
        Prompt p;
        p.points.push_back({x, 1024.0f - x, 1});
        const DecoderOutput multi = s.decoder.decode(s.image, p, MaskChoice::Multimask);
        const DecoderOutput best = s.decoder.decode(s.image, p, MaskChoice::BestOfMultimask);
        const size_t k = std::max_element(multi.iou.begin(), multi.iou.end()) - multi.iou.begin();
        ASSERT_EQ(best.iou.size(), 1u);
        EXPECT_EQ(best.iou[0], multi.iou[k]);
        EXPECT_EQ(best.low_res_logits.shape(), (Shape{1, 256, 256}));
        const Tensor want = Tensor::from({1, 256, 256}, multi.low_res_logits.data() + k * 65536);
        EXPECT_EQ(max_abs_diff(best.low_res_logits, want), 0.0f);
    }
}

TEST_P(SamDecoderVariants, ConcurrentDecodesMatchSerialOnes) {
    const SmallDecoder s = small_decoder(GetParam());
    std::vector<Prompt> prompts(4);
    for (int i = 0; i < 4; ++i)
        prompts[i].points.push_back({100.0f + 200 * i, 700.0f - 150 * i, 1});
    std::vector<DecoderOutput> serial, parallel(4);
    for (const Prompt& p : prompts)
        serial.push_back(s.decoder.decode(s.image, p, MaskChoice::Multimask));
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back(
            [&, i] { parallel[i] = s.decoder.decode(s.image, prompts[i], MaskChoice::Multimask); });
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < 4; ++i) {
        EXPECT_LE(max_abs_diff(parallel[i].low_res_logits, serial[i].low_res_logits), 1e-4f);
        EXPECT_NEAR(parallel[i].iou[0], serial[i].iou[0], 1e-5f);
    }
}

TEST_P(SamDecoderVariants, RejectsBadPromptsAndImages) {
    const SmallDecoder s = small_decoder(GetParam());
    Prompt nan_point = one_click();
    nan_point.points[0].x = NAN;
    EXPECT_THROW(s.decoder.decode(s.image, nan_point, MaskChoice::Multimask),
                 std::invalid_argument);
    Prompt bad_label = one_click();
    bad_label.points[0].label = 2;
    EXPECT_THROW(s.decoder.decode(s.image, bad_label, MaskChoice::Multimask),
                 std::invalid_argument);
    Prompt bad_box;
    bad_box.box = std::array<float, 4>{0, 0, INFINITY, 10};
    EXPECT_THROW(s.decoder.decode(s.image, bad_box, MaskChoice::Multimask), std::invalid_argument);
    Tensor small_mask = Tensor::zeros({1, 64, 64});
    Prompt bad_mask = one_click();
    bad_mask.mask_input = &small_mask;
    EXPECT_THROW(s.decoder.decode(s.image, bad_mask, MaskChoice::Multimask), std::invalid_argument);
    Tensor nan_mask = Tensor::filled({1, 256, 256}, NAN);
    bad_mask.mask_input = &nan_mask;
    EXPECT_THROW(s.decoder.decode(s.image, bad_mask, MaskChoice::Multimask), std::invalid_argument);

    EXPECT_THROW(s.decoder.prepare(Tensor::zeros({16, 64, 64})), std::invalid_argument);
    EXPECT_THROW(s.decoder.decode(DecoderImage{}, one_click(), MaskChoice::Multimask),
                 std::invalid_argument);
    const Tensor embed = Tensor::zeros({1, 32, 64, 64});  // a batch dimension of 1 is accepted
    if (GetParam() == DecoderVariant::Sam) {
        EXPECT_NO_THROW(s.decoder.prepare(embed));
        EXPECT_THROW(
            s.decoder.prepare(embed, Tensor::zeros({4, 256, 256}), Tensor::zeros({8, 128, 128})),
            std::invalid_argument);
    } else {
        EXPECT_THROW(s.decoder.prepare(embed), std::invalid_argument);
        EXPECT_NO_THROW(
            s.decoder.prepare(embed, Tensor::zeros({4, 256, 256}), Tensor::zeros({8, 128, 128})));
    }
}

TEST(SamDecoder, DetectsAndRejectsCheckpoints) {
    const WeightFile unrelated =
        write_weights({{"image_encoder.pos_embed", {1, 4}}}, "sam_decoder_unrelated.safetensors");
    EXPECT_FALSE(SamDecoder::detect(unrelated));
    EXPECT_THROW(SamDecoder::load(unrelated), FormatError);

    // A decoder missing one tensor names it.
    auto tensors = sam_decoder_tensor_shapes(small_config(DecoderVariant::Sam));
    tensors.erase(std::find_if(tensors.begin(), tensors.end(), [](const auto& t) {
        return t.first == "mask_decoder.transformer.layers.1.norm3.bias";
    }));
    const WeightFile broken = write_weights(tensors, "sam_decoder_broken.safetensors");
    EXPECT_TRUE(SamDecoder::detect(broken));
    try {
        SamDecoder::load(broken);
        ADD_FAILURE() << "load succeeded";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("layers.1.norm3.bias"), std::string::npos) << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(BothVariants, SamDecoderVariants,
                         ::testing::Values(DecoderVariant::Sam, DecoderVariant::Sam2),
                         [](const auto& test) {
                             return test.param == DecoderVariant::Sam ? "Sam" : "Sam2";
                         });

}  // namespace
}  // namespace splitseg
