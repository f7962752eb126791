// Requests per API key: a token bucket per key, refilled at `per_second` up to `burst`. Buckets
// idle long enough to be full are dropped, so the table stays as small as the active keys.
// Thread-safe.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "store/job_queue.h"

namespace splitseg {

struct RateLimitOptions {
    double per_second = 0;  // 0: no limit
    double burst = 0;       // bucket size; 0: one second's worth (at least 1)
    Clock clock = system_clock_millis;
};

class RateLimiter {
  public:
    explicit RateLimiter(RateLimitOptions options = {});
    // Takes a token from `key`'s bucket. False when it is empty; then *retry_after_s says when
    // the next one comes.
    bool allow(const std::string& key, double* retry_after_s);

  private:
    struct Bucket {
        double tokens = 0;
        Millis at = 0;
    };
    RateLimitOptions options_;
    std::mutex mutex_;
    std::unordered_map<std::string, Bucket> buckets_;
    Millis last_sweep_ = 0;
};

}  // namespace splitseg
