// The object-storage tiers against real protocol implementations: Azurite (Azure Blob, Shared
// Key) and s3rver (S3, Signature V4), started by the tests on loopback. Skips, saying why, when
// the emulators are not installed (`npm ci --ignore-scripts` in the repository root).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "../unit/store_test_util.h"
#include "emulators.h"
#include "store/disk_store.h"
#include "store/embedding_cache.h"
#include "store/memory_store.h"
#include "store/store_spec.h"

namespace splitseg {
namespace {

using test::Emulator;

// One emulator of each kind for the whole run, started on first use.
Emulator* emulator(Emulator::Kind kind, std::string* why_not) {
    static std::map<Emulator::Kind, std::unique_ptr<Emulator>> running;
    static std::map<Emulator::Kind, std::string> failed;
    if (auto it = running.find(kind); it != running.end()) return it->second.get();
    if (failed.count(kind)) {
        *why_not = failed[kind];
        return nullptr;
    }
    if (test::find_node_bin(Emulator::binary(kind)).empty()) {
        failed[kind] = std::string(Emulator::binary(kind)) +
                       " is not installed (run `npm ci --ignore-scripts` in the repository root)";
    } else {
        try {
            return (running[kind] = std::make_unique<Emulator>(kind)).get();
        } catch (const std::exception& e) {
            running.erase(kind);
            failed[kind] = e.what();
            ADD_FAILURE() << "installed but failed to start: " << e.what();
        }
    }
    *why_not = failed[kind];
    return nullptr;
}

class ObjectStoreTest : public ::testing::TestWithParam<Emulator::Kind> {
  protected:
    void SetUp() override {
        std::string why_not;
        emu_ = emulator(GetParam(), &why_not);
        if (!emu_) GTEST_SKIP() << why_not;
    }
    std::unique_ptr<BlobStore> open(const std::string& container = Emulator::kBucket) {
        return open_tier(emu_->spec(container));
    }
    // A container name no other test uses.
    static std::string fresh_container() {
        static int n = 0;
        return test::numbered("fresh-" + std::to_string(::getpid()), {++n});
    }

    Emulator* emu_ = nullptr;
};

TEST_P(ObjectStoreTest, PutGetContainsListRemove) {
    auto s = open(fresh_container());
    EXPECT_FALSE(s->get("absent"));
    EXPECT_FALSE(s->contains("absent"));
    EXPECT_TRUE(s->list().empty());  // the container does not even exist yet
    const std::vector<uint8_t> big = test::checked_blob(2 << 20, 7);
    s->put("big.bundle", big);  // creates the container
    s->put("small", test::bytes("hello"));
    s->put("empty", {});
    const std::optional<Blob> got = s->get("big.bundle");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->to_vector(), big);
    EXPECT_EQ(test::text(*s->get("small")), "hello");
    EXPECT_EQ(s->get("empty")->size(), 0u);
    EXPECT_TRUE(s->contains("small"));
    s->put("small", test::bytes("replaced"));
    EXPECT_EQ(test::text(*s->get("small")), "replaced");

    const std::vector<BlobInfo> all = s->list();
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].key, "big.bundle");
    EXPECT_EQ(all[0].size, big.size());
    EXPECT_EQ(all[1].key, "empty");
    EXPECT_EQ(all[2].key, "small");
    EXPECT_EQ(all[2].size, 8u);

    s->remove("small");
    s->remove("small");  // absent: no error
    EXPECT_FALSE(s->contains("small"));
    EXPECT_FALSE(s->get("small"));
    const StoreStats st = s->stats();
    EXPECT_EQ(st.entries, 2u);
    EXPECT_EQ(st.bytes, big.size());
    EXPECT_EQ(st.puts, 4u);
    EXPECT_GE(st.hits, 4u);
    EXPECT_GE(st.misses, 2u);
}

// Azurite checks the Shared Key signature. s3rver checks only the access key id (it leaves
// Signature V4 unverified), so SigV4 itself is proven by known answers in the unit tests.
TEST_P(ObjectStoreTest, WrongCredentialsAreRefused) {
    std::string spec = emu_->spec();
    if (GetParam() == Emulator::Kind::Azurite)
        spec = spec.substr(0, spec.find("?key=")) + "?key=" + std::string(86, 'A') + "==";
    else
        spec = spec.substr(0, spec.find("?access=")) + "?access=NOBODY&secret=S3RVER";
    auto s = open_tier(spec);
    try {
        s->put("k", test::bytes("v"));
        FAIL() << "a put with a wrong key succeeded";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("HTTP 403"), std::string::npos) << e.what();
    }
    EXPECT_THROW(s->get("k"), std::runtime_error);
}

TEST_P(ObjectStoreTest, ConcurrentClientsShareConnections) {
    auto s = open(fresh_container());
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            try {
                for (int i = 0; i < 10; ++i) {
                    const std::string key = test::numbered("t", {t, i});
                    const std::vector<uint8_t> blob =
                        test::checked_blob(1000 + 100 * i, t * 100 + i);
                    s->put(key, blob);
                    const std::optional<Blob> got = s->get(key);
                    if (!got || got->to_vector() != blob) ++bad;
                }
            } catch (const std::exception& e) {
                ADD_FAILURE() << e.what();
                ++bad;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(s->list().size(), 40u);
}

// The full stack of the design: memory, disk, then the object store shared by every server.
// A fresh server (new memory and disk tiers) finds the bundle in the object store, fills its
// disk, and a corrupt disk copy is refetched from the object store.
TEST_P(ObjectStoreTest, EmbeddingCacheOverAllTiers) {
    test::ScratchDir dir;
    const std::string container = fresh_container();
    const std::string image = "00112233445566778899aabbccddeeff", model = "0123456789abcdef";
    const std::string key = EmbeddingCache::key(image, model);
    {
        EmbeddingCache cache(open_store("mem:,disk:" + dir.path() + "/a," + emu_->spec(container)));
        cache.put(test::test_embedding(image, model));
    }
    auto store = std::shared_ptr<TieredStore>(
        open_store("mem:,disk:" + dir.path() + "/b," + emu_->spec(container)));
    EmbeddingCache cache(store);
    ASSERT_TRUE(cache.get(image, model));
    EXPECT_TRUE(store->tier(1).contains(key));  // filled from the object store

    store->tier(0).remove(key);
    std::fstream f(dir.path() + "/b/" + key, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-10, std::ios::end);
    f.put('\x7f');
    f.close();
    ASSERT_TRUE(cache.get(image, model));
    EXPECT_EQ(store->tier_stats()[1].corrupt, 1u);
    EXPECT_NO_THROW(parse_bundle(store->tier(1).get(key)->to_vector()));
}

TEST(ObjectStoreUnreachable, FailsWithTheUrlAfterRetries) {
    const int port = test::free_loopback_port();  // nobody listens there
    auto s = open_tier("s3://127.0.0.1:" + std::to_string(port) + "/bucket?access=a&secret=b");
    try {
        s->get("k");
        FAIL() << "a get from a closed port succeeded";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)),
                  std::string::npos)
            << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(Emulators, ObjectStoreTest,
                         ::testing::Values(Emulator::Kind::Azurite, Emulator::Kind::S3rver),
                         [](const auto& param_info) {
                             return param_info.param == Emulator::Kind::Azurite ? "Azurite"
                                                                                : "S3rver";
                         });

}  // namespace
}  // namespace splitseg
