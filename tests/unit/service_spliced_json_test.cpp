#include <gtest/gtest.h>

#include <random>
#include <stdexcept>

#include "service/spliced_json.h"

namespace splitseg {
namespace {

using nlohmann::json;

std::string written(std::string_view s) {
    std::string out;
    append_json_string(out, s);
    return out;
}

// Every byte below 0x80 (the control characters, quotes, backslashes among them) and multi-byte
// UTF-8 sequences, at lengths around the runs: what is written parses back to the same bytes, and
// where nothing needs a \u escape it is what nlohmann writes.
TEST(AppendJsonString, ParsesBackToTheSameBytes) {
    std::mt19937 rng(11);
    const std::vector<std::string> wide = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (int length : {0, 1, 2, 15, 16, 17, 300}) {
        for (int trial = 0; trial < 20; ++trial) {
            std::string s;
            bool plain = true;  // printable ASCII only
            for (int i = 0; i < length; ++i) {
                const unsigned r = rng() % 160;
                if (r >= 128) {
                    s += wide[r % wide.size()];
                } else {
                    s += static_cast<char>(r);
                    plain = plain && r >= 0x20 && r < 0x7f;
                }
            }
            SCOPED_TRACE(::testing::Message() << "length " << length << " trial " << trial);
            const std::string out = written(s);
            ASSERT_EQ(json::parse(out).get<std::string>(), s);
            if (plain) {
                ASSERT_EQ(out, json(s).dump());
            }
        }
    }
    EXPECT_EQ(written("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
}

// A reply shaped as a click's (masks with RLE counts, whose alphabet holds the backslash), with
// more than ten held strings (placeholder 1 against 10), dumps as the tree with the strings in it.
TEST(SplicedJson, DumpsWhatTheTreeWithItsStringsDumps) {
    std::mt19937 rng(12);
    SplicedJson spliced;
    json with_placeholders = {{"best", 2}, {"masks", json::array()}};
    json whole = with_placeholders;
    for (int i = 0; i < 12; ++i) {
        std::string counts(1 + rng() % 5000, '0');
        for (char& c : counts) c = static_cast<char>(48 + rng() % 64);  // '0' .. 'o', '\\' too
        json mask = {{"score", 0.5 + i}, {"bbox", {i, 2, 3, 4}}, {"area", 100 * i}};
        json held = mask, plain = mask;
        held["rle"] = {{"size", {768, 1024}}, {"counts", spliced.hold(counts)}};
        plain["rle"] = {{"size", {768, 1024}}, {"counts", counts}};
        with_placeholders["masks"].push_back(held);
        whole["masks"].push_back(plain);
    }
    with_placeholders["latency_ms"] = whole["latency_ms"] = 12.5;
    EXPECT_EQ(spliced.dump(with_placeholders), whole.dump());
    EXPECT_EQ(SplicedJson().dump(whole), whole.dump());  // nothing held
}

// A placeholder left out of the body, or in it twice, is a caller's bug: refused, not guessed.
TEST(SplicedJson, RefusesABodyWithoutEachPlaceholderOnce) {
    SplicedJson spliced;
    const json first = spliced.hold("abc");
    spliced.hold("def");
    EXPECT_THROW(spliced.dump({{"a", first}}), std::logic_error);
    const json second = spliced.hold("ghi");
    EXPECT_THROW(spliced.dump({{"a", first}, {"b", second}, {"c", second}}), std::logic_error);
}

}  // namespace
}  // namespace splitseg
