#include "store/tiered_store.h"

#include <algorithm>
#include <map>
#include <stdexcept>

namespace splitseg {

TieredStore::TieredStore(std::vector<std::unique_ptr<BlobStore>> tiers)
    : tiers_(std::move(tiers)), tier_counters_(tiers_.size()) {
    if (tiers_.empty()) throw std::invalid_argument("a tiered store needs at least one tier");
    for (const auto& t : tiers_)
        if (!t) throw std::invalid_argument("a tiered store's tier is null");
}

std::optional<Blob> TieredStore::get(const std::string& key, const Verifier& verify) {
    check_key(key);
    for (size_t i = 0; i < tiers_.size(); ++i) {
        std::optional<Blob> blob = tiers_[i]->get(key);
        if (!blob) continue;
        if (verify && !verify(*blob)) {
            tier_counters_[i].corrupt.fetch_add(1, std::memory_order_relaxed);
            tiers_[i]->remove(key);
            continue;
        }
        fill_above(i, key, *blob);
        counters_.count_lookup(true);
        return blob;
    }
    counters_.count_lookup(false);
    return std::nullopt;
}

void TieredStore::fill_above(size_t tier, const std::string& key, const Blob& blob) {
    for (size_t i = tier; i-- > 0;) {
        try {
            tiers_[i]->put(key, blob.bytes());
        } catch (const std::exception&) {
            // The read succeeded; a full disk or a flaky upper tier only costs speed later.
            tier_counters_[i].fill_errors.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

void TieredStore::put(const std::string& key, std::span<const uint8_t> bytes) {
    check_key(key);
    for (size_t i = tiers_.size(); i-- > 0;) tiers_[i]->put(key, bytes);
    counters_.puts.fetch_add(1, std::memory_order_relaxed);
}

void TieredStore::remove(const std::string& key) {
    for (auto& t : tiers_) t->remove(key);
}

bool TieredStore::contains(const std::string& key) {
    return std::any_of(tiers_.begin(), tiers_.end(), [&](auto& t) { return t->contains(key); });
}

std::vector<BlobInfo> TieredStore::list() {
    std::map<std::string, uint64_t> all;
    for (auto& t : tiers_)
        for (BlobInfo& e : t->list()) all.emplace(std::move(e.key), e.size);
    std::vector<BlobInfo> out;
    out.reserve(all.size());
    for (auto& [key, size] : all) out.push_back({key, size});
    return out;
}

StoreStats TieredStore::stats() {
    StoreStats s = listed_stats(describe(), list(), counters_);
    for (const TierCounters& c : tier_counters_) {
        s.corrupt += c.corrupt.load(std::memory_order_relaxed);
        s.fill_errors += c.fill_errors.load(std::memory_order_relaxed);
    }
    return s;
}

std::vector<StoreStats> TieredStore::tier_stats() {
    std::vector<StoreStats> out;
    for (size_t i = 0; i < tiers_.size(); ++i) {
        StoreStats s = tiers_[i]->stats();
        s.corrupt = tier_counters_[i].corrupt.load(std::memory_order_relaxed);
        s.fill_errors = tier_counters_[i].fill_errors.load(std::memory_order_relaxed);
        out.push_back(std::move(s));
    }
    return out;
}

std::optional<uint64_t> TieredStore::evict_to(uint64_t max_bytes) {
    std::optional<uint64_t> total;
    for (auto& t : tiers_)
        if (std::optional<uint64_t> n = t->evict_to(max_bytes)) total = total.value_or(0) + *n;
    return total;
}

std::string TieredStore::describe() const {
    std::string out;
    for (const auto& t : tiers_) {
        if (!out.empty()) out += ',';
        out += t->describe();
    }
    return out;
}

}  // namespace splitseg
