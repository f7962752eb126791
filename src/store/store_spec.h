// Store specs: how the command line and the server name their cache tiers.
//   mem:?max_bytes=256M                        in-process LRU (the default budget is 256M)
//   disk:/var/cache/splitseg?max_bytes=10G     directory, LRU by bytes (unbounded by default)
//   azure://127.0.0.1:10000/devstoreaccount1/bundles?key=BASE64
//                                              Azure Blob, path style (emulators); or
//   azure://ACCOUNT.blob.core.windows.net/bundles?key=BASE64
//   s3://127.0.0.1:4568/bundles?region=us-east-1&access=ID&secret=SECRET
// Comma-separated specs are tiers in lookup order. Object stores use http on loopback and https
// elsewhere unless `scheme=http|https` says otherwise. Credentials may instead come from the
// environment (AZURE_STORAGE_KEY; AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which keeps them
// out of process listings. Sizes take K, M, G or T suffixes (powers of 1024).
#pragma once

#include <memory>
#include <string>

#include "store/tiered_store.h"

namespace splitseg {

// Throws std::invalid_argument naming the problem (never echoing credentials).
std::unique_ptr<TieredStore> open_store(const std::string& spec);
std::unique_ptr<BlobStore> open_tier(const std::string& spec);

// "256M" -> 268435456; throws std::invalid_argument.
uint64_t parse_byte_size(const std::string& text);

}  // namespace splitseg
