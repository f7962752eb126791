#include "service/rate_limiter.h"

#include <algorithm>
#include <stdexcept>

namespace splitseg {

RateLimiter::RateLimiter(RateLimitOptions options) : options_(std::move(options)) {
    if (!options_.clock) throw std::invalid_argument("rate limiter clock is empty");
    if (options_.per_second < 0 || options_.burst < 0)
        throw std::invalid_argument("rate limits cannot be negative");
    if (options_.burst == 0) options_.burst = std::max(1.0, options_.per_second);
}

bool RateLimiter::allow(const std::string& key, double* retry_after_s) {
    if (options_.per_second == 0) return true;
    const Millis now = options_.clock();
    const Millis full_after = static_cast<Millis>(options_.burst / options_.per_second * 1000) + 1;
    std::lock_guard lock(mutex_);
    if (now - last_sweep_ > full_after) {  // forget buckets that have refilled
        std::erase_if(buckets_, [&](const auto& kv) { return now - kv.second.at > full_after; });
        last_sweep_ = now;
    }
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{options_.burst, now});
    Bucket& b = it->second;
    if (!fresh) {
        b.tokens = std::min(options_.burst, b.tokens + (now - b.at) / 1000.0 * options_.per_second);
        b.at = now;
    }
    if (b.tokens >= 1) {
        b.tokens -= 1;
        return true;
    }
    if (retry_after_s) *retry_after_s = (1 - b.tokens) / options_.per_second;
    return false;
}

}  // namespace splitseg
