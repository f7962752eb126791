#pragma once
// A JSON reply whose long strings are written apart from the tree. nlohmann's dump checks every
// byte of a string as UTF-8 on its way out: a click's mask as COCO RLE is ~90 KB of counts, and
// dumping it took 0.25-0.5 ms, more than encoding the mask. A held string is written by a scan
// that copies the runs between the bytes that need escaping.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace splitseg {

// Appends s as a JSON string (quotes included): '"', '\\' and the control characters escaped,
// every other byte as it is (s is taken to be UTF-8).
void append_json_string(std::string& out, std::string_view s);

class SplicedJson {
  public:
    // A placeholder to put in the tree where `text` belongs.
    nlohmann::json hold(std::string text);
    // body dumped, each placeholder replaced by its held string. Every placeholder must be in
    // the body exactly once, and no other string of the body may read as one (a control
    // character and digits: no reply of ours holds such a string); else std::logic_error.
    std::string dump(const nlohmann::json& body) const;

  private:
    std::vector<std::string> strings_;
};

}  // namespace splitseg
