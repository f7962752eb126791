// libFuzzer target: decode_image on arbitrary bytes must either return a consistent image or
// throw ImageError; never crash, leak or allocate beyond the pixel cap.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "runtime/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    constexpr size_t kMaxPixels = 4096 * 4096;
    try {
        const splitseg::Image im = splitseg::decode_image(data, size, kMaxPixels);
        const size_t expected = static_cast<size_t>(im.width) * im.height * 3;
        if (im.width < 1 || im.height < 1 || im.rgb.size() != expected ||
            static_cast<size_t>(im.width) * im.height > kMaxPixels)
            std::abort();
    } catch (const splitseg::ImageError&) {
    }
    return 0;
}
