// Structured logs: one JSON object per line on stderr, {"ts": RFC 3339 UTC with milliseconds,
// "event": ..., ...}, written with a single call so that lines from several threads never mix.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace splitseg {

// `fields` is a JSON object; "ts" is added in front of them.
void log_json(const nlohmann::json& fields, std::FILE* out = stderr);

// "2026-11-22T20:44:16.123Z"
std::string rfc3339_now();

}  // namespace splitseg
