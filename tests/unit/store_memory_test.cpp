#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "store/memory_store.h"
#include "store_test_util.h"

namespace splitseg {
namespace {

using test::bytes;
using test::text;

TEST(StoreKeys, AcceptOnlySafeNames) {
    for (const char* ok : {"a", "0123abcdef-0123abcdef", "x.bundle", "a_b-c.d"})
        EXPECT_TRUE(is_valid_key(ok)) << ok;
    for (const char* bad : {"", ".", "..", ".hidden", ".tmp-1-2", "a/b", "../etc/passwd", "a..b",
                            "UPPER", "sp ace", "a\\b", "é"})
        EXPECT_FALSE(is_valid_key(bad)) << bad;
    EXPECT_FALSE(is_valid_key(std::string(201, 'a')));
    EXPECT_TRUE(is_valid_key(std::string(200, 'a')));
    EXPECT_THROW(check_key("../x"), std::invalid_argument);
}

TEST(MemoryStore, PutGetRemoveContainsList) {
    MemoryStore s(1 << 20);
    EXPECT_FALSE(s.get("a"));
    s.put("a", bytes("alpha"));
    s.put("b", bytes("beta"));
    ASSERT_TRUE(s.get("a"));
    EXPECT_EQ(text(*s.get("a")), "alpha");
    EXPECT_TRUE(s.contains("b"));
    s.put("a", bytes("ALPHA!"));  // replaces
    EXPECT_EQ(text(*s.get("a")), "ALPHA!");
    const auto all = s.list();
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].key, "a");
    EXPECT_EQ(all[0].size, 6u);
    EXPECT_EQ(all[1].key, "b");
    s.remove("a");
    s.remove("a");  // absent: nothing happens
    EXPECT_FALSE(s.contains("a"));
    const StoreStats st = s.stats();
    EXPECT_EQ(st.entries, 1u);
    EXPECT_EQ(st.bytes, 4u);
    EXPECT_EQ(st.hits, 3u);
    EXPECT_EQ(st.misses, 1u);
    EXPECT_EQ(st.puts, 3u);
    EXPECT_THROW(s.put("../a", bytes("x")), std::invalid_argument);
    EXPECT_THROW(s.get("A"), std::invalid_argument);
}

TEST(MemoryStore, EvictsLeastRecentlyUsedWithinBudget) {
    MemoryStore s(10);
    s.put("a", bytes("aaaa"));
    s.put("b", bytes("bbbb"));
    ASSERT_TRUE(s.get("a"));    // b is now the least recently used
    s.put("c", bytes("cccc"));  // 12 > 10: b goes
    EXPECT_TRUE(s.contains("a"));
    EXPECT_FALSE(s.contains("b"));
    EXPECT_TRUE(s.contains("c"));
    EXPECT_EQ(s.stats().bytes, 8u);
    EXPECT_EQ(s.stats().evictions, 1u);
    s.put("big", bytes("0123456789x"));  // larger than the whole budget: not kept, nothing evicted
    EXPECT_FALSE(s.contains("big"));
    EXPECT_EQ(s.stats().entries, 2u);
    EXPECT_EQ(s.evict_to(4), 1u);
    EXPECT_EQ(s.stats().entries, 1u);
}

TEST(MemoryStore, BlobOutlivesEviction) {
    MemoryStore s(8);
    s.put("a", bytes("aaaaaaaa"));
    const Blob held = *s.get("a");
    s.put("b", bytes("bbbbbbbb"));
    EXPECT_FALSE(s.contains("a"));
    EXPECT_EQ(text(held), "aaaaaaaa");
}

// Many threads putting, getting and removing: the budget holds at every moment, every blob read
// is the one written under its key, and the byte count matches the entries at the end.
TEST(MemoryStore, BudgetHoldsUnderConcurrentReadersAndWriters) {
    constexpr uint64_t kBudget = 256 << 10;
    MemoryStore s(kBudget);
    std::atomic<int> bad{0}, over{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(t);
            for (int i = 0; i < 3000; ++i) {
                const int id = static_cast<int>(rng() % 64);
                const std::string key = test::numbered("k", {id});
                const size_t size = 1024 * (1 + id % 32);
                switch (rng() % 4) {
                    case 0:
                        s.put(key, test::checked_blob(size, id));
                        break;
                    case 1:
                        s.remove(key);
                        break;
                    default:
                        if (auto b = s.get(key);
                            b && (b->size() != size || !test::is_intact(b->bytes())))
                            ++bad;
                }
                if (s.stats().bytes > kBudget) ++over;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(over, 0);
    uint64_t listed = 0;
    for (const BlobInfo& e : s.list()) listed += e.size;
    EXPECT_EQ(listed, s.stats().bytes);
    EXPECT_LE(listed, kBudget);
    EXPECT_GT(s.stats().evictions, 0u);
}

}  // namespace
}  // namespace splitseg
