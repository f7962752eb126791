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
        // f32 only (see HieraEncoder::build); `precision` applies to its prompt decoder.
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
    s->decoder_ = std::make_unique<SamDecoder>(SamDecoder::load(w, precision));
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
    if (precision_ != Precision::F32)
        d << ", " << precision_name(precision_)
          << (encoders_->hiera ? " prompt decoder (f32 encoder)" : " compute");
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

Masks Segmenter::decode(const DecoderImage& image, const ImageGeometry& geom,
                        const Prompts& prompts, MaskOutput output) const {
    return decode_prompts(*decoder_, family_, image, geom, prompts, output);
}

}  // namespace splitseg
