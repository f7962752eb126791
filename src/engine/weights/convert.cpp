#include "engine/weights/convert.h"

#include <filesystem>

#include "engine/weights/safetensors.h"

namespace splitseg {

void convert_to_safetensors(const WeightFile& w, const std::string& out) {
    std::vector<SafetensorsEntry> entries;
    for (const std::string& n : w.names()) {
        const TensorRef& r = w.ref(n);
        entries.push_back({n, r.dtype, r.shape, r.data, r.nbytes});
    }
    std::map<std::string, std::string> meta = w.metadata();
    meta["converted_from"] = std::filesystem::path(w.path()).filename().string();
    write_safetensors(out, entries, meta);
}

}  // namespace splitseg
