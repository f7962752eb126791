#include "store/azure_blob_store.h"

#include <algorithm>
#include <stdexcept>

#include "store/crypto.h"

namespace splitseg {

namespace {

constexpr const char* kApiVersion = "2021-12-02";

bool lower_alnum_or_dash(const std::string& s, bool dash_ok) {
    return std::all_of(s.begin(), s.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (dash_ok && c == '-');
    });
}

}  // namespace

AzureBlobStore::AzureBlobStore(AzureConfig c)
    : ObjectStore(std::move(c.endpoint), c.http), account_(std::move(c.account)) {
    if (account_.size() < 3 || account_.size() > 24 || !lower_alnum_or_dash(account_, false))
        throw std::invalid_argument("azure: account name '" + account_ +
                                    "' must be 3-24 lowercase letters and digits");
    const std::string& ct = c.container;
    if (ct.size() < 3 || ct.size() > 63 || !lower_alnum_or_dash(ct, true) || ct.front() == '-' ||
        ct.back() == '-' || ct.find("--") != std::string::npos)
        throw std::invalid_argument("azure: container name '" + ct +
                                    "' must be 3-63 lowercase letters, digits and single dashes");
    try {
        key_ = base64_decode(c.account_key);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("azure: account key is not base64: ") + e.what());
    }
    if (key_.empty()) throw std::invalid_argument("azure: empty account key");
    base_path_ = c.path_style ? "/" + account_ + "/" + ct : "/" + ct;
}

std::string AzureBlobStore::object_path(const std::string& key) const {
    return base_path_ + "/" + key;
}

ObjectStore::Request AzureBlobStore::create_container_request() const {
    return {"PUT", base_path_, {{"restype", "container"}}, {}, {}};
}

ObjectStore::Request AzureBlobStore::list_request(const std::string& marker) const {
    Request r{"GET", base_path_, {{"restype", "container"}, {"comp", "list"}}, {}, {}};
    if (!marker.empty()) r.query.emplace_back("marker", marker);
    return r;
}

ObjectStore::ListPage AzureBlobStore::parse_list(const std::string& xml) const {
    ListPage page;
    for (std::string_view blob : xml_elements(xml, "Blob")) {
        BlobInfo info{xml_text(blob, "Name"), 0};
        try {
            info.size = std::stoull(xml_text(blob, "Content-Length"));
        } catch (const std::exception&) {
            throw std::runtime_error(describe() + ": listing gives no size for " + info.key);
        }
        page.entries.push_back(std::move(info));
    }
    page.next_marker = xml_text(xml, "NextMarker");
    return page;
}

// Shared Key: the signature covers the verb, the standard headers in a fixed order, every
// x-ms- header and the resource (account, path and query parameters).
void AzureBlobStore::sign(Request* r) const {
    r->headers.emplace_back("x-ms-date", http_date_now());
    r->headers.emplace_back("x-ms-version", kApiVersion);

    std::vector<std::pair<std::string, std::string>> ms_headers;
    for (const auto& [name, value] : r->headers)
        if (ascii_lowercase(name).starts_with("x-ms-"))
            ms_headers.emplace_back(ascii_lowercase(name), value);
    std::sort(ms_headers.begin(), ms_headers.end());
    std::vector<std::pair<std::string, std::string>> params;
    for (const auto& [name, value] : r->query) params.emplace_back(ascii_lowercase(name), value);
    std::sort(params.begin(), params.end());

    const std::string content_length = r->body.empty() ? "" : std::to_string(r->body.size());
    std::string to_sign = r->method + "\n" +
                          "\n"                            // Content-Encoding
                          "\n"                            // Content-Language
                          + content_length + "\n" + "\n"  // Content-MD5
                          + find_header(r->headers, "content-type") + "\n" +
                          "\n"   // Date (x-ms-date is used instead)
                          "\n"   // If-Modified-Since
                          "\n"   // If-Match
                          "\n"   // If-None-Match
                          "\n"   // If-Unmodified-Since
                          "\n";  // Range
    for (const auto& [name, value] : ms_headers) to_sign += name + ":" + value + "\n";
    to_sign += "/" + account_ + r->path;
    for (const auto& [name, value] : params) to_sign += "\n" + name + ":" + value;

    r->headers.emplace_back(
        "Authorization", "SharedKey " + account_ + ":" + base64_encode(hmac_sha256(key_, to_sign)));
}

}  // namespace splitseg
