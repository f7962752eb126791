// libFuzzer target: probe_image on arbitrary bytes must either report a format and a size within
// the limits or throw ImageError; never crash or read past the input. Whatever decode_image
// accepts, the probe must accept too, with the same format and sides (the service stores the
// probe's size and the encode worker decodes later).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "runtime/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    constexpr size_t kMaxPixels = 4096 * 4096;
    splitseg::ImageInfo info{};
    bool probed = false;
    try {
        info = splitseg::probe_image(data, size, kMaxPixels);
        probed = true;
        if (info.width < 1 || info.height < 1 || info.width > splitseg::kMaxImageSide ||
            info.height > splitseg::kMaxImageSide ||
            static_cast<size_t>(info.width) * info.height > kMaxPixels)
            std::abort();
    } catch (const splitseg::ImageError&) {
    }
    try {
        const splitseg::Image im = splitseg::decode_image(data, size, kMaxPixels);
        // The sides, not their order: an EXIF block libpng drops as damaged may still be read
        // by the probe's chunk walk, and that only turns the image.
        if (!probed || std::min(info.width, info.height) != std::min(im.width, im.height) ||
            std::max(info.width, info.height) != std::max(im.width, im.height))
            std::abort();
    } catch (const splitseg::ImageError&) {
    }
    return 0;
}
