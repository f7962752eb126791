// What the C++ microbenchmarks here share: their options and a median of timed calls.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace bench {

struct Options {
    int threads, runs;
};

// [--threads N] [--runs N] over the given defaults.
inline Options parse_options(int argc, char** argv, Options o) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--threads"))
            o.threads = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--runs"))
            o.runs = std::max(1, std::atoi(argv[i + 1]));
    }
    return o;
}

// Median seconds of `runs` calls after one warm-up.
inline double median_seconds(int runs, const std::function<void()>& work) {
    work();
    std::vector<double> t;
    for (int i = 0; i < runs; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        work();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    return t[t.size() / 2];
}

}  // namespace bench
