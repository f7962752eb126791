#include "store/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace splitseg {

namespace {

void init_curl_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            throw std::runtime_error("cannot initialise libcurl");
    });
}

std::string trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return std::string(s);
}

// libcurl callbacks: no exception may cross back into C; returning a short count aborts the
// transfer with an error instead.
size_t on_body(char* data, size_t size, size_t count, void* user) noexcept {
    auto* response = static_cast<HttpResponse*>(user);
    try {
        if (response->body.empty()) {
            // Sizes the body once from Content-Length instead of growing it chunk by chunk.
            const std::string length = response->header("content-length");
            if (!length.empty() && std::isdigit(static_cast<unsigned char>(length[0])))
                response->body.reserve(std::min<size_t>(std::strtoull(length.c_str(), nullptr, 10),
                                                        size_t{256} << 20));
        }
        response->body.insert(response->body.end(), data, data + size * count);
        return size * count;
    } catch (...) {
        return 0;
    }
}

size_t on_header(char* data, size_t size, size_t count, void* user) noexcept {
    auto* response = static_cast<HttpResponse*>(user);
    const std::string_view line(data, size * count);
    try {
        if (line.starts_with("HTTP/")) {
            response->headers.clear();  // a new response follows an interim one (100 Continue)
            return line.size();
        }
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos) return line.size();
        response->headers[ascii_lowercase(std::string(line.substr(0, colon)))] =
            trim(line.substr(colon + 1));
        return line.size();
    } catch (...) {
        return 0;
    }
}

// Failures worth another try: the server or the connection, not the request.
bool transient(long status) {
    return status == 500 || status == 502 || status == 503 || status == 504;
}

struct HeaderList {
    curl_slist* list = nullptr;
    ~HeaderList() { curl_slist_free_all(list); }
    void add(const std::string& line) {
        curl_slist* next = curl_slist_append(list, line.c_str());
        if (!next) throw std::bad_alloc();
        list = next;
    }
};

}  // namespace

std::string ascii_lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

std::string find_header(const HttpHeaders& headers, const std::string& name) {
    const std::string lower = ascii_lowercase(name);
    for (const auto& [n, value] : headers)
        if (ascii_lowercase(n) == lower) return value;
    return "";
}

std::string HttpResponse::header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
}

HttpClient::HttpClient(HttpOptions options) : options_(options) {
    init_curl_once();
}

HttpClient::~HttpClient() {
    for (void* h : idle_) curl_easy_cleanup(h);
}

void* HttpClient::acquire() {
    {
        std::lock_guard lock(mu_);
        if (!idle_.empty()) {
            void* h = idle_.back();
            idle_.pop_back();
            return h;
        }
    }
    CURL* h = curl_easy_init();
    if (!h) throw std::runtime_error("cannot create a libcurl handle");
    return h;
}

void HttpClient::release(void* handle) {
    std::lock_guard lock(mu_);
    idle_.push_back(handle);
}

bool HttpClient::send_once(void* handle, const HttpRequest& req, HttpResponse* response,
                           std::string* error) {
    CURL* h = handle;
    curl_easy_reset(h);  // keeps the open connection, forgets the previous request's options
    *response = HttpResponse{};
    char errbuf[CURL_ERROR_SIZE] = "";
    HeaderList headers;
    for (const auto& [name, value] : req.headers) headers.add(name + ": " + value);
    headers.add("Expect:");  // no 100-continue round trip before large bodies
    curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, options_.timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, response);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, response);
    if (req.method == "HEAD") {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (req.method == "PUT") {
        // The body from memory; curl would otherwise add a form Content-Type, which signers see.
        if (find_header(req.headers, "content-type").empty()) headers.add("Content-Type:");
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
        static const char kEmpty[] = "";
        curl_easy_setopt(
            h, CURLOPT_POSTFIELDS,
            req.body.empty() ? kEmpty : reinterpret_cast<const char*>(req.body.data()));
    } else if (req.method != "GET") {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.list);
    const CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        *error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        return false;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response->status);
    return true;
}

HttpResponse HttpClient::send(const HttpRequest& req) {
    void* h = acquire();
    HttpResponse response;
    std::string error;
    bool ok = false;
    try {
        for (int attempt = 0; attempt < std::max(1, options_.attempts); ++attempt) {
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
            ok = send_once(h, req, &response, &error);
            if (ok && !transient(response.status)) break;
        }
    } catch (...) {
        curl_easy_cleanup(h);
        throw;
    }
    release(h);
    if (!ok) throw std::runtime_error(req.method + " " + req.url + ": " + error);
    return response;
}

}  // namespace splitseg
