#include "store/s3_store.h"

#include <algorithm>
#include <stdexcept>

#include "store/crypto.h"

namespace splitseg {

namespace {

bool valid_bucket(const std::string& b) {
    if (b.size() < 3 || b.size() > 63) return false;
    const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    return alnum(b.front()) && alnum(b.back()) && std::all_of(b.begin(), b.end(), [&](char c) {
               return alnum(c) || c == '-' || c == '.';
           });
}

bool valid_region(const std::string& r) {
    return !r.empty() && r.size() <= 32 && std::all_of(r.begin(), r.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
}

}  // namespace

S3Store::S3Store(S3Config c)
    : ObjectStore(std::move(c.endpoint), c.http),
      bucket_(std::move(c.bucket)),
      region_(std::move(c.region)),
      access_key_(std::move(c.access_key)),
      secret_key_(std::move(c.secret_key)) {
    if (!valid_bucket(bucket_))
        throw std::invalid_argument("s3: bucket name '" + bucket_ +
                                    "' must be 3-63 lowercase letters, digits, dots and dashes");
    if (!valid_region(region_)) throw std::invalid_argument("s3: invalid region '" + region_ + "'");
    if (access_key_.empty() || secret_key_.empty())
        throw std::invalid_argument("s3: access key and secret key are required");
    if (region_ != "us-east-1")
        create_bucket_body_ = "<CreateBucketConfiguration><LocationConstraint>" + region_ +
                              "</LocationConstraint></CreateBucketConfiguration>";
}

std::string S3Store::object_path(const std::string& key) const {
    return "/" + bucket_ + "/" + key;
}

ObjectStore::Request S3Store::create_container_request() const {
    return {"PUT", "/" + bucket_, {}, {}, bytes_of(create_bucket_body_)};
}

ObjectStore::Request S3Store::list_request(const std::string& marker) const {
    Request r{"GET", "/" + bucket_, {{"list-type", "2"}}, {}, {}};
    if (!marker.empty()) r.query.emplace_back("continuation-token", marker);
    return r;
}

ObjectStore::ListPage S3Store::parse_list(const std::string& xml) const {
    ListPage page;
    for (std::string_view entry : xml_elements(xml, "Contents")) {
        BlobInfo info{xml_text(entry, "Key"), 0};
        try {
            info.size = std::stoull(xml_text(entry, "Size"));
        } catch (const std::exception&) {
            throw std::runtime_error(describe() + ": listing gives no size for " + info.key);
        }
        page.entries.push_back(std::move(info));
    }
    if (xml_text(xml, "IsTruncated") == "true")
        page.next_marker = xml_text(xml, "NextContinuationToken");
    return page;
}

// Signature Version 4: a canonical form of the request is hashed into a string to sign, which
// is signed with a key derived from the secret, the date, the region and the service.
void sign_aws_v4(ObjectRequest* r, const std::string& host, const std::string& region,
                 const std::string& access_key, const std::string& secret_key,
                 const std::string& datetime) {
    const std::string date = datetime.substr(0, 8);
    const std::string payload_hash = to_hex(sha256(r->body));
    r->headers.emplace_back("Host", host);
    r->headers.emplace_back("x-amz-date", datetime);
    r->headers.emplace_back("x-amz-content-sha256", payload_hash);

    HttpHeaders headers;
    for (const auto& [name, value] : r->headers) headers.emplace_back(ascii_lowercase(name), value);
    std::sort(headers.begin(), headers.end());
    std::string canonical_headers, signed_headers;
    for (const auto& [name, value] : headers) {
        canonical_headers += name + ":" + value + "\n";
        if (!signed_headers.empty()) signed_headers += ';';
        signed_headers += name;
    }
    HttpHeaders params;
    for (const auto& [name, value] : r->query)
        params.emplace_back(uri_encode(name), uri_encode(value));
    std::sort(params.begin(), params.end());
    std::string canonical_query;
    for (const auto& [name, value] : params)
        canonical_query += (canonical_query.empty() ? "" : "&") + name + '=' + value;

    const std::string canonical_request = r->method + "\n" + r->path + "\n" + canonical_query +
                                          "\n" + canonical_headers + "\n" + signed_headers + "\n" +
                                          payload_hash;
    const std::string scope = date + "/" + region + "/s3/aws4_request";
    const std::string to_sign = "AWS4-HMAC-SHA256\n" + datetime + "\n" + scope + "\n" +
                                to_hex(sha256(bytes_of(canonical_request)));
    std::vector<uint8_t> key = hmac_sha256(bytes_of("AWS4" + secret_key), date);
    for (const char* part : {region.c_str(), "s3", "aws4_request"}) key = hmac_sha256(key, part);
    r->headers.emplace_back("Authorization",
                            "AWS4-HMAC-SHA256 Credential=" + access_key + "/" + scope +
                                ", SignedHeaders=" + signed_headers +
                                ", Signature=" + to_hex(hmac_sha256(key, to_sign)));
}

void S3Store::sign(Request* r) const {
    sign_aws_v4(r, endpoint().host, region_, access_key_, secret_key_, amz_date_now());
}

}  // namespace splitseg
