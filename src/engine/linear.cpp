#include "engine/linear.h"

#include "engine/onednn.h"
#include "engine/ops.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace splitseg {

namespace {

using onednn::dt;
using tag = dnnl::memory::format_tag;

// The row count the weights are packed for. oneDNN picks the blocked layout from the whole
// problem; every other row count reuses that layout.
constexpr int64_t kPackRows = 4096;

}  // namespace

const dnnl::engine& onednn::cpu() {
    static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    return eng;
}

const char* precision_name(Precision p) {
    return p == Precision::BF16 ? "bf16" : "f32";
}

bool precision_from_name(const std::string& name, Precision* out) {
    if (name == "f32")
        *out = Precision::F32;
    else if (name == "bf16")
        *out = Precision::BF16;
    else
        return false;
    return true;
}

bool precision_supported(Precision p) {
    static const bool bf16 = [] {
        try {  // a bf16 product oneDNN can describe is one it can run
            const dnnl::memory::desc a({4, 4}, dt::bf16, tag::ab), c({4, 4}, dt::f32, tag::ab);
            dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, a, c), onednn::cpu());
            return true;
        } catch (const dnnl::error&) {
            return false;
        }
    }();
    return p == Precision::F32 || bf16;
}

struct Linear::Impl {
    int64_t in = 0, out = 0;
    dt compute = dt::f32;
    dnnl::memory weights;  // packed [in, out]
    dnnl::memory bias;     // [out] f32, or empty

    struct Product {
        dnnl::matmul matmul;
        size_t scratch_bytes = 0;
    };
    mutable std::mutex mutex;  // guards products
    mutable std::map<std::pair<int64_t, Epilogue>, Product> products;

    dnnl::matmul::primitive_desc describe(int64_t M, Epilogue e,
                                          const dnnl::memory::desc& weights_md) const {
        dnnl::post_ops ops;
        if (e == Epilogue::Add) ops.append_sum(1.0f);
        if (e == Epilogue::Gelu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0, 0);
        dnnl::primitive_attr attr = onednn::own_scratchpad();
        attr.set_post_ops(ops);
        const dnnl::memory::desc src({M, in}, compute, tag::ab), dst({M, out}, dt::f32, tag::ab);
        const dnnl::memory::desc bias_md =
            bias ? dnnl::memory::desc({1, out}, dt::f32, tag::ab) : dnnl::memory::desc();
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights_md, bias_md, dst), attr,
                                            onednn::cpu());
    }

    const Product& product_for(int64_t M, Epilogue e) const {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = products.find({M, e});
        if (it == products.end()) {
            auto pd = describe(M, e, weights.get_desc());
            it = products
                     .emplace(std::make_pair(M, e),
                              Product{dnnl::matmul(pd), pd.scratchpad_desc().get_size()})
                     .first;
        }
        return it->second;
    }
};

Linear::Linear(const Tensor& weight, const Tensor& bias, Precision precision) {
    if (!precision_supported(precision))
        throw std::runtime_error(std::string("this CPU cannot compute in ") +
                                 precision_name(precision));
    if (weight.ndim() != 2)
        throw std::invalid_argument("Linear: weight is " + shape_str(weight.shape()));
    auto impl = std::make_shared<Impl>();
    impl->out = weight.dim(0);
    impl->in = weight.dim(1);
    impl->compute = precision == Precision::BF16 ? dt::bf16 : dt::f32;
    if (!bias.empty()) {
        if (bias.numel() != impl->out)
            throw std::invalid_argument("Linear: bias is " + shape_str(bias.shape()));
        impl->bias = dnnl::memory({{1, impl->out}, dt::f32, tag::ab}, onednn::cpu());
        std::memcpy(impl->bias.get_data_handle(), bias.data(), impl->out * sizeof(float));
    }

    // Let oneDNN choose the layout (format any), then reorder the [out, in] f32 weights into it,
    // converting to bf16 on the way where asked.
    const dnnl::memory::desc any({impl->in, impl->out}, impl->compute, tag::any);
    const auto pd = impl->describe(kPackRows, Epilogue::Store, any);
    impl->weights = dnnl::memory(pd.weights_desc(), onednn::cpu());
    dnnl::memory source({{impl->in, impl->out}, dt::f32, tag::ba}, onednn::cpu(),
                        const_cast<float*>(weight.data()));
    dnnl::stream stream(onednn::cpu());
    dnnl::reorder(source, impl->weights).execute(stream, source, impl->weights);
    stream.wait();
    impl_ = std::move(impl);
}

void Linear::run(const float* x, int64_t M, float* y, Epilogue epilogue) const {
    if (M == 0) return;
    const Impl& L = *impl_;
    // oneDNN 2.6's AMX kernel ran 3x slower on row counts that are not a multiple of 16 (204
    // rows of TinyViT's widest MLP: 51 ms against 16 ms for 192); the last few rows go alone.
    const int64_t whole = M / 16 * 16;
    if (L.compute == dt::bf16 && whole > 0 && whole < M) {
        run_rows(x, whole, y, epilogue);
        run_rows(x + whole * L.in, M - whole, y + whole * L.out, epilogue);
        return;
    }
    run_rows(x, M, y, epilogue);
}

void Linear::run_rows(const float* x, int64_t M, float* y, Epilogue epilogue) const {
    const Impl& L = *impl_;
    const Impl::Product& product = L.product_for(M, epilogue);
    dnnl::stream stream(onednn::cpu());
    dnnl::memory src({{M, L.in}, dt::f32, tag::ab}, onednn::cpu(), const_cast<float*>(x));
    if (L.compute == dt::bf16) {  // round the activations once; the product reads them twice
        dnnl::memory rounded({{M, L.in}, dt::bf16, tag::ab}, onednn::cpu());
        dnnl::reorder(src, rounded).execute(stream, src, rounded);
        src = rounded;
    }
    dnnl::memory dst({{M, L.out}, dt::f32, tag::ab}, onednn::cpu(), y);
    const onednn::Scratchpad scratch(product.scratch_bytes);  // per call: run() may run at once
    std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, src},
                                                  {DNNL_ARG_WEIGHTS, L.weights},
                                                  {DNNL_ARG_DST, dst},
                                                  {DNNL_ARG_SCRATCHPAD, scratch.memory()}};
    if (L.bias) args.emplace(DNNL_ARG_BIAS, L.bias);
    product.matmul.execute(stream, args);
    stream.wait();
}

Tensor Linear::operator()(const Tensor& x) const {
    if (x.dim(-1) != impl_->in)
        throw std::invalid_argument("Linear: input " + shape_str(x.shape()) + ", expected [..., " +
                                    std::to_string(impl_->in) + "]");
    Shape shape = x.shape();
    shape.back() = impl_->out;
    Tensor y(shape);
    run(x.data(), x.numel() / impl_->in, y.data());
    return y;
}

int64_t Linear::in_features() const {
    return impl_ ? impl_->in : 0;
}
int64_t Linear::out_features() const {
    return impl_ ? impl_->out : 0;
}

// Floats of hidden activations per chunk (1 MiB): what stays in L2 for the second product.
constexpr int64_t kMlpChunkFloats = int64_t{1} << 18;

void add_mlp(float* x, int64_t N, int64_t C, const Tensor& norm_w, const Tensor& norm_b, float eps,
             const Linear& fc1, const Linear& fc2) {
    const int64_t hidden = fc1.out_features();
    const int64_t rows = std::max<int64_t>(16, kMlpChunkFloats / hidden);
    const int64_t chunks = (N + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t r0 = chunk * rows, n = std::min(rows, N - r0);
        float* xc = x + r0 * C;
        Tensor normed({n, C}), h({n, hidden});
        layer_norm(xc, normed.data(), n, C, norm_w.data(), norm_b.data(), eps);
        fc1.run(normed.data(), n, h.data(), Epilogue::Gelu);
        fc2.run(h.data(), n, xc, Epilogue::Add);
    }
}

}  // namespace splitseg
