// One side of the interleaved decoder A/B (decoder_ab.sh): compiled once against each source
// tree, the base one with -Dsplitseg=splitseg_base so that both engines link into one binary.
// SIDE names the side's two entry points.
#include <chrono>
#include <random>

#include "engine/models/sam_decoder.h"
#include "engine/weights/weight_file.h"

#define SIDE_CAT2(a, b) a##b
#define SIDE_CAT(a, b) SIDE_CAT2(a, b)

namespace {

struct Side {
    splitseg::SamDecoder decoder;
    splitseg::DecoderImage image;
    splitseg::Tensor mask;  // a previous click's low-res logits, for the refining click
};

Side* side = nullptr;

}  // namespace

// Loads the model's decoder and prepares a random 64x64 embedding (seeded: both sides get the
// same one).
void SIDE_CAT(SIDE, _init)(const char* model, bool bf16) {
    using namespace splitseg;
    const WeightFile w = WeightFile::open(model);
    side = new Side{
        SamDecoder::load(w, bf16 ? Precision::BF16 : Precision::F32), {}, Tensor({1, 256, 256})};
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Tensor embed({256, 64, 64});
    for (int64_t i = 0; i < embed.numel(); ++i) embed[i] = normal(rng);
    for (int64_t i = 0; i < side->mask.numel(); ++i) side->mask[i] = 4.0f * normal(rng);
    side->image = side->decoder.prepare(std::move(embed));
}

// Milliseconds of one decode: kind 0 one click with 3 masks, 1 the best mask only, 2 a second
// click refining with the mask input, 3 a session's twelfth click (12 points and the mask), 4 a
// session's fifth click as the server decodes it (5 points, the mask, the single mask).
double SIDE_CAT(SIDE, _click)(int kind) {
    using namespace splitseg;
    Prompt p;
    p.points = {{500.0f, 400.0f, 1}};
    if (kind == 2) {
        p.points.push_back({300.0f, 200.0f, 0});
        p.mask_input = &side->mask;
    }
    const int points = kind == 3 ? 12 : kind == 4 ? 5 : 1;
    for (int i = 1; i < points; ++i)
        p.points.push_back({40.0f + 80.0f * i, 1000.0f - 75.0f * i, i % 2});
    if (kind >= 3) p.mask_input = &side->mask;
    const MaskChoice choice = kind == 1   ? MaskChoice::BestOfMultimask
                              : kind == 4 ? MaskChoice::Single
                                          : MaskChoice::Multimask;
    const auto t0 = std::chrono::steady_clock::now();
    const DecoderOutput out = side->decoder.decode(side->image, p, choice);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return out.low_res_logits.numel() > 0 ? ms : -1.0;
}
