// The prompt decoder as a WebAssembly module: a thin C API over SamDecoder, bundle parsing and
// the mask upscale, for src/wasm/splitseg_decoder_api.mjs. One decoder and one image at a time;
// every call runs on the caller's thread. Errors are caught here: a call returns -1 and
// ssd_last_error() says why.
#include <emscripten/emscripten.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/models/sam_decoder.h"
#include "engine/weights/weight_file.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"
#ifdef SPLITSEG_WASM_THREADS
#include "wasm/worker_pool.h"
#endif

namespace splitseg {
namespace {

struct State {
    std::optional<SamDecoder> decoder;
    std::string decoder_hash;  // the source checkpoint's model_hash, when the file names one
    std::optional<Embedding> embedding;
    std::optional<DecoderImage> prepared;
    Masks last;
    std::string error;
};

State& state() {
    static State s;
    return s;
}

#ifdef SPLITSEG_WASM_THREADS
// The threads beyond the caller's, at most the web workers emscripten starts with the module
// (PTHREAD_POOL_SIZE in CMakeLists.txt): more would wait for the event loop to create theirs.
constexpr int kMaxThreads = 4;

std::unique_ptr<WorkerPool>& pool() {
    static std::unique_ptr<WorkerPool> p;
    return p;
}
#endif

template <typename Fn>
int guarded(Fn fn) {
    try {
        return fn();
    } catch (const std::exception& e) {
        state().error = e.what();
    } catch (...) {
        state().error = "unknown error";
    }
    return -1;
}

// Why the loaded decoder cannot decode `e`, or "" when it can.
std::string mismatch(const State& s, const Embedding& e) {
    const bool sam2 = e.family == ModelFamily::Sam2;
    if (sam2 != (s.decoder->variant() == DecoderVariant::Sam2))
        return std::string("bundle is a ") + family_name(e.family) +
               " embedding; the decoder is not of that family";
    if (!s.decoder_hash.empty() && e.model_hash != s.decoder_hash)
        return "bundle was made by model " + e.model_hash + ", the decoder comes from model " +
               s.decoder_hash;
    return "";
}

// Prepares the loaded image for the loaded decoder once both are present.
void prepare_if_ready() {
    State& s = state();
    s.prepared.reset();
    if (!s.decoder || !s.embedding) return;
    if (const std::string why = mismatch(s, *s.embedding); !why.empty())
        throw std::invalid_argument(why);
    const Embedding& e = *s.embedding;
    s.prepared = s.decoder->prepare(e.image_embed, e.high_res_0, e.high_res_1);
}

}  // namespace
}  // namespace splitseg

using namespace splitseg;

extern "C" {

EMSCRIPTEN_KEEPALIVE const char* ssd_last_error() {
    return state().error.c_str();
}

// The threads the products run on (the caller's included); returns the count now in use: 1 in
// the single-threaded module, at most kMaxThreads in the threaded one. Stays over ssd_dispose().
EMSCRIPTEN_KEEPALIVE int ssd_set_threads(int n) {
#ifdef SPLITSEG_WASM_THREADS
    set_gemm_portable_runner(nullptr);
    pool().reset();  // joins the old team
    n = std::clamp(n, 1, kMaxThreads);
    if (n > 1) {
        pool() = std::make_unique<WorkerPool>(n);
        set_gemm_portable_runner(pool().get());
    }
    return n;
#else
    return 1;
#endif
}

// A decoder weights file (splitseg models extract-decoder, or any checkpoint in safetensors).
EMSCRIPTEN_KEEPALIVE int ssd_load_decoder(const uint8_t* data, size_t size) {
    return guarded([&] {
        State& s = state();
        s.decoder.reset();
        s.prepared.reset();
        WeightFile w = WeightFile::from_bytes(std::vector<uint8_t>(data, data + size), "decoder");
        s.decoder = SamDecoder::load(w);
        const auto hash = w.metadata().find("model_hash");
        s.decoder_hash = hash == w.metadata().end() ? "" : hash->second;
        // An image encoded by another model is dropped: the next bundle replaces it.
        if (s.embedding && !mismatch(s, *s.embedding).empty()) s.embedding.reset();
        prepare_if_ready();
        return 0;
    });
}

// An embedding bundle (runtime/bundle.h); prepares it for decoding when a decoder is loaded.
EMSCRIPTEN_KEEPALIVE int ssd_load_bundle(const uint8_t* data, size_t size) {
    return guarded([&] {
        State& s = state();
        s.embedding.reset();
        s.prepared.reset();
        s.embedding = parse_bundle(std::vector<uint8_t>(data, data + size));
        try {
            prepare_if_ready();
        } catch (...) {
            s.embedding.reset();  // not left half-loaded: width/height read 0
            throw;
        }
        return 0;
    });
}

EMSCRIPTEN_KEEPALIVE int ssd_image_width() {
    return state().embedding ? state().embedding->geom.orig_w : 0;
}
EMSCRIPTEN_KEEPALIVE int ssd_image_height() {
    return state().embedding ? state().embedding->geom.orig_h : 0;
}
EMSCRIPTEN_KEEPALIVE const char* ssd_image_family() {
    return state().embedding ? family_name(state().embedding->family) : "";
}

// points: n_points triples (x, y, label) in original pixels; box: x0, y0, x1, y1 or null;
// mask_input: 256x256 low-res logits of an earlier decode or null. Returns the mask count.
EMSCRIPTEN_KEEPALIVE int ssd_decode(const float* points, int n_points, const float* box,
                                    int multimask, const float* mask_input) {
    return guarded([&] {
        State& s = state();
        if (!s.decoder) throw std::invalid_argument("no decoder loaded");
        if (!s.prepared) throw std::invalid_argument("no bundle loaded");
        Prompts p;
        for (int i = 0; i < n_points; ++i)
            p.points.push_back(
                {points[3 * i], points[3 * i + 1], static_cast<int>(points[3 * i + 2])});
        if (box) p.box = std::array<float, 4>{box[0], box[1], box[2], box[3]};
        if (mask_input) p.mask_input = Tensor::from({1, 256, 256}, mask_input);
        p.multimask = multimask != 0;
        s.last = decode_prompts(*s.decoder, s.embedding->family, *s.prepared, s.embedding->geom, p,
                                MaskOutput::Masks);
        return s.last.count();
    });
}

// The last decode's outputs: masks [C, H, W] (0/1), scores [C], low-res logits [C, 256, 256].
EMSCRIPTEN_KEEPALIVE const uint8_t* ssd_masks() {
    return state().last.masks.data();
}
EMSCRIPTEN_KEEPALIVE const float* ssd_scores() {
    return state().last.iou.data();
}
EMSCRIPTEN_KEEPALIVE const float* ssd_low_res_logits() {
    return state().last.low_res_logits.data();
}

EMSCRIPTEN_KEEPALIVE void ssd_dispose() {
    State& s = state();
    s = State{};
}

}  // extern "C"
