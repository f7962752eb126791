// AzureBlobStore: a container of Azure Blob Storage (or Azurite, its emulator) as a tier.
// Block blobs, one per key, authorized with Shared Key (HMAC-SHA256 of the canonicalized
// request under the account key).
#pragma once

#include "store/object_store.h"

namespace splitseg {

struct AzureConfig {
    Endpoint endpoint;        // e.g. http://127.0.0.1:10000 or https://acct.blob.core.windows.net
    std::string account;      // storage account name
    std::string container;    // created on the first write if missing
    std::string account_key;  // base64, as the portal and Azurite publish it
    bool path_style = false;  // account in the path (/account/container/key), as emulators use
    HttpOptions http;
};

class AzureBlobStore : public ObjectStore {
  public:
    // Throws std::invalid_argument for a malformed account, container or key.
    explicit AzureBlobStore(AzureConfig config);
    std::string describe() const override { return "azure://" + endpoint().host + base_path_; }

  protected:
    void sign(Request* request) const override;
    std::string object_path(const std::string& key) const override;
    HttpHeaders put_headers() const override { return {{"x-ms-blob-type", "BlockBlob"}}; }
    Request create_container_request() const override;
    Request list_request(const std::string& marker) const override;
    ListPage parse_list(const std::string& xml) const override;

  private:
    std::string account_;
    std::string base_path_;  // "/account/container" (path style) or "/container"
    std::vector<uint8_t> key_;
};

}  // namespace splitseg
