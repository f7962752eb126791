// bench_store: how long loading one SAM embedding bundle (f16, 256x64x64, ~2 MB) takes from each
// cache tier: memory, local disk (mmap; page cache warm, and cold through posix_fadvise), and
// the object-storage emulators Azurite and s3rver on loopback (from the repository's
// node_modules; skipped when absent). Each figure is the median (and p90) of --runs loads:
//   get          the tier's get(): bytes in hand (for disk, a mapping not yet read)
//   get+read     plus reading every byte once (xxh64): what any use of the bytes pays
//   get+parse    plus parse_bundle (checksum, bounds, f16 -> f32): a verified Embedding
// usage: bench_store [--runs N] [--json]
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../tests/store/emulators.h"
#include "store/disk_store.h"
#include "store/embedding_cache.h"
#include "store/memory_store.h"
#include "store/store_spec.h"

using namespace splitseg;

namespace {

const std::string kImage = "00112233445566778899aabbccddeeff";
const std::string kModel = "0123456789abcdef";

std::vector<uint8_t> sam_bundle() {
    Embedding e;
    e.family = ModelFamily::Sam;
    e.image_hash = kImage;
    e.model_hash = kModel;
    e.geom = {1024, 768, 1024, 768, 1024, ResizeMode::LongestSide};
    e.image_embed = Tensor({256, 64, 64});
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.5f);
    for (int64_t i = 0; i < e.image_embed.numel(); ++i) e.image_embed[i] = dist(rng);
    return serialize_bundle(e, BundleDType::F16);
}

struct Summary {
    double median_ms, p90_ms;
};

Summary time_runs(int runs, const std::function<void()>& before,
                  const std::function<void()>& load) {
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
        before();
        const auto t0 = std::chrono::steady_clock::now();
        load();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::sort(ms.begin(), ms.end());
    return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 9 / 10)]};
}

volatile uint64_t g_sink;  // keeps the reads from being optimised away

struct Row {
    std::string tier;
    Summary get, read, parse;
};

Row measure(
    const std::string& name, BlobStore& store, int runs, const std::string& key,
    const std::function<void()>& before = [] {}) {
    const auto get = [&] {
        if (!store.get(key)) throw std::runtime_error(name + ": the bundle is missing");
    };
    const auto read = [&] {
        const Blob b = *store.get(key);
        g_sink = XXH64(b.data(), b.size(), 0);
    };
    const auto parse = [&] {
        if (!EmbeddingCache::verify(key, *store.get(key)))
            throw std::runtime_error(name + ": the bundle does not verify");
    };
    parse();  // warm-up: connections open, code paged in
    return {name, time_runs(runs, before, get), time_runs(runs, before, read),
            time_runs(runs, before, parse)};
}

}  // namespace

int main(int argc, char** argv) {
    int runs = 50;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = std::max(1, std::atoi(argv[++i]));
        } else if (std::strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            std::fprintf(stderr, "usage: bench_store [--runs N] [--json]\n");
            return 2;
        }
    }
    const std::vector<uint8_t> bundle = sam_bundle();
    const std::string key = EmbeddingCache::key(kImage, kModel);
    std::vector<Row> rows;
    std::vector<std::string> skipped;

    MemoryStore memory(64 << 20);
    memory.put(key, bundle);
    rows.push_back(measure("memory", memory, runs, key));

    char dir_template[] = "/tmp/bench-store-XXXXXX";
    if (!::mkdtemp(dir_template)) throw std::runtime_error("mkdtemp failed");
    const std::string dir = dir_template;
    {
        DiskStore disk(dir);
        disk.put(key, bundle);
        rows.push_back(measure("disk (mmap, page cache warm)", disk, runs, key));
        const std::string path = dir + "/" + key;
        const auto drop_page_cache = [&] {
            const int fd = ::open(path.c_str(), O_RDONLY);
            ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            ::close(fd);
        };
        rows.push_back(measure("disk (mmap, page cache cold)", disk, runs, key, drop_page_cache));
    }
    std::filesystem::remove_all(dir);

    for (auto kind : {test::Emulator::Kind::Azurite, test::Emulator::Kind::S3rver}) {
        const std::string name =
            kind == test::Emulator::Kind::Azurite ? "Azurite (loopback)" : "s3rver (loopback)";
        if (test::find_node_bin(test::Emulator::binary(kind)).empty()) {
            skipped.push_back(name + ": not installed (npm ci --ignore-scripts)");
            continue;
        }
        test::Emulator emulator(kind);
        std::unique_ptr<BlobStore> store = open_tier(emulator.spec());
        store->put(key, bundle);
        rows.push_back(measure(name, *store, runs, key));
    }

    if (json) {
        nlohmann::json j = {{"bundle_bytes", bundle.size()}, {"runs", runs}};
        for (const Row& r : rows)
            j["tiers"].push_back({{"tier", r.tier},
                                  {"get_median_ms", r.get.median_ms},
                                  {"get_read_median_ms", r.read.median_ms},
                                  {"get_parse_median_ms", r.parse.median_ms},
                                  {"get_parse_p90_ms", r.parse.p90_ms}});
        j["skipped"] = skipped;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("bundle: SAM f16 256x64x64, %zu bytes; median (p90) of %d loads, ms\n",
                bundle.size(), runs);
    std::printf("%-30s %18s %18s %18s\n", "tier", "get", "get+read", "get+parse");
    for (const Row& r : rows) {
        char cells[3][40];
        const Summary* s[] = {&r.get, &r.read, &r.parse};
        for (int i = 0; i < 3; ++i)
            std::snprintf(cells[i], sizeof cells[i], "%.3f (%.3f)", s[i]->median_ms, s[i]->p90_ms);
        std::printf("%-30s %18s %18s %18s\n", r.tier.c_str(), cells[0], cells[1], cells[2]);
    }
    for (const std::string& s : skipped) std::printf("skipped %s\n", s.c_str());
    return 0;
}
