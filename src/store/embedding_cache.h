// EmbeddingCache: "encode once, never again". Embeddings by (image content hash, model hash),
// stored as bundles in a tiered store. Every read is verified by parse_bundle (format, bounds,
// checksum) and must name the image and model asked for; a bundle that fails is dropped from the
// tier that held it and the next tier is tried. A corrupt bundle is never served: the caller
// sees a miss and encodes again.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "runtime/bundle.h"
#include "store/tiered_store.h"

namespace splitseg {

class EmbeddingCache {
  public:
    explicit EmbeddingCache(std::shared_ptr<TieredStore> store,
                            BundleDType dtype = BundleDType::F16);

    // "<model_hash>-<image_hash>", so that one model's bundles list together. Throws
    // std::invalid_argument unless both hashes are 8-64 lowercase hex digits.
    static std::string key(const std::string& image_hash, const std::string& model_hash);
    // Whether `key` has the form key() gives (other entries may share a store).
    static bool is_bundle_key(const std::string& key);
    // Whether `blob` passes parse_bundle's checks and is the bundle of the image and model that
    // `key` names; fills *out with its embedding when given.
    static bool verify(const std::string& key, const Blob& blob, Embedding* out = nullptr);

    std::optional<Embedding> get(const std::string& image_hash, const std::string& model_hash);
    // The verified bundle's bytes, to serve as they are stored.
    std::optional<Blob> get_bundle(const std::string& image_hash, const std::string& model_hash);
    // Stores the embedding under its own image and model hashes (both required); returns the key.
    std::string put(const Embedding& embedding);
    // Whether any tier holds the entry (not verified: a corrupt entry shows as a miss on get).
    bool contains(const std::string& image_hash, const std::string& model_hash);

    TieredStore& store() { return *store_; }

  private:
    std::optional<Blob> fetch(const std::string& key, Embedding* out);

    std::shared_ptr<TieredStore> store_;
    BundleDType dtype_;
};

}  // namespace splitseg
