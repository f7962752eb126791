#include "cli/args.h"

#include <cmath>
#include <sstream>

namespace splitseg::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& flags) {
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a.rfind("--", 0) != 0) {
            positional_.push_back(a);
            continue;
        }
        const std::string name = a.substr(2);
        if (flags.count(name)) {
            flags_.insert(name);
        } else {
            if (i + 1 >= argv.size()) throw UsageError("option --" + name + " needs a value");
            values_.emplace(name, argv[++i]);
        }
        order_.push_back(name);
    }
}

std::optional<std::string> Args::get(const std::string& name) const {
    auto range = values_.equal_range(name);
    if (range.first == range.second) return std::nullopt;
    return std::prev(range.second)->second;
}

std::string Args::require(const std::string& name) const {
    auto v = get(name);
    if (!v) throw UsageError("missing required option --" + name);
    return *v;
}

std::vector<std::string> Args::all(const std::string& name) const {
    std::vector<std::string> out;
    auto range = values_.equal_range(name);
    for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
    return out;
}

int Args::get_int(const std::string& name, int fallback, int lo, int hi) const {
    auto v = get(name);
    if (!v) return fallback;
    size_t used = 0;
    int x = 0;
    try {
        x = std::stoi(*v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v->size() || x < lo || x > hi)
        throw UsageError("--" + name + " must be an integer in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "], got '" + *v + "'");
    return x;
}

void Args::allow_only(const std::set<std::string>& known) const {
    for (const std::string& n : order_)
        if (!known.count(n)) throw UsageError("unknown option --" + n);
    if (!positional_.empty()) throw UsageError("unexpected argument '" + positional_[0] + "'");
}

std::vector<float> parse_numbers(const std::string& text, size_t n, const std::string& what) {
    std::vector<float> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        size_t used = 0;
        float x = 0;
        try {
            x = std::stof(item, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != item.size() || !std::isfinite(x))
            throw UsageError(what + ": '" + item + "' is not a finite number");
        out.push_back(x);
    }
    if (out.size() != n)
        throw UsageError(what + " needs " + std::to_string(n) + " comma-separated numbers, got '" +
                         text + "'");
    return out;
}

}  // namespace splitseg::cli
