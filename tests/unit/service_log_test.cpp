#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "service/log.h"

namespace splitseg {
namespace {

// The lines log_json wrote to a temporary file.
std::vector<std::string> lines_of(std::FILE* f) {
    std::rewind(f);
    std::vector<std::string> lines;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, f)) lines.emplace_back(buffer);
    return lines;
}

TEST(LogJson, OneJsonObjectPerLineWithAnRfc3339TimestampFirst) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    log_json({{"event", "request"}, {"status", 404}, {"path", "/a\"b"}}, f);
    log_json(nlohmann::json::object(), f);
    const std::vector<std::string> lines = lines_of(f);
    std::fclose(f);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0].rfind("{\"ts\":\"", 0), 0u) << lines[0];
    EXPECT_EQ(lines[0].back(), '\n');
    const nlohmann::json first = nlohmann::json::parse(lines[0]);
    EXPECT_TRUE(std::regex_match(first["ts"].get<std::string>(),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
        << first["ts"];
    EXPECT_EQ(first["event"], "request");
    EXPECT_EQ(first["status"], 404);
    EXPECT_EQ(first["path"], "/a\"b");
    EXPECT_EQ(nlohmann::json::parse(lines[1]).size(), 1u);  // ts alone
}

TEST(LogJson, InvalidUtf8IsReplacedNotThrown) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    EXPECT_NO_THROW(log_json({{"path", "/api/v1/\xff\xfe"}}, f));
    const std::vector<std::string> lines = lines_of(f);
    std::fclose(f);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(nlohmann::json::parse(lines[0])["path"], "/api/v1/\xEF\xBF\xBD\xEF\xBF\xBD");
}

}  // namespace
}  // namespace splitseg
