#include <gtest/gtest.h>

#include "service/session_store.h"

namespace splitseg {
namespace {

struct FakeClock {
    Millis now = 1'000'000;
    Clock clock() {
        return [this] { return now; };
    }
};

TEST(SessionStore, ExpiresIdleSessionsAfterTheTtl) {
    FakeClock t;
    SessionStore store({/*ttl=*/1000, /*max_sessions=*/10, t.clock()});
    auto s = store.create("default", "img");
    EXPECT_EQ(s->id.size(), 32u);
    t.now += 900;
    EXPECT_EQ(store.get("default", s->id), s);  // use renews the TTL
    t.now += 900;
    EXPECT_EQ(store.get("default", s->id), s);
    t.now += 1000;
    EXPECT_EQ(store.get("default", s->id), nullptr);
    EXPECT_EQ(store.size(), 0u);
}

TEST(SessionStore, EvictsTheLeastRecentlyUsedWhenFull) {
    FakeClock t;
    SessionStore store({60'000, 2, t.clock()});
    auto a = store.create("default", "img");
    auto b = store.create("default", "img");
    ASSERT_NE(store.get("default", a->id), nullptr);  // b is now the least recently used
    auto c = store.create("default", "img");
    EXPECT_EQ(store.size(), 2u);
    EXPECT_NE(store.get("default", a->id), nullptr);
    EXPECT_EQ(store.get("default", b->id), nullptr);
    EXPECT_NE(store.get("default", c->id), nullptr);
}

TEST(SessionStore, SessionsBelongToTheirTenant) {
    SessionStore store;
    auto s = store.create("alice", "img");
    EXPECT_EQ(store.get("bob", s->id), nullptr);
    EXPECT_FALSE(store.remove("bob", s->id));
    EXPECT_TRUE(store.remove("alice", s->id));
    EXPECT_FALSE(store.remove("alice", s->id));
    EXPECT_NE(store.create("alice", "img")->id, s->id);
}

TEST(SessionStore, EvictsTheLeastRecentlyUsedOverTheByteCap) {
    FakeClock t;
    SessionStore store({60'000, 10, t.clock(), /*max_bytes=*/100});
    auto a = store.create("default", "img");
    auto b = store.create("default", "img");
    auto c = store.create("default", "img");
    store.set_bytes(*a, 40);
    store.set_bytes(*b, 40);
    EXPECT_EQ(store.bytes(), 80u);
    ASSERT_NE(store.get("default", a->id), nullptr);  // b is now the least recently used
    store.set_bytes(*c, 30);                          // 110 > 100: b goes, not c itself
    EXPECT_EQ(store.get("default", b->id), nullptr);
    EXPECT_EQ(store.bytes(), 70u);
    store.set_bytes(*c, 500);  // alone over the cap: the others go, c stays
    EXPECT_EQ(store.size(), 1u);
    EXPECT_NE(store.get("default", c->id), nullptr);
    store.set_bytes(*a, 10);  // evicted meanwhile: ignored
    EXPECT_EQ(store.bytes(), 500u);
    EXPECT_TRUE(store.remove("default", c->id));
    EXPECT_EQ(store.bytes(), 0u);
}

TEST(SessionStore, CapsSessionsPerTenant) {
    SessionStore store({60'000, 10, system_clock_millis, 1u << 20, /*max_per_tenant=*/2});
    auto a = store.create("alice", "img");
    store.create("alice", "img");
    EXPECT_THROW(store.create("alice", "img"), TooManySessions);
    store.create("bob", "img");
    EXPECT_TRUE(store.remove("alice", a->id));
    store.create("alice", "img");
    EXPECT_EQ(store.size(), 3u);
}

TEST(SessionStore, RejectsBadOptions) {
    EXPECT_THROW(SessionStore({1000, 0, system_clock_millis}), std::invalid_argument);
    EXPECT_THROW(SessionStore({0, 10, system_clock_millis}), std::invalid_argument);
    EXPECT_THROW(SessionStore({1000, 10, nullptr}), std::invalid_argument);
}

}  // namespace
}  // namespace splitseg
