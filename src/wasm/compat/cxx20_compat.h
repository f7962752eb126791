// C++20 library pieces that Debian's emscripten 3.1.6 libc++ lacks; force-included (-include)
// into the WASM build only.
#pragma once

#include <bit>

#if !defined(__cpp_lib_bit_cast)
namespace std {
template <class To, class From>
constexpr To bit_cast(const From& from) noexcept {
    return __builtin_bit_cast(To, from);
}
}  // namespace std
#endif
