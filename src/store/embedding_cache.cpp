#include "store/embedding_cache.h"

#include <stdexcept>

#include "engine/weights/format_error.h"

namespace splitseg {

namespace {

bool is_hash(const std::string& s) {
    if (s.size() < 8 || s.size() > 64) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

void check_hash(const std::string& hash, const char* what) {
    if (!is_hash(hash))
        throw std::invalid_argument(std::string(what) + " '" + hash.substr(0, 80) +
                                    "' is not 8-64 lowercase hex digits");
}

}  // namespace

EmbeddingCache::EmbeddingCache(std::shared_ptr<TieredStore> store, BundleDType dtype)
    : store_(std::move(store)), dtype_(dtype) {
    if (!store_) throw std::invalid_argument("embedding cache without a store");
}

std::string EmbeddingCache::key(const std::string& image_hash, const std::string& model_hash) {
    check_hash(image_hash, "image hash");
    check_hash(model_hash, "model hash");
    return model_hash + "-" + image_hash;
}

bool EmbeddingCache::is_bundle_key(const std::string& key) {
    const size_t dash = key.find('-');
    return dash != std::string::npos && is_hash(key.substr(0, dash)) &&
           is_hash(key.substr(dash + 1));
}

bool EmbeddingCache::verify(const std::string& key, const Blob& blob, Embedding* out) {
    try {
        Embedding e = parse_bundle(blob.to_vector(), key);
        if (!is_hash(e.image_hash) || !is_hash(e.model_hash) ||
            EmbeddingCache::key(e.image_hash, e.model_hash) != key)
            return false;
        if (out) *out = std::move(e);
        return true;
    } catch (const FormatError&) {
        return false;
    }
}

std::optional<Blob> EmbeddingCache::fetch(const std::string& key, Embedding* out) {
    return store_->get(key, [&](const Blob& blob) { return verify(key, blob, out); });
}

std::optional<Embedding> EmbeddingCache::get(const std::string& image_hash,
                                             const std::string& model_hash) {
    Embedding e;
    if (!fetch(key(image_hash, model_hash), &e)) return std::nullopt;
    return e;
}

std::optional<Blob> EmbeddingCache::get_bundle(const std::string& image_hash,
                                               const std::string& model_hash) {
    return fetch(key(image_hash, model_hash), nullptr);
}

std::string EmbeddingCache::put(const Embedding& e) {
    const std::string k = key(e.image_hash, e.model_hash);
    store_->put(k, serialize_bundle(e, dtype_));
    return k;
}

bool EmbeddingCache::contains(const std::string& image_hash, const std::string& model_hash) {
    return store_->contains(key(image_hash, model_hash));
}

}  // namespace splitseg
