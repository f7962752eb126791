#include <gtest/gtest.h>

#include "store/store_spec.h"
#include "store_test_util.h"

namespace splitseg {
namespace {

const char* kAzuriteKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

TEST(StoreSpec, ByteSizes) {
    EXPECT_EQ(parse_byte_size("0"), 0u);
    EXPECT_EQ(parse_byte_size("1500"), 1500u);
    EXPECT_EQ(parse_byte_size("256M"), 256u << 20);
    EXPECT_EQ(parse_byte_size("1G"), 1u << 30);
    EXPECT_EQ(parse_byte_size("2GiB"), 2ull << 30);
    EXPECT_EQ(parse_byte_size("3KB"), 3u << 10);
    EXPECT_EQ(parse_byte_size("1T"), 1ull << 40);
    for (const char* bad :
         {"", "G", "-1", "1.5G", "12Q", "1 G", "99999999999999999999", "20000000T"})
        EXPECT_THROW(parse_byte_size(bad), std::invalid_argument) << bad;
}

TEST(StoreSpec, OpensTiersInOrder) {
    test::ScratchDir dir;
    auto store = open_store("mem:?max_bytes=1M,disk:" + dir.path() + "?max_bytes=2G");
    ASSERT_EQ(store->tier_count(), 2u);
    EXPECT_EQ(store->tier(0).describe(), "memory");
    EXPECT_EQ(store->tier(0).stats().max_bytes, 1u << 20);
    EXPECT_EQ(store->tier(1).describe(), "disk:" + dir.path());
    EXPECT_EQ(store->tier(1).stats().max_bytes, 2u << 30);
    EXPECT_EQ(open_store("mem:")->tier(0).stats().max_bytes, 256u << 20);
    EXPECT_EQ(open_store("memory:?max_bytes=4K")->tier(0).stats().max_bytes, 4096u);
}

TEST(StoreSpec, ObjectStoreSpecs) {
    const std::string key = std::string("?key=") + kAzuriteKey;
    EXPECT_EQ(open_tier("azure://127.0.0.1:10000/devstoreaccount1/bundles" + key)->describe(),
              "azure://127.0.0.1:10000/devstoreaccount1/bundles");
    EXPECT_EQ(open_tier("azure://acct.blob.core.windows.net/bundles" + key)->describe(),
              "azure://acct.blob.core.windows.net/bundles");
    EXPECT_EQ(open_tier("s3://127.0.0.1:4568/bundles?access=S3RVER&secret=S3RVER")->describe(),
              "s3://127.0.0.1:4568/bundles");
    EXPECT_EQ(
        open_tier("s3://127.0.0.1:4568/my.bucket?region=eu-west-1&access=a&secret=b&scheme=https")
            ->describe(),
        "s3://127.0.0.1:4568/my.bucket");
}

TEST(StoreSpec, ErrorsNameTheProblemButNeverTheSecret) {
    const std::string secret = "TopSecretValue";
    const std::vector<std::string> bad = {
        "",
        "mem:,",
        "ftp://x/y",
        "mem:/path",
        "mem:?max_bytes=0",
        "mem:?max_bytes=lots",
        "mem:?size=1M",
        "disk:",
        "disk:/tmp/x?max_bytes=1M&max_bytes=2M",
        "disk:/tmp/x?flag",
        "azure://127.0.0.1:10000/devstoreaccount1?key=" + secret,
        "azure://127.0.0.1:10000/devstoreaccount1/UPPER?key=" + secret + "==",
        "azure://127.0.0.1:10000/a/b/c?key=" + secret,
        "azure://127.0.0.1:10000/devstoreaccount1/bundles?key=" + secret + "!",
        "azure://h/acct/ct?key=" + std::string(kAzuriteKey) + "&scheme=ftp&x=" + secret,
        "s3://127.0.0.1:4568/b?access=a&secret=" + secret,  // bucket too short
        "s3://127.0.0.1:4568/bucket/extra?access=a&secret=" + secret,
        "s3://127.0.0.1:4568/bucket?access=a&secret=" + secret + "&region=Bad_Region",
        "s3://bad host/bucket?access=a&secret=" + secret,
    };
    for (const std::string& spec : bad) {
        try {
            open_store(spec);
            ADD_FAILURE() << "accepted: " << spec;
        } catch (const std::invalid_argument& e) {
            EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
        }
    }
}

TEST(StoreSpec, CredentialsFromTheEnvironment) {
    ::setenv("AWS_ACCESS_KEY_ID", "id", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    EXPECT_NO_THROW(open_tier("s3://127.0.0.1:4568/bundles"));
    ::unsetenv("AWS_SECRET_ACCESS_KEY");
    EXPECT_THROW(open_tier("s3://127.0.0.1:4568/bundles"), std::invalid_argument);
    ::unsetenv("AWS_ACCESS_KEY_ID");
    ::setenv("AZURE_STORAGE_KEY", kAzuriteKey, 1);
    EXPECT_NO_THROW(open_tier("azure://127.0.0.1:10000/devstoreaccount1/bundles"));
    ::unsetenv("AZURE_STORAGE_KEY");
    EXPECT_THROW(open_tier("azure://127.0.0.1:10000/devstoreaccount1/bundles"),
                 std::invalid_argument);
}

}  // namespace
}  // namespace splitseg
