#include "runtime/segmenter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "engine/models/hiera.h"
#include "engine/models/sam_vit.h"
#include "engine/models/tiny_vit.h"
#include "engine/weights/weight_file.h"

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

// Exactly one encoder is loaded, chosen by the checkpoint's tensors.
struct Segmenter::Encoders {
    std::optional<SamVitEncoder> vit;
    std::optional<TinyVitEncoder> tiny_vit;
    std::optional<HieraEncoder> hiera;
};

Segmenter::Segmenter() : encoders_(std::make_unique<Encoders>()) {}
Segmenter::~Segmenter() = default;

std::unique_ptr<Segmenter> Segmenter::load(const std::string& path, Precision precision) {
    WeightFile w = WeightFile::open(path);
    std::unique_ptr<Segmenter> s(new Segmenter());
    if (HieraEncoder::detect(w)) {
        s->family_ = ModelFamily::Sam2;
        s->encoders_->hiera = HieraEncoder::load(w);
        precision = Precision::F32;  // SAM 2.1 computes in f32 only (see HieraEncoder::build)
    } else if (TinyVitEncoder::detect(w)) {
        s->family_ = ModelFamily::MobileSam;
        s->encoders_->tiny_vit = TinyVitEncoder::load(w, precision);
    } else if (SamVitEncoder::detect(w)) {
        s->family_ = ModelFamily::Sam;
        s->encoders_->vit = SamVitEncoder::load(w, precision);
    } else {
        throw FormatError(path +
                          ": no supported image encoder found (expected SAM ViT, "
                          "MobileSAM TinyViT or SAM 2.1 Hiera tensors)");
    }
    if (!SamDecoder::detect(w)) throw FormatError(path + ": no prompt encoder/mask decoder found");
    s->decoder_ = std::make_unique<SamDecoder>(SamDecoder::load(w));
    s->model_hash_ = w.content_hash();
    s->precision_ = precision;
    return s;
}

std::string Segmenter::describe() const {
    std::ostringstream d;
    d << family_name(family_);
    if (encoders_->vit) {
        const SamVitConfig& c = encoders_->vit->config();
        d << " vit width " << c.embed_dim << " depth " << c.depth << " heads " << c.num_heads;
    } else if (encoders_->hiera) {
        const HieraConfig& c = encoders_->hiera->config();
        d << " hiera width " << c.embed_dim << " stages";
        for (int n : c.stages) d << ' ' << n;
    } else {
        d << " tiny_vit";
    }
    if (precision_ != Precision::F32) d << ", " << precision_name(precision_) << " compute";
    return d.str();
}

Preprocessed Segmenter::preprocess(const Image& image) const {
    return family_ == ModelFamily::Sam2 ? preprocess_sam2(image) : preprocess_sam(image);
}

Embedding Segmenter::encode(const Image& image, const Trace& trace) const {
    return encode_preprocessed(preprocess(image), trace);
}

Embedding Segmenter::encode_preprocessed(const Preprocessed& input, const Trace& trace) const {
    Embedding e;
    e.family = family_;
    e.model_hash = model_hash_;
    e.geom = input.geom;
    if (encoders_->hiera) {
        Sam2Features f = encoders_->hiera->encode(input.input, trace);
        e.image_embed = std::move(f.image_embed);
        e.high_res_0 = std::move(f.high_res_0);
        e.high_res_1 = std::move(f.high_res_1);
    } else if (encoders_->tiny_vit) {
        e.image_embed = encoders_->tiny_vit->encode(input.input, trace);
    } else {
        e.image_embed = encoders_->vit->encode(input.input, trace);
    }
    return e;
}

void Segmenter::check_embedding(const Embedding& embedding) const {
    if (embedding.family != family_ || embedding.model_hash != model_hash_)
        throw std::invalid_argument("embedding was made by model " + embedding.model_hash + " (" +
                                    family_name(embedding.family) + "), not by the loaded " +
                                    model_hash_ + " (" + family_name(family_) + ")");
}

DecoderImage Segmenter::prepare(const Embedding& embedding) const {
    check_embedding(embedding);
    return decoder_->prepare(embedding.image_embed, embedding.high_res_0, embedding.high_res_1);
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

Masks Segmenter::decode(const DecoderImage& image, const ImageGeometry& geom,
                        const Prompts& prompts, MaskOutput output) const {
    const auto start = std::chrono::steady_clock::now();
    auto ms_since = [](std::chrono::steady_clock::time_point t) {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t)
            .count();
    };
    DecoderOutput out = decoder_->decode(image, to_model_prompt(geom, prompts), prompts.multimask);
    Masks m;
    m.decoder_ms = ms_since(start);
    const auto upscale_start = std::chrono::steady_clock::now();
    m.width = geom.orig_w;
    m.height = geom.orig_h;
    m.iou = std::move(out.iou);
    m.low_res_logits = std::move(out.low_res_logits);
    if (output != MaskOutput::LowResOnly) {
        Tensor logits = upscale_logits(m.low_res_logits, geom);
        m.masks = masks_from_logits(logits);
        if (output == MaskOutput::Logits) m.logits = std::move(logits);
    }
    m.upscale_ms = ms_since(upscale_start);
    // SAM 2.1's predictor upscales the raw logits, then clamps the low-res ones it returns
    // (they are fed back as mask input).
    if (family_ == ModelFamily::Sam2) {
        float* logit = m.low_res_logits.data();
        for (int64_t i = 0; i < m.low_res_logits.numel(); ++i)
            logit[i] = std::clamp(logit[i], -32.0f, 32.0f);
    }
    return m;
}

}  // namespace splitseg
