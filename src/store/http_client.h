// HttpClient: the small HTTP/1.1 client the object-storage tiers talk through (libcurl).
// Thread-safe; keeps idle connections for reuse. Requests are retried on connection failures
// and on 500/502/503/504 with a short backoff, which is safe because every request the stores
// send (whole-object PUT, GET, HEAD, DELETE) is idempotent.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace splitseg {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

std::string ascii_lowercase(std::string text);
// The value of the first header named `name` (any case), or "" when there is none.
std::string find_header(const HttpHeaders& headers, const std::string& name);

struct HttpRequest {
    std::string method;  // GET, HEAD, PUT or DELETE
    std::string url;
    HttpHeaders headers;
    std::span<const uint8_t> body;  // sent for PUT
};

struct HttpResponse {
    long status = 0;
    std::map<std::string, std::string> headers;  // names lowercased, values trimmed
    std::vector<uint8_t> body;
    // The header's value, or "" when absent; `name` in lowercase.
    std::string header(const std::string& name) const;
    std::string body_text() const { return {body.begin(), body.end()}; }
};

struct HttpOptions {
    long connect_timeout_ms = 5000;
    long timeout_ms = 120000;  // whole request
    int attempts = 3;          // tries per request, transient failures only
};

class HttpClient {
  public:
    explicit HttpClient(HttpOptions options = {});
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    // An HTTP error status is a response, not an exception. Throws std::runtime_error naming the
    // method and URL when no response came (refused, timed out, reset).
    HttpResponse send(const HttpRequest& request);

  private:
    void* acquire();
    void release(void* handle);
    bool send_once(void* handle, const HttpRequest& request, HttpResponse* response,
                   std::string* error);

    const HttpOptions options_;
    std::mutex mu_;
    std::vector<void*> idle_;  // CURL easy handles, each holding its connection open
};

}  // namespace splitseg
