// Request metrics in Prometheus' text format: a counter per route, method and status, a latency
// histogram per route, and a histogram per stage of a click (where a click's time goes inside
// the server: waiting for the session, the decoder, upscaling, mask encoding, JSON).
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
    // `stage` is one of a fixed set of names chosen by the caller.
    void observe_stage(const std::string& stage, double ms);
    // splitseg_http_requests_total, splitseg_http_request_duration_seconds and
    // splitseg_click_stage_seconds.
    std::string render() const;

    static constexpr std::array<double, 12> kBucketsSeconds = {
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

  private:
    struct Histogram {
        std::array<uint64_t, kBucketsSeconds.size()> buckets{};  // cumulative at render time
        uint64_t count = 0;
        double sum = 0;
        void add(double seconds);
        void render(std::ostream& out, const std::string& name, const std::string& labels) const;
    };
    mutable std::mutex mutex_;
    std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
    std::map<std::string, Histogram> latency_;
    std::map<std::string, Histogram> stages_;
};

}  // namespace splitseg
