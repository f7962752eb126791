// The prompt side of the runtime: prompts in original pixels -> model frame -> decoder -> masks at
// the original size. Shared by Segmenter (native) and the WASM decoder, which has no encoder.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "runtime/segmenter.h"

namespace splitseg {

const char* family_name(ModelFamily f) {
    switch (f) {
        case ModelFamily::Sam:
            return "sam";
        case ModelFamily::MobileSam:
            return "mobilesam";
        case ModelFamily::Sam2:
            return "sam2.1";
    }
    return "?";
}

bool family_from_name(const std::string& name, ModelFamily* out) {
    for (ModelFamily f : {ModelFamily::Sam, ModelFamily::MobileSam, ModelFamily::Sam2}) {
        if (name == family_name(f)) {
            *out = f;
            return true;
        }
    }
    return false;
}

int Masks::best() const {
    int best = 0;
    for (int i = 1; i < count(); ++i)
        if (iou[i] > iou[best]) best = i;
    return best;
}

static void check_point(const ImageGeometry& geom, float x, float y, const char* what) {
    if (!std::isfinite(x) || !std::isfinite(y) || x < 0 || y < 0 || x > geom.orig_w ||
        y > geom.orig_h)
        throw std::invalid_argument(std::string(what) + " (" + std::to_string(x) + ", " +
                                    std::to_string(y) + ") is outside the " +
                                    std::to_string(geom.orig_w) + "x" +
                                    std::to_string(geom.orig_h) + " image");
}

// Validates prompts in original pixels and maps them into the model's 1024 frame.
static Prompt to_model_prompt(const ImageGeometry& geom, const Prompts& p) {
    if (p.points.empty() && !p.box)
        throw std::invalid_argument("a prompt needs at least one point or a box");
    Prompt out;
    for (const Click& c : p.points) {
        check_point(geom, c.x, c.y, "point");
        if (c.label != 0 && c.label != 1)
            throw std::invalid_argument("point label must be 1 (foreground) or 0 (background)");
        auto [x, y] = to_model_frame(geom, c.x, c.y);
        out.points.push_back({x, y, c.label});
    }
    if (p.box) {
        const auto& b = *p.box;
        check_point(geom, b[0], b[1], "box corner");
        check_point(geom, b[2], b[3], "box corner");
        if (b[2] < b[0] || b[3] < b[1])
            throw std::invalid_argument("box must be x0,y0,x1,y1 with x0 <= x1 and y0 <= y1");
        auto [x0, y0] = to_model_frame(geom, b[0], b[1]);
        auto [x1, y1] = to_model_frame(geom, b[2], b[3]);
        out.box = std::array<float, 4>{x0, y0, x1, y1};
    }
    if (p.mask_input) {
        const Tensor& m = *p.mask_input;
        if (m.numel() != 256 * 256)
            throw std::invalid_argument("mask_input must be 1x256x256 low-res logits, got " +
                                        shape_str(m.shape()));
        for (int64_t i = 0; i < m.numel(); ++i)
            if (!std::isfinite(m[i])) throw std::invalid_argument("mask_input holds NaN or inf");
        out.mask_input = &m;
    }
    return out;
}

Masks decode_prompts(const SamDecoder& decoder, ModelFamily family, const DecoderImage& image,
                     const ImageGeometry& geom, const Prompts& prompts, MaskOutput output) {
    const auto start = std::chrono::steady_clock::now();
    auto ms_since = [](std::chrono::steady_clock::time_point t) {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t)
            .count();
    };
    const MaskChoice choice = !prompts.multimask  ? MaskChoice::Single
                              : prompts.best_only ? MaskChoice::BestOfMultimask
                                                  : MaskChoice::Multimask;
    DecoderOutput out = decoder.decode(image, to_model_prompt(geom, prompts), choice);
    Masks m;
    m.decoder_ms = ms_since(start);
    const auto upscale_start = std::chrono::steady_clock::now();
    m.width = geom.orig_w;
    m.height = geom.orig_h;
    m.iou = std::move(out.iou);
    m.low_res_logits = std::move(out.low_res_logits);
    if (output == MaskOutput::Masks) {
        m.masks = upscale_masks(m.low_res_logits, geom);
    } else if (output == MaskOutput::Logits) {
        m.logits = upscale_logits(m.low_res_logits, geom);
        m.masks = masks_from_logits(m.logits);
    }
    m.upscale_ms = ms_since(upscale_start);
    // SAM 2.1's predictor upscales the raw logits, then clamps the low-res ones it returns
    // (they are fed back as mask input).
    if (family == ModelFamily::Sam2) {
        float* logit = m.low_res_logits.data();
        for (int64_t i = 0; i < m.low_res_logits.numel(); ++i)
            logit[i] = std::clamp(logit[i], -32.0f, 32.0f);
    }
    return m;
}

}  // namespace splitseg
