#include "service/metrics.h"

#include <sstream>

namespace splitseg {

void RequestMetrics::observe(const std::string& method, const std::string& route, int status,
                             double ms) {
    const double seconds = ms / 1000;
    std::lock_guard lock(mutex_);
    ++requests_[{method, route, status}];
    Histogram& h = latency_[route];
    for (size_t i = 0; i < kBucketsSeconds.size(); ++i)
        if (seconds <= kBucketsSeconds[i]) ++h.buckets[i];
    ++h.count;
    h.sum += seconds;
}

std::string RequestMetrics::render() const {
    std::ostringstream out;
    std::lock_guard lock(mutex_);
    out << "# HELP splitseg_http_requests_total HTTP requests by route and status.\n"
        << "# TYPE splitseg_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
        const auto& [method, route, status] = key;
        out << "splitseg_http_requests_total{method=\"" << method << "\",route=\"" << route
            << "\",status=\"" << status << "\"} " << n << "\n";
    }
    out << "# HELP splitseg_http_request_duration_seconds Request latency by route.\n"
        << "# TYPE splitseg_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) {
        const std::string name = "splitseg_http_request_duration_seconds";
        for (size_t i = 0; i < kBucketsSeconds.size(); ++i) {
            out << name << "_bucket{route=\"" << route << "\",le=\"" << kBucketsSeconds[i] << "\"} "
                << h.buckets[i] << "\n";
        }
        out << name << "_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count << "\n"
            << name << "_sum{route=\"" << route << "\"} " << h.sum << "\n"
            << name << "_count{route=\"" << route << "\"} " << h.count << "\n";
    }
    return out.str();
}

}  // namespace splitseg
