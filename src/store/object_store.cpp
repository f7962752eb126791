#include "store/object_store.h"

#include <cctype>
#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace splitseg {

namespace {

std::string query_string(const std::vector<std::pair<std::string, std::string>>& query) {
    std::string out;
    for (const auto& [name, value] : query)
        out += (out.empty() ? '?' : '&') + uri_encode(name) + "=" + uri_encode(value);
    return out;
}

std::string xml_unescape(std::string_view s) {
    static const std::pair<std::string_view, char> kEntities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        bool replaced = false;
        if (s[i] == '&') {
            for (const auto& [entity, c] : kEntities) {
                if (s.substr(i).starts_with(entity)) {
                    out.push_back(c);
                    i += entity.size() - 1;
                    replaced = true;
                    break;
                }
            }
        }
        if (!replaced) out.push_back(s[i]);
    }
    return out;
}

std::tm utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    return tm;
}

}  // namespace

std::string uri_encode(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag) {
    std::string open = "<", close = "</";
    open.append(tag).push_back('>');
    close.append(tag).push_back('>');
    std::vector<std::string_view> out;
    size_t pos = 0;
    while ((pos = xml.find(open, pos)) != std::string_view::npos) {
        const size_t begin = pos + open.size();
        const size_t end = xml.find(close, begin);
        if (end == std::string_view::npos) break;
        out.push_back(xml.substr(begin, end - begin));
        pos = end + close.size();
    }
    return out;
}

std::string xml_text(std::string_view xml, std::string_view tag) {
    const auto found = xml_elements(xml, tag);
    return found.empty() ? "" : xml_unescape(found.front());
}

std::string http_date_now() {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const std::tm tm = utc_now();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                  tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

std::string amz_date_now() {
    const std::tm tm = utc_now();
    char buf[64];  // room for any int, which the compiler cannot rule out
    std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

ObjectStore::ObjectStore(Endpoint endpoint, HttpOptions options)
    : endpoint_(std::move(endpoint)), http_(std::make_unique<HttpClient>(options)) {}

HttpResponse ObjectStore::send(Request r) {
    sign(&r);
    return http_->send(
        {r.method, endpoint_.url() + r.path + query_string(r.query), std::move(r.headers), r.body});
}

void ObjectStore::fail(const Request& r, const HttpResponse& response) const {
    const std::string body = response.body_text();
    std::string code = xml_text(body, "Code");
    if (code.empty()) code = response.header("x-ms-error-code");
    std::string message = xml_text(body, "Message");
    message = message.substr(0, message.find('\n'));  // Azure appends request ids and a time
    std::string what =
        describe() + ": " + r.method + " " + r.path + ": HTTP " + std::to_string(response.status);
    if (!code.empty()) what += " " + code;
    if (!message.empty()) what += ": " + message;
    throw std::runtime_error(what);
}

std::optional<Blob> ObjectStore::get(const std::string& key) {
    check_key(key);
    const Request r{"GET", object_path(key), {}, {}, {}};
    HttpResponse response = send(r);
    if (response.status == 404) {
        counters_.count_lookup(false);
        return std::nullopt;
    }
    if (response.status != 200) fail(r, response);
    counters_.count_lookup(true);
    return Blob(std::move(response.body));
}

void ObjectStore::put(const std::string& key, std::span<const uint8_t> bytes) {
    check_key(key);
    Request r{"PUT", object_path(key), {}, put_headers(), bytes};
    r.headers.emplace_back("Content-Type", "application/octet-stream");
    HttpResponse response = send(r);
    if (response.status == 404) {  // a PUT of an object finds nothing missing but its container
        create_container();
        response = send(r);
    }
    if (response.status != 200 && response.status != 201) fail(r, response);
    counters_.puts.fetch_add(1, std::memory_order_relaxed);
}

void ObjectStore::create_container() {
    const Request r = create_container_request();
    const HttpResponse response = send(r);
    // 409: someone else created it in the meantime.
    if (response.status != 200 && response.status != 201 && response.status != 409)
        fail(r, response);
}

void ObjectStore::remove(const std::string& key) {
    check_key(key);
    const Request r{"DELETE", object_path(key), {}, {}, {}};
    const HttpResponse response = send(r);
    const long s = response.status;
    if (s != 200 && s != 202 && s != 204 && s != 404) fail(r, response);
}

bool ObjectStore::contains(const std::string& key) {
    check_key(key);
    const Request r{"HEAD", object_path(key), {}, {}, {}};
    const HttpResponse response = send(r);
    if (response.status == 404) return false;
    if (response.status != 200) fail(r, response);
    return true;
}

std::vector<BlobInfo> ObjectStore::list() {
    std::vector<BlobInfo> out;
    std::string marker;
    do {
        const Request r = list_request(marker);
        const HttpResponse response = send(r);
        if (response.status == 404) break;  // no container yet: nothing stored
        if (response.status != 200) fail(r, response);
        ListPage page = parse_list(response.body_text());
        for (BlobInfo& e : page.entries)
            if (is_valid_key(e.key)) out.push_back(std::move(e));  // others are not ours
        marker = std::move(page.next_marker);
    } while (!marker.empty());
    sort_by_key(out);
    return out;
}

StoreStats ObjectStore::stats() {
    return listed_stats(describe(), list(), counters_);
}

}  // namespace splitseg
