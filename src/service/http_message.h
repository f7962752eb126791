// The HTTP messages the API handles, free of any socket or library type: the server converts
// Beast's messages to and from these, and tests call the API with them directly.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace splitseg {

struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // path and query, as sent: "/api/v1/images?ids=a,b"
    std::map<std::string, std::string> headers;  // names in lower case
    std::string body;

    // The header's value, or "" when absent. `name` in lower case.
    std::string header(const std::string& name) const;
};

struct Response {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    void set_header(const std::string& name, const std::string& value);
    // The header's value (names compared case-insensitively), or "" when absent.
    std::string header(const std::string& name) const;
};

}  // namespace splitseg
