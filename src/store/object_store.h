// ObjectStore: what the Azure Blob and S3 tiers share. Both keep one object per key in one
// container (bucket) behind the same four verbs: PUT the whole object, GET, HEAD, DELETE. A
// subclass supplies the dialect: how a request is signed, where the container is, how a listing
// reads. The container is created on the first PUT that finds it missing.
#pragma once

#include <memory>

#include "store/blob_store.h"
#include "store/http_client.h"

namespace splitseg {

// scheme://host[:port] of an object-storage service.
struct Endpoint {
    std::string scheme;  // "http" or "https"
    std::string host;    // host[:port], as sent in the Host header
    std::string url() const { return scheme + "://" + host; }
};

// A request to an object store before signing. `path` needs no escaping: keys and container
// names are made of unreserved characters. Query values are unescaped; sending escapes them.
struct ObjectRequest {
    std::string method;
    std::string path;
    HttpHeaders query;  // name-value pairs, in order
    HttpHeaders headers;
    std::span<const uint8_t> body;
};

class ObjectStore : public BlobStore {
  public:
    std::optional<Blob> get(const std::string& key) override;
    void put(const std::string& key, std::span<const uint8_t> bytes) override;
    void remove(const std::string& key) override;
    bool contains(const std::string& key) override;
    std::vector<BlobInfo> list() override;
    StoreStats stats() override;

  protected:
    using Request = ObjectRequest;
    struct ListPage {
        std::vector<BlobInfo> entries;
        std::string next_marker;  // empty on the last page
    };

    ObjectStore(Endpoint endpoint, HttpOptions options);

    const Endpoint& endpoint() const { return endpoint_; }

    // Adds the date and authorization headers (and any the service requires) to a request.
    virtual void sign(Request* request) const = 0;
    virtual std::string object_path(const std::string& key) const = 0;
    // Headers a PUT of an object needs besides Content-Type.
    virtual HttpHeaders put_headers() const { return {}; }
    virtual Request create_container_request() const = 0;
    virtual Request list_request(const std::string& marker) const = 0;
    virtual ListPage parse_list(const std::string& xml) const = 0;

  private:
    HttpResponse send(Request request);
    void create_container();
    [[noreturn]] void fail(const Request& request, const HttpResponse& response) const;

    const Endpoint endpoint_;
    std::unique_ptr<HttpClient> http_;
    StoreCounters counters_;
};

// Percent-encodes all but RFC 3986 unreserved characters (A-Z a-z 0-9 - _ . ~).
std::string uri_encode(std::string_view text);

// The raw content of each <tag>...</tag> element in `xml`, in order. Enough for the services'
// listing and error responses, whose elements of interest carry no attributes.
std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag);
// The unescaped text of the first <tag> element, or "" when there is none.
std::string xml_text(std::string_view xml, std::string_view tag);

// "Sun, 06 Nov 1994 08:49:37 GMT" and "19941106T084937Z" for the current time.
std::string http_date_now();
std::string amz_date_now();

}  // namespace splitseg
