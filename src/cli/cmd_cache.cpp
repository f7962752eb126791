// splitseg cache stats|verify|evict: looks after an embedding store, tier by tier.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "store/embedding_cache.h"
#include "store/store_spec.h"

namespace splitseg::cli {

namespace {

std::string human_bytes(uint64_t n) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

nlohmann::json stats_json(const StoreStats& s) {
    return {
        {"tier", s.tier}, {"entries", s.entries}, {"bytes", s.bytes}, {"max_bytes", s.max_bytes}};
}

int stats(TieredStore& store, bool json) {
    const std::vector<StoreStats> tiers = store.tier_stats();
    if (json) {
        nlohmann::json j = nlohmann::json::array();
        for (const StoreStats& s : tiers) j.push_back(stats_json(s));
        std::printf("%s\n", nlohmann::json{{"tiers", j}}.dump().c_str());
        return 0;
    }
    std::printf("%-48s %9s %12s %12s\n", "tier", "entries", "bytes", "budget");
    for (const StoreStats& s : tiers)
        std::printf("%-48s %9llu %12s %12s\n", s.tier.c_str(),
                    static_cast<unsigned long long>(s.entries), human_bytes(s.bytes).c_str(),
                    s.max_bytes ? human_bytes(s.max_bytes).c_str() : "unbounded");
    return 0;
}

// Reads every bundle of every tier through parse_bundle's checks and drops those that fail.
int verify(TieredStore& store, bool json) {
    nlohmann::json report = nlohmann::json::array();
    uint64_t corrupt_total = 0;
    for (size_t i = 0; i < store.tier_count(); ++i) {
        BlobStore& tier = store.tier(i);
        uint64_t ok = 0, corrupt = 0, other = 0;
        for (const BlobInfo& e : tier.list()) {
            if (!EmbeddingCache::is_bundle_key(e.key)) {
                ++other;  // not ours to judge
                continue;
            }
            const std::optional<Blob> blob = tier.get(e.key);
            if (!blob) continue;  // removed meanwhile
            if (EmbeddingCache::verify(e.key, *blob)) {
                ++ok;
                continue;
            }
            tier.remove(e.key);
            ++corrupt;
            std::fprintf(stderr, "%s: %s is corrupt: dropped\n", tier.describe().c_str(),
                         e.key.c_str());
        }
        corrupt_total += corrupt;
        report.push_back({{"tier", tier.describe()},
                          {"ok", ok},
                          {"corrupt_dropped", corrupt},
                          {"other_entries", other}});
        if (!json)
            std::printf("%s: %llu bundles ok, %llu corrupt (dropped), %llu other entries\n",
                        tier.describe().c_str(), static_cast<unsigned long long>(ok),
                        static_cast<unsigned long long>(corrupt),
                        static_cast<unsigned long long>(other));
    }
    if (json) std::printf("%s\n", nlohmann::json{{"tiers", report}}.dump().c_str());
    return corrupt_total ? 1 : 0;
}

int evict(TieredStore& store, uint64_t max_bytes, bool json) {
    nlohmann::json report = nlohmann::json::array();
    for (size_t i = 0; i < store.tier_count(); ++i) {
        BlobStore& tier = store.tier(i);
        const std::optional<uint64_t> evicted = tier.evict_to(max_bytes);
        const StoreStats s = tier.stats();
        nlohmann::json item = stats_json(s);
        item["evicted"] = evicted ? nlohmann::json(*evicted) : nlohmann::json(nullptr);
        report.push_back(item);
        if (json) continue;
        if (evicted)
            std::printf("%s: evicted %llu, %llu entries (%s) remain\n", s.tier.c_str(),
                        static_cast<unsigned long long>(*evicted),
                        static_cast<unsigned long long>(s.entries), human_bytes(s.bytes).c_str());
        else
            std::printf("%s: not evicted (object storage keeps everything)\n", s.tier.c_str());
    }
    if (json) std::printf("%s\n", nlohmann::json{{"tiers", report}}.dump().c_str());
    return 0;
}

}  // namespace

int cmd_cache(const std::vector<std::string>& argv) {
    const std::string action = argv.empty() ? "" : argv[0];
    if (action != "stats" && action != "verify" && action != "evict")
        throw UsageError("cache needs one of stats, verify, evict");
    Args args(std::vector<std::string>(argv.begin() + 1, argv.end()), {"json"});
    args.allow_only({"store", "max-bytes", "json"});
    uint64_t max_bytes = 0;
    if (action == "evict") {
        try {
            max_bytes = parse_byte_size(args.require("max-bytes"));
        } catch (const std::invalid_argument& e) {
            throw UsageError(std::string("--max-bytes: ") + e.what());
        }
    } else if (args.get("max-bytes")) {
        throw UsageError("--max-bytes is for cache evict");
    }
    const std::unique_ptr<TieredStore> store = open_store(args.require("store"));
    const bool json = args.flag("json");
    if (action == "stats") return stats(*store, json);
    if (action == "verify") return verify(*store, json);
    return evict(*store, max_bytes, json);
}

}  // namespace splitseg::cli
