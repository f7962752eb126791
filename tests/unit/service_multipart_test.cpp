// multipart/form-data uploads: the parser on good and malformed bodies, and the upload route's
// answer to each malformed body (a 4xx JSON error, never a 5xx).
#include <gtest/gtest.h>

#include "service/multipart.h"
#include "service_test_util.h"

namespace splitseg {
namespace {

using namespace std::string_literals;
using test::body_json;
using test::error_code;
using test::make_request;

const std::string kType = "multipart/form-data; boundary=XyZ";

// One part: its header lines, then its data.
std::string part(const std::string& headers, const std::string& data) {
    return "--XyZ\r\n" + headers + "\r\n" + data + "\r\n";
}
std::string file_part(const std::string& data, const std::string& name = "image") {
    return part("Content-Disposition: form-data; name=\"" + name +
                    "\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n",
                data);
}
std::string field_part(const std::string& name, const std::string& value) {
    return part("Content-Disposition: form-data; name=\"" + name + "\"\r\n", value);
}
const std::string kClose = "--XyZ--\r\n";

TEST(Multipart, FindsTheBoundaryOfFormDataOnly) {
    EXPECT_EQ(multipart_boundary(kType), "XyZ");
    EXPECT_EQ(multipart_boundary("Multipart/Form-Data; BOUNDARY=\"a b'()+_,-./:=?\""),
              "a b'()+_,-./:=?");
    EXPECT_EQ(multipart_boundary("multipart/form-data;boundary=q; charset=utf-8"), "q");
    EXPECT_EQ(multipart_boundary("image/png"), std::nullopt);
    EXPECT_EQ(multipart_boundary(""), std::nullopt);
    EXPECT_EQ(multipart_boundary("application/x-www-form-urlencoded"), std::nullopt);
    for (const std::string& bad : std::vector<std::string>{
             "multipart/form-data",
             "multipart/form-data; boundary=", "multipart/form-data; charset=x",
             "multipart/form-data; boundary=a@b", "multipart/form-data; boundary=\"ab",
             "multipart/form-data; boundary=" + std::string(71, 'a'),
             "multipart/form-data; boundary=\"trailing \"",
             "multipart/form-data; boundary=a; boundary=b"}) {
        try {
            multipart_boundary(bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const MultipartError& e) {
            EXPECT_EQ(e.status, 400) << bad;
            EXPECT_EQ(e.code, "invalid_multipart") << bad;
        }
    }
}

TEST(Multipart, ReturnsTheFilePartsBytesExactly) {
    // Data with CR, LF, NUL, dashes and the boundary's text, but not after a CRLF.
    const std::string data = "\x89PNG\r\n\x1a\n--XyZ-ish\r\n-\0\xff"s;
    ASSERT_EQ(data.size(), 22u);
    const std::string body = "preamble, ignored\r\n" + field_part("note", "hello") +
                             file_part(data, "upload") + kClose + "epilogue, ignored";
    const MultipartFile f = multipart_file(body, "XyZ");
    EXPECT_EQ(f.data, data);
    EXPECT_EQ(f.field_name, "upload");
    EXPECT_EQ(f.filename, "a.png");
    EXPECT_EQ(f.content_type, "image/png");
    // No preamble, transport padding after a boundary, lower-case names, unquoted values, an
    // empty file, no CRLF after the close delimiter.
    const std::string padded =
        "--XyZ \t\r\ncontent-disposition: FORM-DATA; name=f; filename=x.png\r\n\r\nabc\r\n--XyZ--";
    EXPECT_EQ(multipart_file(padded, "XyZ").data, "abc");
    EXPECT_EQ(multipart_file(padded, "XyZ").filename, "x.png");
    const std::string empty_file =
        part("content-disposition: form-data; name=f; filename=\"\"\r\n", "") + "--XyZ--";
    EXPECT_EQ(multipart_file(empty_file, "XyZ").data, "");
    // A part without headers has no Content-Disposition.
    EXPECT_THROW(multipart_file("--XyZ\r\n\r\nno headers\r\n" + kClose, "XyZ"), MultipartError);
}

struct Malformed {
    const char* what;
    std::string body;
    int status;
    std::string code;
};

std::vector<Malformed> malformed_bodies() {
    const std::string png = "\x89PNG";
    return {
        {"empty body", "", 400, "invalid_multipart"},
        {"no boundary line", "just some bytes\r\n", 400, "invalid_multipart"},
        {"another boundary", "--AbC\r\n" + file_part(png).substr(7) + "--AbC--", 400,
         "invalid_multipart"},
        {"unterminated part",
         "--XyZ\r\nContent-Disposition: form-data; name=i; "
         "filename=a\r\n\r\n" +
             png,
         400, "invalid_multipart"},
        {"no close delimiter", file_part(png) + "--XyZ", 400, "invalid_multipart"},
        {"unterminated headers", "--XyZ\r\nContent-Disposition: form-data; name=i", 400,
         "invalid_multipart"},
        {"text after a boundary", "--XyZjunk\r\n" + file_part(png).substr(7) + kClose, 400,
         "invalid_multipart"},
        {"missing file part", field_part("a", "1") + field_part("b", "2") + kClose, 400,
         "invalid_multipart"},
        {"two files", file_part(png) + file_part(png, "second") + kClose, 400, "invalid_multipart"},
        {"oversize field", field_part("big", std::string(70 << 10, 'x')) + file_part(png) + kClose,
         413, "part_too_large"},
        {"oversize headers",
         part("Content-Disposition: form-data; name=i; filename=a\r\nX-Pad: " +
                  std::string(9 << 10, 'p') + "\r\n",
              png) +
             kClose,
         400, "invalid_multipart"},
        {"header line without a colon", part("Content-Disposition form-data\r\n", png) + kClose,
         400, "invalid_multipart"},
        {"folded header line",
         part("Content-Disposition: form-data; name=i;\r\n filename=a\r\n", png) + kClose, 400,
         "invalid_multipart"},
        {"no Content-Disposition", part("Content-Type: image/png\r\n", png) + kClose, 400,
         "invalid_multipart"},
        {"two Content-Dispositions",
         part("Content-Disposition: form-data; name=i; filename=a\r\n"
              "Content-Disposition: form-data; name=j; filename=b\r\n",
              png) +
             kClose,
         400, "invalid_multipart"},
        {"not form-data", part("Content-Disposition: attachment; filename=a\r\n", png) + kClose,
         400, "invalid_multipart"},
        {"no name", part("Content-Disposition: form-data; filename=a\r\n", png) + kClose, 400,
         "invalid_multipart"},
        {"unterminated quote",
         part("Content-Disposition: form-data; name=\"i; filename=a\r\n", png) + kClose, 400,
         "invalid_multipart"},
        {"parameter without a value",
         part("Content-Disposition: form-data; name=i; filename\r\n", png) + kClose, 400,
         "invalid_multipart"},
        {"base64 transfer encoding",
         part("Content-Disposition: form-data; name=i; filename=a\r\n"
              "Content-Transfer-Encoding: base64\r\n",
              "iVBORw==") +
             kClose,
         400, "invalid_multipart"},
        {"too many parts",
         [&] {
             std::string b;
             for (char name = 'a'; name <= 'q'; ++name) b += field_part(std::string(1, name), "v");
             return b + file_part(png) + kClose;
         }(),
         400, "invalid_multipart"},
    };
}

TEST(Multipart, MalformedBodiesAreRefusedWithTheirCode) {
    for (const Malformed& m : malformed_bodies()) {
        try {
            multipart_file(m.body, "XyZ");
            ADD_FAILURE() << m.what << ": accepted";
        } catch (const MultipartError& e) {
            EXPECT_EQ(e.status, m.status) << m.what << ": " << e.what();
            EXPECT_EQ(e.code, m.code) << m.what << ": " << e.what();
        }
    }
}

TEST(Multipart, FilesOverTheirLimitAreRefused) {
    MultipartLimits limits;
    limits.max_file_bytes = 10;
    const std::string body = file_part(std::string(11, 'x')) + kClose;
    try {
        multipart_file(body, "XyZ", limits);
        ADD_FAILURE() << "accepted";
    } catch (const MultipartError& e) {
        EXPECT_EQ(e.status, 413);
        EXPECT_EQ(e.code, "part_too_large");
    }
    limits.max_file_bytes = 11;
    EXPECT_EQ(multipart_file(body, "XyZ", limits).data.size(), 11u);
}

Response upload(test::ApiFixture& f, const std::string& body, const std::string& type) {
    return f.api->handle(make_request("POST", "/api/v1/images", body, {{"content-type", type}}));
}

TEST(ServiceApiMultipart, UploadsTheFilePartAsItsRawBytesWouldBe) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    const std::string png = test::test_png(3);
    const Response multipart =
        upload(f, field_part("title", "cat") + file_part(png) + kClose, kType);
    ASSERT_EQ(multipart.status, 201) << multipart.body;
    EXPECT_EQ(body_json(multipart)["width"], 64);
    const Response raw = upload(f, png, "image/png");
    EXPECT_EQ(raw.status, 200);  // the same image: the same id
    EXPECT_EQ(body_json(raw)["id"], body_json(multipart)["id"]);
    // A file part that is no image is the image decoder's 400.
    const Response junk = upload(f, file_part("not an image") + kClose, kType);
    EXPECT_EQ(junk.status, 400);
    EXPECT_EQ(error_code(junk), "invalid_image");
    const Response empty = upload(f, file_part("") + kClose, kType);
    EXPECT_EQ(error_code(empty), "invalid_image");
    const Response no_boundary = upload(f, file_part(png) + kClose, "multipart/form-data");
    EXPECT_EQ(no_boundary.status, 400);
    EXPECT_EQ(error_code(no_boundary), "invalid_multipart");
}

TEST(ServiceApiMultipart, EveryMalformedBodyIsA4xxJsonError) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    for (const Malformed& m : malformed_bodies()) {
        const Response r = upload(f, m.body, kType);
        EXPECT_EQ(r.status, m.status) << m.what << ": " << r.body;
        EXPECT_EQ(error_code(r), m.code) << m.what;
        EXPECT_EQ(r.header("Content-Type"), "application/json") << m.what;
    }
    EXPECT_EQ(f.jobs->stats().counts.total(), 0);  // nothing was queued
}

}  // namespace
}  // namespace splitseg
