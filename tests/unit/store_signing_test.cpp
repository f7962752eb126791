#include <gtest/gtest.h>

#include "store/crypto.h"
#include "store/object_store.h"
#include "store/s3_store.h"

namespace splitseg {
namespace {

const char* kAzuriteKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

TEST(Base64, PadsAsRfc4648) {
    auto enc = [](const std::string& s) { return base64_encode(bytes_of(s)); };
    EXPECT_EQ(enc(""), "");
    EXPECT_EQ(enc("M"), "TQ==");
    EXPECT_EQ(enc("Ma"), "TWE=");
    EXPECT_EQ(enc("Man"), "TWFu");
    EXPECT_EQ(enc("\xff\xfe"), "//4=");
}

// Known answers: FIPS 180-2 and RFC 4231 (test case 2).
TEST(StoreCrypto, KnownAnswers) {
    EXPECT_EQ(to_hex(sha256(bytes_of("abc"))),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(to_hex(sha256({})),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(to_hex(hmac_sha256(bytes_of("Jefe"), "what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(base64_encode(bytes_of("any carnal pleas")), "YW55IGNhcm5hbCBwbGVhcw==");
    EXPECT_EQ(base64_encode(bytes_of("")), "");
    for (const char* s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
        const std::vector<uint8_t> back = base64_decode(base64_encode(bytes_of(s)));
        EXPECT_EQ(std::string(back.begin(), back.end()), s);
    }
    EXPECT_EQ(base64_decode(kAzuriteKey).size(), 64u);
    for (const char* bad : {"abc", "ab=c", "a===", "ab c", "ab\ncd==", "####"})
        EXPECT_THROW(base64_decode(bad), std::invalid_argument) << bad;
}

TEST(ObjectStoreText, XmlAndUriHelpers) {
    const std::string xml =
        "<R><Blobs><Blob><Name>a&amp;b</Name><Size>1</Size></Blob><Blob><Name>c</Name></Blob>"
        "</Blobs><NextMarker/></R>";
    const auto blobs = xml_elements(xml, "Blob");
    ASSERT_EQ(blobs.size(), 2u);
    EXPECT_EQ(xml_text(blobs[0], "Name"), "a&b");
    EXPECT_EQ(xml_text(blobs[1], "Name"), "c");
    EXPECT_EQ(xml_text(xml, "NextMarker"), "");
    EXPECT_EQ(xml_text("<a>&lt;&gt;&quot;&apos;&amp;amp;&bogus;</a>", "a"), "<>\"'&amp;&bogus;");
    EXPECT_EQ(uri_encode("a-Z_0.~ /+=%"), "a-Z_0.~%20%2F%2B%3D%25");
    EXPECT_EQ(amz_date_now().size(), 16u);
    EXPECT_EQ(http_date_now().substr(http_date_now().size() - 4), " GMT");
}

// The worked examples of AWS's "Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk" (S3 API reference): GET Object with a Range, and GET Bucket.
TEST(StoreSigning, AwsV4KnownAnswers) {
    const std::string host = "examplebucket.s3.amazonaws.com";
    const std::string access = "AKIAIOSFODNN7EXAMPLE";
    const std::string secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    ObjectRequest get{"GET", "/test.txt", {}, {{"Range", "bytes=0-9"}}, {}};
    sign_aws_v4(&get, host, "us-east-1", access, secret, "20130524T000000Z");
    EXPECT_EQ(
        find_header(get.headers, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    EXPECT_EQ(find_header(get.headers, "x-amz-content-sha256"),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    ObjectRequest list{"GET", "/", {{"max-keys", "2"}, {"prefix", "J"}}, {}, {}};
    sign_aws_v4(&list, host, "us-east-1", access, secret, "20130524T000000Z");
    EXPECT_NE(
        find_header(list.headers, "authorization")
            .find("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        std::string::npos)
        << find_header(list.headers, "authorization");
}

}  // namespace
}  // namespace splitseg
