// splitseg encode --store: one image or a folder of images into an embedding store, skipping
// every image whose bundle (key: image content hash + model hash) the store already holds.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/file_io.h"
#include "store/embedding_cache.h"
#include "store/store_spec.h"

namespace splitseg::cli {

namespace {

bool is_image_name(const std::filesystem::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

// The JPEG, PNG and WebP files directly in a folder, by name; or the one file given.
std::vector<std::string> images_at(const std::string& path) {
    namespace fs = std::filesystem;
    if (!fs::is_directory(path)) return {path};
    std::vector<std::string> out;
    for (const fs::directory_entry& e : fs::directory_iterator(path))
        if (e.is_regular_file() && is_image_name(e.path())) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    if (out.empty()) throw std::runtime_error("no JPEG, PNG or WebP images in " + path);
    return out;
}

// Progress on stderr: a bar redrawn in place on a terminal, one line per image otherwise (logs).
class Progress {
  public:
    explicit Progress(size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}

    void update(size_t done, const std::string& path, const std::string& what, double eta_s) {
        const std::string name = std::filesystem::path(path).filename().string();
        if (!tty_) {
            std::fprintf(stderr, "[%zu/%zu] %s: %s\n", done, total_, path.c_str(), what.c_str());
            return;
        }
        constexpr size_t kWidth = 30;
        const size_t filled = total_ ? done * kWidth / total_ : kWidth;
        std::string bar(filled, '#');
        bar.resize(kWidth, '.');
        std::string eta;
        if (eta_s > 0) eta = " ETA " + std::to_string(static_cast<long>(eta_s + 0.5)) + " s";
        std::fprintf(stderr, "\r\033[K[%s] %zu/%zu%s  %s: %s", bar.c_str(), done, total_,
                     eta.c_str(), name.c_str(), what.c_str());
        std::fflush(stderr);
        if (done == total_) std::fputc('\n', stderr);  // the summary follows on its own line
    }

  private:
    size_t total_;
    bool tty_;
};

}  // namespace

int encode_into_store(const Args& args, BundleDType dtype) {
    const std::vector<std::string> paths = images_at(args.require("image"));
    EmbeddingCache cache(open_store(args.require("store")), dtype);
    Stopwatch total_clock;
    auto model = load_model(args);
    const double load_ms = total_clock.ms();

    nlohmann::json images = nlohmann::json::array();
    size_t encoded = 0, skipped = 0, failed = 0;
    double encode_ms_sum = 0;
    Progress progress(paths.size());
    for (size_t i = 0; i < paths.size(); ++i) {
        nlohmann::json item = {{"path", paths[i]}};
        std::string what;
        try {
            const std::vector<uint8_t> bytes = read_file_bytes(paths[i]);
            const std::string image_hash = image_content_hash(bytes.data(), bytes.size());
            item["image_hash"] = image_hash;
            if (cache.contains(image_hash, model->model_hash())) {
                item["status"] = "skipped";
                what = "already in the store";
                ++skipped;
            } else {
                Stopwatch clock;
                Embedding e = model->encode(decode_image(bytes.data(), bytes.size()));
                e.image_hash = image_hash;
                item["key"] = cache.put(e);
                const double ms = clock.ms();
                item["status"] = "encoded";
                item["encode_ms"] = ms;
                what = "encoded in " + std::to_string(static_cast<long>(ms)) + " ms";
                encode_ms_sum += ms;
                ++encoded;
            }
        } catch (const std::exception& ex) {  // one bad image does not stop the batch
            item["status"] = "failed";
            item["error"] = ex.what();
            what = std::string("failed: ") + ex.what();
            ++failed;
        }
        images.push_back(std::move(item));
        const double eta_s = encoded ? encode_ms_sum / encoded * (paths.size() - i - 1) / 1000 : 0;
        progress.update(i + 1, paths[i], what, eta_s);
    }

    if (args.flag("json")) {
        const nlohmann::json j = {{"model", model->describe()},
                                  {"model_hash", model->model_hash()},
                                  {"store", cache.store().describe()},
                                  {"dtype", bundle_dtype_name(dtype)},
                                  {"load_ms", load_ms},
                                  {"total_ms", total_clock.ms()},
                                  {"encoded", encoded},
                                  {"skipped", skipped},
                                  {"failed", failed},
                                  {"images", images}};
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf("%zu encoded, %zu already in the store, %zu failed -> %s\n", encoded, skipped,
                    failed, cache.store().describe().c_str());
    }
    return failed ? 1 : 0;
}

}  // namespace splitseg::cli
