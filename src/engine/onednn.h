// What the engine's oneDNN users share: the CPU engine and plain row-major descriptors.
#pragma once

#include <cstdint>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>

namespace splitseg::onednn {

using dt = dnnl::memory::data_type;
using desc = dnnl::memory::desc;

const dnnl::engine& cpu();

// A [rows, cols] row-major matrix whose rows are `ld` elements apart.
inline desc rows(int64_t rows, int64_t cols, int64_t ld, dt type = dt::f32) {
    return desc({rows, cols}, type, {ld, 1});
}

// The same matrix read transposed: [cols, rows] with rows `ld` apart becomes its columns.
inline desc transposed(int64_t rows, int64_t cols, int64_t ld, dt type = dt::f32) {
    return desc({cols, rows}, type, {1, ld});
}

// Attributes for a primitive that runs with a scratchpad its caller provides
// (DNNL_ARG_SCRATCHPAD): oneDNN's own is shared by every execution of the primitive, so two
// threads running it at once would overwrite each other's.
inline dnnl::primitive_attr own_scratchpad() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

// The scratchpad of one execution, left uninitialised: a zeroed buffer (std::vector) would cost a
// pass over up to megabytes per product.
class Scratchpad {
  public:
    explicit Scratchpad(size_t bytes)
        : bytes_(new char[bytes ? bytes : 1]),
          memory_(desc({static_cast<int64_t>(bytes)}, dt::u8, dnnl::memory::format_tag::a), cpu(),
                  bytes_.get()) {}
    const dnnl::memory& memory() const { return memory_; }

  private:
    std::unique_ptr<char[]> bytes_;
    dnnl::memory memory_;
};

}  // namespace splitseg::onednn
