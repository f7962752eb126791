#include "service/log.h"

#include <chrono>
#include <ctime>

namespace splitseg {

std::string rfc3339_now() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char text[32];
    const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(text + n, sizeof text - n, ".%03dZ", static_cast<int>(ms.count()));
    return text;
}

void log_json(const nlohmann::json& fields, std::FILE* out) {
    // "ts" first, for people reading the log; the fields follow in their own (sorted) order.
    // (Appended piece by piece: GCC 12 warns falsely on `literal + std::string` at -O3.)
    std::string line = "{\"ts\":\"";
    line.append(rfc3339_now()).append("\"");
    // Request paths are client bytes: invalid UTF-8 is replaced, not thrown about.
    const std::string rest = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (rest.size() > 2) line.append(",").append(rest, 1, rest.size() - 2);
    line.append("}\n");
    std::fwrite(line.data(), 1, line.size(), out);
    std::fflush(out);
}

}  // namespace splitseg
