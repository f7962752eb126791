#include <gtest/gtest.h>

#include <fstream>

#include "store/disk_store.h"
#include "store/embedding_cache.h"
#include "store/memory_store.h"
#include "store/tiered_store.h"
#include "store_test_util.h"

namespace splitseg {
namespace {

using test::bytes;
using test::ScratchDir;
using test::text;

// Three tiers: memory, then two disk directories (standing in for local disk and object storage).
struct Tiers {
    ScratchDir dir;
    MemoryStore* mem;
    DiskStore* disk;
    DiskStore* far;
    std::shared_ptr<TieredStore> store;

    Tiers() {
        std::vector<std::unique_ptr<BlobStore>> t;
        t.push_back(std::make_unique<MemoryStore>(64 << 20));
        t.push_back(std::make_unique<DiskStore>(dir.path() + "/disk"));
        t.push_back(std::make_unique<DiskStore>(dir.path() + "/far"));
        mem = static_cast<MemoryStore*>(t[0].get());
        disk = static_cast<DiskStore*>(t[1].get());
        far = static_cast<DiskStore*>(t[2].get());
        store = std::make_shared<TieredStore>(std::move(t));
    }
};

TEST(TieredStore, MissFallsThroughAndFillsTheTiersAbove) {
    Tiers t;
    t.far->put("k", bytes("deep"));
    EXPECT_FALSE(t.mem->contains("k"));
    const std::optional<Blob> b = t.store->get("k");
    ASSERT_TRUE(b);
    EXPECT_EQ(text(*b), "deep");
    EXPECT_EQ(text(*t.mem->get("k")), "deep");
    EXPECT_EQ(text(*t.disk->get("k")), "deep");
    // The next lookup is a memory hit: the disk tiers see no more lookups.
    const uint64_t disk_lookups = t.disk->stats().hits + t.disk->stats().misses;
    ASSERT_TRUE(t.store->get("k"));
    EXPECT_EQ(t.disk->stats().hits + t.disk->stats().misses, disk_lookups);
    EXPECT_FALSE(t.store->get("absent"));
    const StoreStats s = t.store->stats();
    EXPECT_EQ(s.hits, 2u);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.entries, 1u);
    EXPECT_EQ(t.store->describe(),
              "memory,disk:" + t.dir.path() + "/disk,disk:" + t.dir.path() + "/far");
}

TEST(TieredStore, PutWritesThroughAndRemoveClearsEveryTier) {
    Tiers t;
    t.store->put("k", bytes("v"));
    EXPECT_TRUE(t.mem->contains("k"));
    EXPECT_TRUE(t.disk->contains("k"));
    EXPECT_TRUE(t.far->contains("k"));
    t.mem->remove("k");
    EXPECT_TRUE(t.store->contains("k"));
    t.store->remove("k");
    EXPECT_FALSE(t.store->contains("k"));
    EXPECT_FALSE(t.far->contains("k"));
    ASSERT_EQ(t.store->tier_stats().size(), 3u);
    EXPECT_EQ(t.store->tier_stats()[2].puts, 1u);
}

TEST(TieredStore, EntryFailingVerificationIsDroppedAndTheNextTierServes) {
    Tiers t;
    t.mem->put("k", bytes("bad"));
    t.disk->put("k", bytes("bad"));
    t.far->put("k", bytes("good"));
    const auto verify = [](const Blob& b) { return text(b) == "good"; };
    const std::optional<Blob> b = t.store->get("k", verify);
    ASSERT_TRUE(b);
    EXPECT_EQ(text(*b), "good");
    EXPECT_EQ(text(*t.mem->get("k")), "good");  // refilled with the good copy
    EXPECT_EQ(text(*t.disk->get("k")), "good");
    const auto stats = t.store->tier_stats();
    EXPECT_EQ(stats[0].corrupt, 1u);
    EXPECT_EQ(stats[1].corrupt, 1u);
    EXPECT_EQ(stats[2].corrupt, 0u);

    t.far->put("k", bytes("bad"));
    t.mem->remove("k");
    t.disk->remove("k");
    EXPECT_FALSE(t.store->get("k", verify));  // corrupt everywhere: a miss, and gone
    EXPECT_FALSE(t.store->contains("k"));
}

// A tier whose writes fail (a full disk): reads through it still succeed.
class FullStore : public MemoryStore {
  public:
    FullStore() : MemoryStore(1 << 20) {}
    void put(const std::string&, std::span<const uint8_t>) override {
        throw std::runtime_error("no space left");
    }
};

TEST(TieredStore, FailedFillIsCountedNotFatal) {
    std::vector<std::unique_ptr<BlobStore>> tiers;
    tiers.push_back(std::make_unique<FullStore>());
    tiers.push_back(std::make_unique<MemoryStore>(1 << 20));
    tiers[1]->put("k", bytes("v"));
    TieredStore store(std::move(tiers));
    ASSERT_TRUE(store.get("k"));
    EXPECT_EQ(store.tier_stats()[0].fill_errors, 1u);
    EXPECT_THROW(store.put("k2", bytes("v")), std::runtime_error);  // a put must reach every tier
    EXPECT_THROW(TieredStore({}), std::invalid_argument);
}

const std::string kImage = "00112233445566778899aabbccddeeff";
const std::string kModel = "0123456789abcdef";

// Flips one byte near the end of a file (inside the tensor data).
void corrupt_file(const std::string& path) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-100, std::ios::end);
    const char c = static_cast<char>(f.get() ^ 0x5a);
    f.seekp(-100, std::ios::end);
    f.put(c);
}

TEST(EmbeddingCache, RoundTripByImageAndModelHash) {
    Tiers t;
    EmbeddingCache cache(t.store);
    EXPECT_EQ(EmbeddingCache::key(kImage, kModel), kModel + "-" + kImage);
    EXPECT_THROW(EmbeddingCache::key("../etc", kModel), std::invalid_argument);
    EXPECT_THROW(EmbeddingCache::key(kImage, ""), std::invalid_argument);
    EXPECT_FALSE(cache.get(kImage, kModel));
    const Embedding e = test::test_embedding(kImage, kModel);
    EXPECT_EQ(cache.put(e), kModel + "-" + kImage);
    EXPECT_TRUE(cache.contains(kImage, kModel));
    std::optional<Embedding> got = cache.get(kImage, kModel);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->image_hash, kImage);
    EXPECT_EQ(got->geom.orig_w, 640);
    ASSERT_EQ(got->image_embed.shape(), e.image_embed.shape());
    for (int64_t i = 0; i < e.image_embed.numel(); i += 997)
        EXPECT_NEAR(got->image_embed[i], e.image_embed[i], 1e-3);  // stored as f16
    EXPECT_EQ(cache.get_bundle(kImage, kModel)->size(),
              t.far->get(EmbeddingCache::key(kImage, kModel))->size());
    EXPECT_FALSE(cache.get(kImage, "fedcba9876543210"));  // another model's embedding: a miss
    EXPECT_THROW(cache.put(test::test_embedding("", kModel)), std::invalid_argument);
}

TEST(EmbeddingCache, CorruptBundleOnDiskIsDroppedAndRefetchedFromTheNextTier) {
    Tiers t;
    EmbeddingCache cache(t.store);
    cache.put(test::test_embedding(kImage, kModel));
    const std::string key = EmbeddingCache::key(kImage, kModel);
    t.mem->remove(key);  // as after a restart
    corrupt_file(t.disk->dir() + "/" + key);

    std::optional<Embedding> got = cache.get(kImage, kModel);
    ASSERT_TRUE(got);
    EXPECT_EQ(t.store->tier_stats()[1].corrupt, 1u);
    // The disk tier was refilled from the far tier with a good copy.
    ASSERT_TRUE(t.disk->get(key));
    EXPECT_NO_THROW(parse_bundle(t.disk->get(key)->to_vector()));
    EXPECT_TRUE(t.mem->contains(key));
}

TEST(EmbeddingCache, CorruptEverywhereIsAMissNeverServed) {
    Tiers t;
    EmbeddingCache cache(t.store);
    cache.put(test::test_embedding(kImage, kModel));
    const std::string key = EmbeddingCache::key(kImage, kModel);
    t.mem->remove(key);
    corrupt_file(t.disk->dir() + "/" + key);
    std::filesystem::resize_file(t.far->dir() + "/" + key, 1000);  // truncated
    EXPECT_FALSE(cache.get(kImage, kModel));
    EXPECT_FALSE(t.store->contains(key));
    // The caller encodes again and the entry is whole once more.
    cache.put(test::test_embedding(kImage, kModel));
    EXPECT_TRUE(cache.get(kImage, kModel));
}

TEST(EmbeddingCache, BundleOfAnotherImageUnderTheKeyIsRejected) {
    Tiers t;
    EmbeddingCache cache(t.store);
    const std::string other = "ffeeddccbbaa99887766554433221100";
    const std::vector<uint8_t> wrong = serialize_bundle(test::test_embedding(other, kModel));
    t.far->put(EmbeddingCache::key(kImage, kModel), wrong);
    EXPECT_FALSE(cache.get(kImage, kModel));
    EXPECT_EQ(t.store->tier_stats()[2].corrupt, 1u);
}

}  // namespace
}  // namespace splitseg
