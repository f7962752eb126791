#include "runtime/preprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/ops.h"

namespace splitseg {

ImageGeometry make_geometry(int orig_w, int orig_h, ResizeMode mode, int input_size) {
    if (orig_w < 1 || orig_h < 1 || input_size < 1)
        throw std::invalid_argument("image geometry needs positive sizes, got " +
                                    std::to_string(orig_w) + "x" + std::to_string(orig_h));
    ImageGeometry g{orig_w, orig_h, input_size, input_size, input_size, mode};
    if (mode == ResizeMode::LongestSide) {
        // segment_anything's get_preprocess_shape, in double as Python does it. A side that
        // would round to 0 (aspect ratio beyond 2048:1, where the reference fails) is kept at 1.
        const double scale = input_size * 1.0 / std::max(orig_w, orig_h);
        g.resized_w = std::max(1, static_cast<int>(orig_w * scale + 0.5));
        g.resized_h = std::max(1, static_cast<int>(orig_h * scale + 0.5));
    }
    return g;
}

// ---------------------------------------------------------------------------------------------
// Antialiased triangle-filter taps, shared by PIL's resample (Real = double) and PyTorch's
// antialiased interpolate (Real = float). For output sample i:
//   center  = (i + 0.5) * scale,             scale = in / out
//   support = max(scale, 1)                  (the triangle's radius 1, widened when shrinking)
//   inputs  [int(center - support + 0.5), int(center + support + 0.5)) clipped to [0, in)
//   weight  = tri((x - center + 0.5) / support), tri(t) = max(0, 1 - |t|), normalised to sum 1.
// The expressions keep the float/double promotions of the two reference implementations.

template <class Real>
struct FilterTaps {
    int64_t max_taps = 0;        // row stride of weights
    std::vector<int64_t> first;  // [out] first input index
    std::vector<int64_t> count;  // [out] number of inputs
    std::vector<Real> weights;   // [out, max_taps]
};

template <class Real>
static FilterTaps<Real> triangle_taps(int64_t in, int64_t out) {
    const Real scale = static_cast<Real>(in) / static_cast<Real>(out);
    const Real support = scale >= 1 ? scale : Real(1);
    const Real inv_support = static_cast<Real>(1.0 / static_cast<double>(support));
    FilterTaps<Real> taps;
    taps.max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    taps.first.resize(out);
    taps.count.resize(out);
    taps.weights.assign(out * taps.max_taps, Real(0));
    for (int64_t i = 0; i < out; ++i) {
        const Real center = scale * static_cast<Real>(i + 0.5);
        const int64_t lo =
            std::max<int64_t>(static_cast<int64_t>(static_cast<double>(center - support) + 0.5), 0);
        const int64_t hi =
            std::min(static_cast<int64_t>(static_cast<double>(center + support) + 0.5), in);
        const int64_t n = std::clamp<int64_t>(hi - lo, 0, taps.max_taps);
        Real* w = taps.weights.data() + i * taps.max_taps;
        Real total = 0;
        for (int64_t j = 0; j < n; ++j) {
            const Real t = std::abs(static_cast<Real>(
                (static_cast<double>(static_cast<Real>(lo + j) - center) + 0.5) * inv_support));
            w[j] = t < 1 ? static_cast<Real>(1.0 - t) : Real(0);
            total += w[j];
        }
        if (total != 0)
            for (int64_t j = 0; j < n; ++j) w[j] /= total;
        taps.first[i] = lo;
        taps.count[i] = n;
    }
    return taps;
}

// ---------------------------------------------------------------------------------------------
// PIL (Resample.c) on 8-bit data: weights in fixed point with 22 fractional bits, each pass
// accumulates in int32 from a half for rounding and truncates back to uint8 with clipping.

static constexpr int kPilPrecisionBits = 22;

struct FixedTaps {
    FilterTaps<double> f;
    std::vector<int32_t> k;  // [out, max_taps]
};

static FixedTaps pil_taps(int64_t in, int64_t out) {
    FixedTaps t{triangle_taps<double>(in, out), {}};
    t.k.resize(t.f.weights.size());
    for (size_t i = 0; i < t.k.size(); ++i)  // weights are >= 0: PIL rounds half up
        t.k[i] = static_cast<int32_t>(0.5 + t.f.weights[i] * (1 << kPilPrecisionBits));
    return t;
}

static uint8_t pil_clip8(int32_t acc) {
    return static_cast<uint8_t>(std::clamp(acc >> kPilPrecisionBits, 0, 255));
}

// src rows [row0, row0 + rows) of a width x ? RGB image -> rows x out_w.
static std::vector<uint8_t> pil_pass_horizontal(const uint8_t* src, int width, int64_t row0,
                                                int64_t rows, int out_w) {
    const FixedTaps t = pil_taps(width, out_w);
    std::vector<uint8_t> dst(static_cast<size_t>(rows) * out_w * 3);
#pragma omp parallel for if (rows * out_w > 65536)
    for (int64_t y = 0; y < rows; ++y) {
        const uint8_t* in = src + (row0 + y) * width * 3;
        uint8_t* o = dst.data() + y * out_w * 3;
        for (int x = 0; x < out_w; ++x) {
            const int32_t* k = t.k.data() + x * t.f.max_taps;
            const uint8_t* p = in + t.f.first[x] * 3;
            int32_t acc[3] = {1 << (kPilPrecisionBits - 1), 1 << (kPilPrecisionBits - 1),
                              1 << (kPilPrecisionBits - 1)};
            for (int64_t j = 0; j < t.f.count[x]; ++j)
                for (int c = 0; c < 3; ++c) acc[c] += p[j * 3 + c] * k[j];
            for (int c = 0; c < 3; ++c) o[x * 3 + c] = pil_clip8(acc[c]);
        }
    }
    return dst;
}

// taps index rows of src (offset by row0: src holds rows [row0, ...)) -> out_h rows.
static std::vector<uint8_t> pil_pass_vertical(const uint8_t* src, int width, const FixedTaps& t,
                                              int64_t row0, int out_h) {
    const int64_t stride = int64_t{width} * 3;
    std::vector<uint8_t> dst(static_cast<size_t>(out_h) * stride);
#pragma omp parallel for if (out_h * stride > 65536)
    for (int y = 0; y < out_h; ++y) {
        const int32_t* k = t.k.data() + y * t.f.max_taps;
        const uint8_t* in = src + (t.f.first[y] - row0) * stride;
        uint8_t* o = dst.data() + y * stride;
        for (int64_t i = 0; i < stride; ++i) {
            int32_t acc = 1 << (kPilPrecisionBits - 1);
            for (int64_t j = 0; j < t.f.count[y]; ++j) acc += in[j * stride + i] * k[j];
            o[i] = pil_clip8(acc);
        }
    }
    return dst;
}

Image resize_pil_bilinear(const Image& image, int width, int height) {
    if (width < 1 || height < 1 || image.width < 1 || image.height < 1)
        throw std::invalid_argument("resize_pil_bilinear: sizes must be positive");
    // A pass over an unchanged dimension is the identity in PIL too (weights 1 and 0).
    const FixedTaps vert = pil_taps(image.height, height);
    // Only the source rows the vertical pass reads go through the horizontal pass.
    const int64_t row0 = image.height == height ? 0 : vert.f.first.front();
    const int64_t row_end =
        image.height == height ? image.height : vert.f.first.back() + vert.f.count.back();
    std::vector<uint8_t> tmp;
    const uint8_t* rows = image.rgb.data() + row0 * image.width * 3;
    if (image.width != width) {
        tmp = pil_pass_horizontal(image.rgb.data(), image.width, row0, row_end - row0, width);
        rows = tmp.data();
    }
    Image out{width, height, {}};
    if (image.height != height) {
        out.rgb = pil_pass_vertical(rows, width, vert, row0, height);
    } else {
        out.rgb.assign(rows, rows + static_cast<size_t>(height) * width * 3);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// PyTorch's antialiased bilinear (upsample_bilinear2d_aa, CPU, float): width pass then height
// pass, each output = sum_j w_j * in_j accumulated in float in index order. A pass over an
// unchanged dimension is skipped (its weights would be 1 and 0).

static Tensor aa_pass_width(const Tensor& x, int64_t ow) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const FilterTaps<float> t = triangle_taps<float>(W, ow);
    Tensor y({C, H, ow});
#pragma omp parallel for collapse(2) if (C * H * ow > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < H; ++r) {
            const float* in = x.data() + (c * H + r) * W;
            float* o = y.data() + (c * H + r) * ow;
            for (int64_t i = 0; i < ow; ++i) {
                const float* w = t.weights.data() + i * t.max_taps;
                const float* p = in + t.first[i];
                float acc = p[0] * w[0];
                for (int64_t j = 1; j < t.count[i]; ++j) acc += p[j] * w[j];
                o[i] = acc;
            }
        }
    return y;
}

static Tensor aa_pass_height(const Tensor& x, int64_t oh) {
    const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
    const FilterTaps<float> t = triangle_taps<float>(H, oh);
    Tensor y({C, oh, W});
#pragma omp parallel for collapse(2) if (C * oh * W > 65536)
    for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < oh; ++r) {
            const float* w = t.weights.data() + r * t.max_taps;
            const float* in = x.data() + (c * H + t.first[r]) * W;
            float* o = y.data() + (c * oh + r) * W;
            for (int64_t i = 0; i < W; ++i) o[i] = in[i] * w[0];
            for (int64_t j = 1; j < t.count[r]; ++j)
                for (int64_t i = 0; i < W; ++i) o[i] += in[j * W + i] * w[j];
        }
    return y;
}

Tensor interpolate_bilinear_antialias(const Tensor& x, int64_t oh, int64_t ow) {
    if (x.ndim() != 3 || oh < 1 || ow < 1 || x.dim(1) < 1 || x.dim(2) < 1)
        throw std::invalid_argument("interpolate_bilinear_antialias: bad shape " +
                                    shape_str(x.shape()) + " -> " + std::to_string(oh) + "x" +
                                    std::to_string(ow));
    if (x.dim(2) == ow) return x.dim(1) == oh ? x : aa_pass_height(x, oh);
    Tensor y = aa_pass_width(x, ow);
    return x.dim(1) == oh ? y : aa_pass_height(y, oh);
}

// ---------------------------------------------------------------------------------------------

static void check_image(const Image& image) {
    if (image.width < 1 || image.height < 1 ||
        image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3)
        throw std::invalid_argument("preprocess: image is empty or its buffer does not hold " +
                                    std::to_string(image.width) + "x" +
                                    std::to_string(image.height) + " RGB pixels");
}

Preprocessed preprocess_sam(const Image& image, int input_size) {
    check_image(image);
    Preprocessed p;
    p.geom = make_geometry(image.width, image.height, ResizeMode::LongestSide, input_size);
    const ImageGeometry& g = p.geom;
    const Image resized = image.width == g.resized_w && image.height == g.resized_h
                              ? image
                              : resize_pil_bilinear(image, g.resized_w, g.resized_h);
    static constexpr float kMean[3] = {123.675f, 116.28f, 103.53f};
    static constexpr float kStd[3] = {58.395f, 57.12f, 57.375f};
    // Normalised first, then padded bottom/right with zeros (the padding is not normalised).
    p.input = Tensor::zeros({3, input_size, input_size});  // [3, S, S]
    const int64_t plane = int64_t{input_size} * input_size;
#pragma omp parallel for if (g.resized_h * g.resized_w > 65536)
    for (int y = 0; y < g.resized_h; ++y)
        for (int c = 0; c < 3; ++c) {
            const uint8_t* in = resized.rgb.data() + int64_t{y} * g.resized_w * 3 + c;
            float* o = p.input.data() + c * plane + int64_t{y} * input_size;
            for (int x = 0; x < g.resized_w; ++x)
                o[x] = (static_cast<float>(in[x * 3]) - kMean[c]) / kStd[c];
        }
    return p;
}

Preprocessed preprocess_sam2(const Image& image, int input_size) {
    check_image(image);
    Preprocessed p;
    p.geom = make_geometry(image.width, image.height, ResizeMode::Square, input_size);
    const int64_t H = image.height, W = image.width;
    Tensor unit({3, H, W});  // ToTensor: [3, H, W] in [0, 1]
#pragma omp parallel for if (H * W > 65536)
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
            for (int64_t c = 0; c < 3; ++c)
                unit[(c * H + y) * W + x] =
                    static_cast<float>(image.rgb[(y * W + x) * 3 + c]) / 255.0f;
    p.input = interpolate_bilinear_antialias(unit, input_size, input_size);  // [3, S, S]
    static constexpr float kMean[3] = {0.485f, 0.456f, 0.406f};
    static constexpr float kStd[3] = {0.229f, 0.224f, 0.225f};
    const int64_t plane = int64_t{input_size} * input_size;
    for (int64_t c = 0; c < 3; ++c) {
        float* d = p.input.data() + c * plane;
        for (int64_t i = 0; i < plane; ++i) d[i] = (d[i] - kMean[c]) / kStd[c];
    }
    return p;
}

std::array<float, 2> to_model_frame(const ImageGeometry& geom, float x, float y) {
    if (geom.mode == ResizeMode::LongestSide)
        return {static_cast<float>(x * (static_cast<double>(geom.resized_w) / geom.orig_w)),
                static_cast<float>(y * (static_cast<double>(geom.resized_h) / geom.orig_h))};
    const float size = static_cast<float>(geom.input_size);
    return {x / static_cast<float>(geom.orig_w) * size, y / static_cast<float>(geom.orig_h) * size};
}

static void check_low_res(const Tensor& low_res, const ImageGeometry& geom) {
    if (low_res.ndim() != 3)
        throw std::invalid_argument("upscale_logits expects [C, H, W] logits, got " +
                                    shape_str(low_res.shape()));
    if (geom.orig_w < 1 || geom.orig_h < 1)
        throw std::invalid_argument("upscale_logits: empty original size");
}

// The resize to the input frame, cropped to the resized image (the first of two steps).
static Tensor to_resized_frame(const Tensor& low_res, const ImageGeometry& geom) {
    return interpolate_bilinear(low_res, geom.input_size, geom.input_size, geom.resized_h,
                                geom.resized_w);
}

static bool resized_is_original(const ImageGeometry& geom) {
    return geom.resized_h == geom.orig_h && geom.resized_w == geom.orig_w;
}

Tensor upscale_logits(const Tensor& low_res, const ImageGeometry& geom) {
    check_low_res(low_res, geom);
    if (geom.mode == ResizeMode::Square)
        return interpolate_bilinear(low_res, geom.orig_h, geom.orig_w);
    Tensor kept = to_resized_frame(low_res, geom);
    if (resized_is_original(geom)) return kept;
    return interpolate_bilinear(kept, geom.orig_h, geom.orig_w);
}

std::vector<uint8_t> upscale_masks(const Tensor& low_res, const ImageGeometry& geom) {
    check_low_res(low_res, geom);
    if (geom.mode == ResizeMode::Square)
        return interpolate_bilinear_positive(low_res, geom.orig_h, geom.orig_w);
    if (resized_is_original(geom))  // the one resize (and crop) writes the masks
        return interpolate_bilinear_positive(low_res, geom.input_size, geom.input_size,
                                             geom.resized_h, geom.resized_w);
    return interpolate_bilinear_twice_positive(low_res, geom.input_size, geom.input_size,
                                               geom.resized_h, geom.resized_w, geom.orig_h,
                                               geom.orig_w);
}

std::vector<uint8_t> masks_from_logits(const Tensor& logits, float threshold, uint8_t on_value) {
    const int64_t n = logits.numel();
    std::vector<uint8_t> masks(static_cast<size_t>(n));
    const float* in = logits.data();
    uint8_t* out = masks.data();
#pragma omp parallel for if (n > 1 << 20)
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] > threshold ? on_value : 0;
    return masks;
}

}  // namespace splitseg
