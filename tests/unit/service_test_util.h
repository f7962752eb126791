// Helpers shared by the service tests: an Api over a scratch data directory, requests, a small
// test image and the golden sam-vit-tiny model (loaded once; tests that need it skip without it).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/image.h"
#include "service/api.h"
#include "store/sqlite_job_queue.h"
#include "store/store_spec.h"
#include "store_test_util.h"

namespace splitseg::test {

// The golden sam-vit-tiny checkpoint, or "" when the golden vectors are absent.
inline std::string tiny_model_path() {
    const char* env = std::getenv("SPLITSEG_GOLDEN_DIR");
    const std::string dir = env && *env ? env : SPLITSEG_DEFAULT_GOLDEN_DIR;
    const std::string path = dir + "/sam-vit-tiny/weights.pth";
    return std::filesystem::exists(path) ? path : "";
}

inline std::shared_ptr<const Segmenter> tiny_model() {
    static const std::shared_ptr<const Segmenter> model = [] {
        const std::string path = tiny_model_path();
        return path.empty() ? nullptr : std::shared_ptr<const Segmenter>(Segmenter::load(path));
    }();
    return model;
}

#define SPLITSEG_REQUIRE_TINY_MODEL()                                                      \
    if (!::splitseg::test::tiny_model()) {                                                 \
        GTEST_SKIP() << "golden sam-vit-tiny weights not found (set SPLITSEG_GOLDEN_DIR)"; \
    }

// A 64x48 PNG with a bright square on a dark background; `seed` changes its bytes.
inline std::string test_png(int seed = 0) {
    const int w = 64, h = 48;
    std::vector<uint8_t> rgba(static_cast<size_t>(w) * h * 4);
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const bool inside = x >= 20 && x < 44 && y >= 12 && y < 36;
            uint8_t* p = &rgba[(static_cast<size_t>(y) * w + x) * 4];
            p[0] = static_cast<uint8_t>(inside ? 230 : 20 + seed);
            p[1] = static_cast<uint8_t>(inside ? 200 : 30);
            p[2] = static_cast<uint8_t>(inside ? 40 : 60);
            p[3] = 255;
        }
    }
    const std::vector<uint8_t> png = encode_png_rgba(rgba.data(), w, h);
    return std::string(png.begin(), png.end());
}

inline Request make_request(const std::string& method, const std::string& target,
                            const std::string& body = "",
                            std::map<std::string, std::string> headers = {}) {
    return Request{method, target, std::move(headers), body};
}

inline nlohmann::json body_json(const Response& r) {
    return nlohmann::json::parse(r.body);
}
inline std::string error_code(const Response& r) {
    return body_json(r)["error"]["code"].get<std::string>();
}

// A row-major 0/1 mask from pycocotools' compressed RLE string (rleFrString, then the
// column-major runs).
inline std::vector<uint8_t> coco_rle_decode(const std::string& counts, int width, int height) {
    std::vector<int64_t> runs;
    for (size_t p = 0; p < counts.size();) {
        int64_t x = 0;
        int k = 0;
        bool more = true;
        while (more && p < counts.size()) {
            const int c = counts[p++] - 48;
            x |= int64_t(c & 0x1f) << (5 * k);
            more = c & 0x20;
            ++k;
            if (!more && (c & 0x10)) x |= -(int64_t(1) << (5 * k));
        }
        if (runs.size() > 2) x += runs[runs.size() - 2];
        runs.push_back(x);
    }
    std::vector<uint8_t> mask(static_cast<size_t>(width) * height, 0);
    int64_t at = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
        for (int64_t j = 0; j < runs[i]; ++j, ++at) {
            if (i % 2 == 1) mask[(at % height) * width + at / height] = 1;
        }
    }
    return mask;
}

// An Api over a scratch directory with a SQLite queue and an in-memory cache.
struct ApiFixture {
    explicit ApiFixture(std::shared_ptr<const Segmenter> model,
                        std::map<std::string, std::string> keys = {},
                        SessionStoreOptions sessions = {},
                        const std::function<void(ApiOptions&)>& configure = {}) {
        ApiOptions o;
        o.data_dir = dir.path();
        o.model = std::move(model);
        o.cache = cache;
        o.jobs = open_sqlite_job_queue(dir.file("jobs.db"));
        o.api_keys = std::move(keys);
        o.max_points = 4;
        o.sessions = std::move(sessions);
        if (configure) configure(o);
        jobs = o.jobs;
        api = std::make_unique<Api>(std::move(o));
    }
    // Runs every queued encode job on this thread.
    void encode_all() {
        EncodeWorker worker(*jobs, [this](JobLease& lease) { api->encode_job(lease); });
        while (worker.run_once()) {
        }
    }

    ScratchDir dir;
    std::shared_ptr<EmbeddingCache> cache =
        std::make_shared<EmbeddingCache>(open_store("mem:?max_bytes=64M"));
    std::shared_ptr<JobQueue> jobs;
    std::unique_ptr<Api> api;
};

}  // namespace splitseg::test
