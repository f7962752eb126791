#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "engine/ops.h"

namespace splitseg::cli {

void apply_threads(const Args& args) {
    set_num_threads(args.get_int("threads", 0, 0, 1024));
}

std::unique_ptr<Segmenter> load_model(const std::string& path, const Args& args) {
    const std::string name = args.get("precision").value_or("f32");
    Precision precision;
    if (!precision_from_name(name, &precision))
        throw UsageError("--precision must be f32 or bf16, not '" + name + "'");
    return Segmenter::load(path, precision);
}

std::unique_ptr<Segmenter> load_model(const Args& args) {
    return load_model(args.require("model"), args);
}

// A field of /proc/self/status in MiB ("VmHWM:" the peak resident set, "VmRSS:" the current one).
static double status_mib(const char* field) {
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    const size_t n = std::strlen(field);
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, field, n) == 0) kib = std::atof(line + n);
    std::fclose(f);
    return kib / 1024.0;
}

double peak_rss_mib() {
    return status_mib("VmHWM:");
}

double current_rss_mib() {
    return status_mib("VmRSS:");
}

}  // namespace splitseg::cli
