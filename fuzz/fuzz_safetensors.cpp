// libFuzzer target: the safetensors reader from memory. Whatever it accepts must survive a
// round trip through the writer unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/weights/safetensors.h"
#include "engine/weights/weight_file.h"

using splitseg::WeightFile;

namespace {

std::vector<splitseg::SafetensorsEntry> entries_of(const WeightFile& w) {
    std::vector<splitseg::SafetensorsEntry> entries;
    for (const std::string& name : w.names()) {
        const splitseg::TensorRef& r = w.ref(name);
        entries.push_back({name, r.dtype, r.shape, r.data, r.nbytes});
    }
    return entries;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const WeightFile w = WeightFile::from_bytes({data, data + size}, "fuzz");
        for (const std::string& name : w.names()) w.get(name);
        const WeightFile again = WeightFile::from_bytes(
            splitseg::serialize_safetensors(entries_of(w), w.metadata()), "fuzz-again");
        if (again.names() != w.names() || again.metadata() != w.metadata() ||
            again.content_hash() != w.content_hash())
            std::abort();
    } catch (const splitseg::FormatError&) {
    }
    return 0;
}
