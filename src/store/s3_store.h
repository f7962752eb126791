// S3Store: a bucket of an S3-compatible service (AWS S3, MinIO, s3rver) as a tier. Path-style
// addressing (/bucket/key), requests signed with AWS Signature Version 4.
#pragma once

#include "store/object_store.h"

namespace splitseg {

struct S3Config {
    Endpoint endpoint;   // e.g. http://127.0.0.1:4568 or https://s3.eu-west-1.amazonaws.com
    std::string bucket;  // created on the first write if missing
    std::string region = "us-east-1";
    std::string access_key;
    std::string secret_key;
    HttpOptions http;
};

// AWS Signature Version 4 for S3 at the given time ("20130524T000000Z"): adds the Host,
// x-amz-date, x-amz-content-sha256 and Authorization headers, signing every header present.
void sign_aws_v4(ObjectRequest* request, const std::string& host, const std::string& region,
                 const std::string& access_key, const std::string& secret_key,
                 const std::string& amz_datetime);

class S3Store : public ObjectStore {
  public:
    // Throws std::invalid_argument for a malformed bucket, region or empty credentials.
    explicit S3Store(S3Config config);
    std::string describe() const override { return "s3://" + endpoint().host + "/" + bucket_; }

  protected:
    void sign(Request* request) const override;
    std::string object_path(const std::string& key) const override;
    Request create_container_request() const override;
    Request list_request(const std::string& marker) const override;
    ListPage parse_list(const std::string& xml) const override;

  private:
    std::string bucket_;
    std::string region_;
    std::string access_key_;
    std::string secret_key_;
    std::string create_bucket_body_;  // empty in us-east-1, a LocationConstraint elsewhere
};

}  // namespace splitseg
