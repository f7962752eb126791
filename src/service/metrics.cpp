#include "service/metrics.h"

#include <sstream>

namespace splitseg {

void RequestMetrics::Histogram::add(double seconds) {
    for (size_t i = 0; i < kBucketsSeconds.size(); ++i)
        if (seconds <= kBucketsSeconds[i]) ++buckets[i];
    ++count;
    sum += seconds;
}

// `labels` is `key="value"`, without braces.
void RequestMetrics::Histogram::render(std::ostream& out, const std::string& name,
                                       const std::string& labels) const {
    for (size_t i = 0; i < kBucketsSeconds.size(); ++i) {
        out << name << "_bucket{" << labels << ",le=\"" << kBucketsSeconds[i] << "\"} "
            << buckets[i] << "\n";
    }
    out << name << "_bucket{" << labels << ",le=\"+Inf\"} " << count << "\n"
        << name << "_sum{" << labels << "} " << sum << "\n"
        << name << "_count{" << labels << "} " << count << "\n";
}

void RequestMetrics::observe(const std::string& method, const std::string& route, int status,
                             double ms) {
    std::lock_guard lock(mutex_);
    ++requests_[{method, route, status}];
    latency_[route].add(ms / 1000);
}

void RequestMetrics::observe_stage(const std::string& stage, double ms) {
    std::lock_guard lock(mutex_);
    stages_[stage].add(ms / 1000);
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
    for (const auto& [route, h] : latency_)
        h.render(out, "splitseg_http_request_duration_seconds", "route=\"" + route + "\"");
    out << "# HELP splitseg_click_stage_seconds Time per stage of a decode request (session "
           "prompts, WebSocket clicks and stateless infer).\n"
        << "# TYPE splitseg_click_stage_seconds histogram\n";
    for (const auto& [stage, h] : stages_)
        h.render(out, "splitseg_click_stage_seconds", "stage=\"" + stage + "\"");
    return out.str();
}

}  // namespace splitseg
