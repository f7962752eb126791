// The splitseg subcommands. Each takes the words after its name and returns the exit code.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "cli/args.h"
#include "runtime/bundle.h"
#include "runtime/segmenter.h"

#include <nlohmann/json_fwd.hpp>

namespace splitseg::cli {

int cmd_encode(const std::vector<std::string>& argv);
int cmd_segment(const std::vector<std::string>& argv);
int cmd_bench(const std::vector<std::string>& argv);
int cmd_models(const std::vector<std::string>& argv);
int cmd_cache(const std::vector<std::string>& argv);
int cmd_serve(const std::vector<std::string>& argv);

// encode --store: --image (a file or a folder) into the store --store names (cmd_encode_store.cpp).
int encode_into_store(const Args& args, BundleDType dtype);

// --threads N (default: all cores), shared by every command.
void apply_threads(const Args& args);

// Loads --model (or path) with the encoder's --precision f32|bf16 (default f32).
std::unique_ptr<Segmenter> load_model(const Args& args);
std::unique_ptr<Segmenter> load_model(const std::string& path, const Args& args);

// Decodes and encodes an image file; records image_decode_ms and encode_ms in timings and sets
// the embedding's image hash.
Embedding encode_image_file(const Segmenter& model, const std::string& path,
                            nlohmann::json* timings);

// Peak resident set size of this process so far, in MiB (VmHWM).
double peak_rss_mib();
double current_rss_mib();

class Stopwatch {
  public:
    Stopwatch() : start_(std::chrono::steady_clock::now()) {}
    double ms() const {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
            .count();
    }

  private:
    std::chrono::steady_clock::time_point start_;
};

}  // namespace splitseg::cli
