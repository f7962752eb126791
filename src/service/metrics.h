// Request metrics in Prometheus' text format: a counter per route, method and status, and a
// latency histogram per route.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace splitseg {

class RequestMetrics {
  public:
    // `route` is the route's template ("/api/v1/images/{id}"), never the raw path, so that the
    // number of series stays bounded.
    void observe(const std::string& method, const std::string& route, int status, double ms);
    // splitseg_http_requests_total and splitseg_http_request_duration_seconds.
    std::string render() const;

    static constexpr std::array<double, 10> kBucketsSeconds = {0.005, 0.01, 0.025, 0.05, 0.1,
                                                               0.25,  0.5,  1,     2.5,  10};

  private:
    struct Histogram {
        std::array<uint64_t, kBucketsSeconds.size()> buckets{};  // cumulative at render time
        uint64_t count = 0;
        double sum = 0;
    };
    mutable std::mutex mutex_;
    std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
    std::map<std::string, Histogram> latency_;
};

}  // namespace splitseg
