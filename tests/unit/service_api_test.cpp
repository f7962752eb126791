// The API as a plain function: every route, its errors, auth and tenant isolation, without
// sockets. Tests that need a model use the golden sam-vit-tiny weights and skip without them.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "service/mask_encoding.h"
#include "service_test_util.h"
#include "store/crypto.h"

namespace splitseg {
namespace {

using nlohmann::json;
using test::ApiFixture;
using test::body_json;
using test::error_code;
using test::make_request;

const std::map<std::string, std::string> kKeys = {{"key-a", "alice"}, {"key-b", "bob"}};

TEST(ServiceApi, HealthAndReadiness) {
    ApiFixture f(nullptr);
    EXPECT_EQ(f.api->handle(make_request("GET", "/healthz")).status, 200);
    const Response ready = f.api->handle(make_request("GET", "/readyz"));
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ(body_json(ready)["checks"]["model"], false);
    EXPECT_EQ(body_json(ready)["checks"]["jobs"], true);
}

TEST(ServiceApi, RoutesNeedingAModelAnswerNoModel) {
    ApiFixture f(nullptr);
    const Response r = f.api->handle(make_request("POST", "/api/v1/images", test::test_png()));
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(error_code(r), "no_model");
    const Response s =
        f.api->handle(make_request("POST", "/api/v1/sessions", R"({"image_id":"x"})"));
    EXPECT_EQ(error_code(s), "no_model");
}

TEST(ServiceApi, UnknownPathsAndMethodsAreJsonErrors) {
    ApiFixture f(nullptr);
    const Response missing = f.api->handle(make_request("GET", "/api/v1/nothing"));
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(error_code(missing), "no_route");
    const Response wrong = f.api->handle(make_request("PUT", "/api/v1/images"));
    EXPECT_EQ(wrong.status, 405);
    EXPECT_EQ(error_code(wrong), "method_not_allowed");
    EXPECT_EQ(wrong.header("Allow"), "POST, GET");
}

// The routes that write, fsync or read the stores or the job queue are the ones the server runs
// on its disk threads; decodes and the session routes that wait on a decode's lock run on the
// compute threads; the rest stays on the io threads.
TEST(ServiceApi, EachRouteRunsOnThePoolOfWhatItWaitsFor) {
    ApiFixture f(nullptr);
    using P = Api::Pool;
    struct Case {
        const char* method;
        const char* target;
        P pool;
    };
    for (const Case& c :
         {Case{"POST", "/api/v1/images", P::disk}, Case{"POST", "/api/v1/images?x=1", P::disk},
          Case{"POST", "/api/v1/jobs", P::disk}, Case{"DELETE", "/api/v1/images/abc", P::disk},
          Case{"POST", "/api/v1/images/abc/encode", P::disk},
          Case{"GET", "/api/v1/images/abc/embedding", P::disk},
          Case{"HEAD", "/api/v1/images/abc/embedding", P::disk},
          Case{"GET", "/api/v1/images/abc", P::disk},
          Case{"GET", "/api/v1/images?ids=a,b", P::disk}, Case{"GET", "/api/v1/jobs/j1", P::disk},
          Case{"GET", "/api/v1/models/current/decoder", P::disk},
          Case{"POST", "/api/v1/sessions", P::disk},
          // an image that is not prepared: its embedding is read from the tiers first
          Case{"POST", "/api/v1/images/abc/infer", P::disk},
          // an unknown session: answered 404 by a compute thread
          Case{"POST", "/api/v1/sessions/s1/prompts", P::compute},
          Case{"POST", "/api/v1/sessions/s1/undo", P::compute},
          Case{"POST", "/api/v1/sessions/s1/reset", P::compute},
          Case{"GET", "/api/v1/sessions/s1", P::compute},
          Case{"DELETE", "/api/v1/sessions/s1", P::io}, Case{"GET", "/healthz", P::io},
          Case{"GET", "/metrics", P::io}, Case{"POST", "/api/v1/nothing", P::io}})
        EXPECT_EQ(f.api->pool_for(make_request(c.method, c.target)), c.pool)
            << c.method << " " << c.target;
}

TEST(ServiceApi, EveryResponseCarriesCorsAndIsolationHeaders) {
    ApiFixture f(nullptr);
    for (const Response& r : {f.api->handle(make_request("GET", "/healthz")),
                              f.api->handle(make_request("GET", "/nope"))}) {
        EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "*");
        EXPECT_EQ(r.header("Cross-Origin-Opener-Policy"), "same-origin");
        EXPECT_EQ(r.header("Cross-Origin-Embedder-Policy"), "require-corp");
        EXPECT_EQ(r.header("Cross-Origin-Resource-Policy"), "cross-origin");
    }
    const Response preflight = f.api->handle(make_request("OPTIONS", "/api/v1/images/abc/infer"));
    EXPECT_EQ(preflight.status, 204);
    EXPECT_EQ(preflight.header("Access-Control-Allow-Methods"), "POST, OPTIONS");
}

TEST(ServiceApi, AConfiguredCorsOriginIsSentOnAnswersAndPreflights) {
    ApiFixture f(nullptr, {}, {},
                 [](ApiOptions& o) { o.cors_origin = "https://annotate.example"; });
    for (const Response& r :
         {f.api->handle(make_request("GET", "/healthz")),
          f.api->handle(make_request("OPTIONS", "/api/v1/images")),
          f.api->handle(make_request("POST", "/api/v1/images", "x"))}) {  // an error too
        EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "https://annotate.example");
    }
    const Response preflight = f.api->handle(make_request("OPTIONS", "/api/v1/images"));
    EXPECT_EQ(preflight.status, 204);
    EXPECT_EQ(preflight.header("Access-Control-Allow-Methods"), "POST, GET, OPTIONS");
    EXPECT_NE(preflight.header("Access-Control-Allow-Headers").find("Content-Type"),
              std::string::npos);
}

TEST(ServiceApi, OpenApiListsExactlyTheServedRoutes) {
    ApiFixture f(nullptr);
    const Response r = f.api->handle(make_request("GET", "/api/v1/openapi.json"));
    ASSERT_EQ(r.status, 200);
    const json doc = body_json(r);
    EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
    std::set<std::pair<std::string, std::string>> documented, served;
    for (const auto& [path, ops] : doc["paths"].items()) {
        for (const auto& [method, op] : ops.items()) {
            std::string m = method;
            for (char& ch : m) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
            documented.insert({m, path});
        }
    }
    for (const Api::Route& route : f.api->routes()) served.insert({route.method, route.path});
    EXPECT_EQ(documented, served);
    // And each documented route reaches a handler: neither no_route nor 405.
    for (const auto& [method, path] : documented) {
        std::string target = path;
        for (const char* param : {"{id}", "{sid}"}) {
            const size_t at = target.find(param);
            if (at != std::string::npos) target.replace(at, std::strlen(param), "0123");
        }
        const Response answer = f.api->handle(make_request(method, target, "{}"));
        EXPECT_NE(answer.status, 405) << method << " " << target;
        if (answer.status == 404) {
            EXPECT_NE(error_code(answer), "no_route") << target;
        }
    }
}

TEST(ServiceApi, ApiKeysGuardTheApiButNotHealth) {
    ApiFixture f(test::tiny_model(), kKeys);
    EXPECT_EQ(f.api->handle(make_request("GET", "/healthz")).status, 200);
    const Response none = f.api->handle(make_request("GET", "/api/v1/images?ids=a"));
    EXPECT_EQ(none.status, 401);
    EXPECT_EQ(error_code(none), "unauthorized");
    const Response wrong =
        f.api->handle(make_request("GET", "/api/v1/images?ids=a", "", {{"x-api-key", "nope"}}));
    EXPECT_EQ(wrong.status, 401);
    if (!test::tiny_model()) return;  // the listing itself needs a model
    EXPECT_EQ(f.api
                  ->handle(make_request("GET", "/api/v1/images?ids=a", "",
                                        {{"authorization", "Bearer key-a"}}))
                  .status,
              200);
    EXPECT_EQ(
        f.api->handle(make_request("GET", "/api/v1/images?ids=a", "", {{"x-api-key", "key-b"}}))
            .status,
        200);
}

TEST(ServiceApi, LoadsApiKeysFiles) {
    test::ScratchDir dir;
    auto write = [&](const std::string& text) {
        std::ofstream(dir.file("keys.json")) << text;
        return dir.file("keys.json");
    };
    EXPECT_EQ(load_api_keys(write(R"({"keys":{"k1":"team-a"}})")).at("k1"), "team-a");
    EXPECT_THROW(load_api_keys(write(R"({"keys":{"k1":"../etc"}})")), std::runtime_error);
    EXPECT_THROW(load_api_keys(write(R"({"keys":{}})")), std::runtime_error);
    EXPECT_THROW(load_api_keys(write("not json")), std::runtime_error);
    EXPECT_THROW(load_api_keys(dir.file("missing.json")), std::runtime_error);
}

// --- with a model ---

struct Uploaded {
    std::string id;
    int status = 0;
};

Uploaded upload(ApiFixture& f, const std::string& png, std::map<std::string, std::string> h = {}) {
    const Response r = f.api->handle(make_request("POST", "/api/v1/images", png, std::move(h)));
    if (r.status != 200 && r.status != 201) return {"", r.status};
    return {body_json(r)["id"], r.status};
}

TEST(ServiceApiModel, UploadIsIdempotentAndQueuesOneEncode) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    ApiFixture f(test::tiny_model());
    const Uploaded first = upload(f, test::test_png());
    EXPECT_EQ(first.status, 201);
    EXPECT_EQ(first.id.size(), 32u);
    const Response status = f.api->handle(make_request("GET", "/api/v1/images/" + first.id));
    EXPECT_EQ(body_json(status)["status"], "pending");
    EXPECT_EQ(body_json(status)["width"], 64);
    EXPECT_EQ(body_json(status)["height"], 48);
    const Uploaded again = upload(f, test::test_png());
    EXPECT_EQ(again.status, 200);
    EXPECT_EQ(again.id, first.id);
    EXPECT_EQ(f.jobs->stats().counts.total(), 1);

    const Response early = f.api->handle(
        make_request("POST", "/api/v1/images/" + first.id + "/infer", R"({"points":[[5,5,1]]})"));
    EXPECT_EQ(early.status, 409);
    EXPECT_EQ(error_code(early), "not_encoded");

    f.encode_all();
    const Response done = f.api->handle(make_request("GET", "/api/v1/images?ids=" + first.id));
    EXPECT_EQ(body_json(done)["images"][0]["status"], "completed");
    // Once cached, uploading again queues nothing.
    upload(f, test::test_png());
    EXPECT_EQ(f.jobs->stats().counts.total(), 1);
}

// The upload reads only the image header: a bad or cut header is a 400 at once; data cut after a
// good header is accepted, and its encode job fails with a message the status then shows.
TEST(ServiceApiModel, RejectsBadImages) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    ApiFixture f(test::tiny_model());
    EXPECT_EQ(upload(f, "").status, 400);
    EXPECT_EQ(upload(f, "not an image").status, 400);
    const std::string png = test::test_png();
    const Response cut_header =
        f.api->handle(make_request("POST", "/api/v1/images", png.substr(0, 20)));
    EXPECT_EQ(cut_header.status, 400);
    EXPECT_EQ(error_code(cut_header), "invalid_image");
    EXPECT_EQ(f.jobs->stats().counts.total(), 0);

    const Uploaded cut_data = upload(f, png.substr(0, png.size() / 2));
    ASSERT_EQ(cut_data.status, 201);
    f.encode_all();
    const json status =
        body_json(f.api->handle(make_request("GET", "/api/v1/images/" + cut_data.id)));
    EXPECT_EQ(status["status"], "failed") << status;
    EXPECT_NE(status.value("error", "").find("PNG"), std::string::npos) << status;
    EXPECT_EQ(status["width"], 64);  // from the header
}

// Decompression bombs are refused from the image's header, raw or in a multipart body, with a
// 413 and nothing stored or queued.
TEST(ServiceApiModel, ImagesOverThePixelCapAreRefused) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    ApiFixture f(test::tiny_model(), {}, {}, [](ApiOptions& o) { o.max_pixels = 64 * 48 - 1; });
    const std::string png = test::test_png();
    const std::string multipart =
        "--b\r\nContent-Disposition: form-data; name=i; filename=a\r\n\r\n" + png + "\r\n--b--";
    for (const Response& r :
         {f.api->handle(make_request("POST", "/api/v1/images", png)),
          f.api->handle(make_request("POST", "/api/v1/images", multipart,
                                     {{"content-type", "multipart/form-data; boundary=b"}}))}) {
        EXPECT_EQ(r.status, 413) << r.body;
        EXPECT_EQ(error_code(r), "image_too_large");
    }
    EXPECT_EQ(f.jobs->stats().counts.total(), 0);
    EXPECT_FALSE(std::filesystem::exists(f.dir.path() + "/images"));
}

TEST(ServiceApiModel, BulkStatusReportsEachIdAndIsBounded) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    ApiFixture f(test::tiny_model());
    const Uploaded a = upload(f, test::test_png(1));
    const std::string other_tenants_or_unknown = std::string(32, 'a');
    const Response r = f.api->handle(
        make_request("GET", "/api/v1/images?ids=" + a.id + "," + other_tenants_or_unknown + ",x"));
    ASSERT_EQ(r.status, 200) << r.body;
    const json images = body_json(r)["images"];
    ASSERT_EQ(images.size(), 3u);
    EXPECT_EQ(images[0]["id"], a.id);
    EXPECT_EQ(images[0]["status"], "pending");
    EXPECT_EQ(images[1]["status"], "not_found");
    EXPECT_EQ(images[2]["status"], "not_found");
    std::string many = "/api/v1/images?ids=x";
    for (int i = 0; i < 1000; ++i) many += ",x";
    EXPECT_EQ(error_code(f.api->handle(make_request("GET", many))), "bad_request");
    EXPECT_EQ(error_code(f.api->handle(make_request("GET", "/api/v1/images"))), "bad_request");
}

class ServiceApiEncoded : public ::testing::Test {
  protected:
    void SetUp() override {
        SPLITSEG_REQUIRE_TINY_MODEL();
        f = std::make_unique<ApiFixture>(test::tiny_model(), kKeys,
                                         SessionStoreOptions{1000, 2, [this] { return now; }});
        id = upload(*f, test::test_png(), alice).id;
        // One encode serves every test (encoding dominates their time under sanitizers).
        static std::optional<Embedding> encoded;
        if (encoded) {
            f->cache->put(*encoded);
        } else {
            f->encode_all();
            encoded = f->cache->get(id, test::tiny_model()->model_hash());
        }
    }
    Response call(const std::string& method, const std::string& target,
                  const std::string& body = "", std::map<std::string, std::string> h = {}) {
        if (h.empty()) h = alice;
        return f->api->handle(make_request(method, target, body, std::move(h)));
    }
    // A fresh API with other options, holding the same encoded image.
    void reopen(SessionStoreOptions sessions,
                const std::function<void(ApiOptions&)>& configure = {}) {
        const std::optional<Embedding> e = f->cache->get(id, test::tiny_model()->model_hash());
        f = std::make_unique<ApiFixture>(test::tiny_model(), kKeys, std::move(sessions), configure);
        ASSERT_EQ(upload(*f, test::test_png(), alice).id, id);
        f->cache->put(*e);
    }
    std::string new_session() {
        const Response r = call("POST", "/api/v1/sessions", json{{"image_id", id}}.dump());
        EXPECT_EQ(r.status, 201);
        return body_json(r)["session_id"];
    }

    const std::map<std::string, std::string> alice = {{"x-api-key", "key-a"}};
    const std::map<std::string, std::string> bob = {{"x-api-key", "key-b"}};
    Millis now = 1'000'000;
    std::unique_ptr<ApiFixture> f;
    std::string id;
};

TEST_F(ServiceApiEncoded, ServesTheBundleWithCachingAndRanges) {
    const std::string url = "/api/v1/images/" + id + "/embedding";
    const Response full = call("GET", url);
    ASSERT_EQ(full.status, 200);
    const Embedding e = parse_bundle(std::vector<uint8_t>(full.body.begin(), full.body.end()));
    EXPECT_EQ(e.image_hash, id);
    const std::string etag = "\"" + id + "-" + test::tiny_model()->model_hash() + "\"";
    EXPECT_EQ(full.header("ETag"), etag);
    EXPECT_EQ(full.header("Cache-Control"), "public, max-age=31536000, immutable");
    EXPECT_EQ(full.header("Content-Type"), "application/octet-stream");
    EXPECT_EQ(call("HEAD", url).body.size(), full.body.size());  // the server drops the body

    EXPECT_EQ(call("GET", url, "", {{"x-api-key", "key-a"}, {"if-none-match", etag}}).status, 304);
    const Response part = call("GET", url, "", {{"x-api-key", "key-a"}, {"range", "bytes=8-15"}});
    EXPECT_EQ(part.status, 206);
    EXPECT_EQ(part.body, full.body.substr(8, 8));
    EXPECT_EQ(part.header("Content-Range"), "bytes 8-15/" + std::to_string(full.body.size()));
    const Response tail = call("GET", url, "", {{"x-api-key", "key-a"}, {"range", "bytes=-4"}});
    EXPECT_EQ(tail.body, full.body.substr(full.body.size() - 4));
    for (const char* bad : {"bytes=99999999-", "bytes=5-2", "bytes=-0", "bytes=x-"}) {
        const Response r = call("GET", url, "", {{"x-api-key", "key-a"}, {"range", bad}});
        EXPECT_EQ(r.status, 416) << bad;
        EXPECT_EQ(r.header("Content-Range"), "bytes */" + std::to_string(full.body.size()));
    }
    // Another unit, or several ranges: the Range is ignored and the whole bundle sent.
    for (const char* ignored : {"pages=1-2", "bytes=0-1,4-5"}) {
        const Response r = call("GET", url, "", {{"x-api-key", "key-a"}, {"range", ignored}});
        EXPECT_EQ(r.status, 200) << ignored;
        EXPECT_EQ(r.body, full.body) << ignored;
    }
}

TEST_F(ServiceApiEncoded, InferReturnsCocoRleMasks) {
    const Response r = call("POST", "/api/v1/images/" + id + "/infer",
                            R"({"points":[[32,24,1]],"multimask":true})");
    ASSERT_EQ(r.status, 200) << r.body;
    const json out = body_json(r);
    ASSERT_EQ(out["masks"].size(), 3u);
    EXPECT_GE(out["best"].get<int>(), 0);
    for (const json& m : out["masks"]) {
        EXPECT_EQ(m["rle"]["size"], json({48, 64}));
        EXPECT_FALSE(m["rle"]["counts"].get<std::string>().empty());
        EXPECT_LE(m["area"].get<int>(), 48 * 64);
    }
    const Response png = call("POST", "/api/v1/images/" + id + "/infer",
                              R"({"box":[10,10,50,40],"output":"png","logits":true})");
    ASSERT_EQ(png.status, 200) << png.body;
    const json one = body_json(png)["masks"][0];
    EXPECT_EQ(one["png"].get<std::string>().substr(0, 4), "iVBO");  // base64 of "\x89PNG"
    const Response outline = call("POST", "/api/v1/images/" + id + "/infer",
                                  R"({"points":[[32,24,1]],"output":"polygon"})");
    ASSERT_EQ(outline.status, 200) << outline.body;
    const json outlines = body_json(outline)["masks"][0]["polygons"];
    for (const json& polygon : outlines) {
        EXPECT_GE(polygon.size(), 6u);
        EXPECT_EQ(polygon.size() % 2, 0u);
    }
    EXPECT_EQ(one["low_res_logits"]["f32_base64"].get<std::string>().size(),
              (256u * 256 * 4 + 2) / 3 * 4);
}

TEST_F(ServiceApiEncoded, InferValidatesPrompts) {
    const std::string url = "/api/v1/images/" + id + "/infer";
    const std::pair<const char*, const char*> cases[] = {
        {R"({})", "bad_request"},
        {R"({"points":[[1,1,2]]})", "bad_request"},
        {R"({"points":[[100,1,1]]})", "bad_request"},
        {R"({"points":[[-1,1,1]]})", "bad_request"},
        {R"({"points":[["a",1,1]]})", "bad_request"},
        {R"({"points":[[1,1]]})", "bad_request"},
        {R"({"points":[[1,1,1],[1,1,1],[1,1,1],[1,1,1],[1,1,1]]})", "too_many_points"},
        {R"({"box":[40,40,10,10]})", "bad_request"},
        {R"({"points":[[1,1,1]],"output":"svg"})", "bad_request"},
        {R"([1,2])", "invalid_json"},
        {R"({"points":)", "invalid_json"},
    };
    for (const auto& [body, code] : cases) {
        const Response r = call("POST", url, body);
        EXPECT_EQ(r.status, 400) << body;
        EXPECT_EQ(error_code(r), code) << body;
    }
}

TEST_F(ServiceApiEncoded, TenantsSeeOnlyTheirOwnImagesAndSessions) {
    EXPECT_EQ(call("GET", "/api/v1/images/" + id, "", bob).status, 404);
    EXPECT_EQ(call("GET", "/api/v1/images/" + id + "/embedding", "", bob).status, 404);
    EXPECT_EQ(
        call("POST", "/api/v1/images/" + id + "/infer", R"({"points":[[1,1,1]]})", bob).status,
        404);
    const std::string sid = new_session();
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + sid, "", bob).status, 404);
    EXPECT_EQ(call("DELETE", "/api/v1/sessions/" + sid, "", bob).status, 404);
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + sid).status, 200);
}

TEST_F(ServiceApiEncoded, SessionLifecycle) {
    const std::string sid = new_session();
    const std::string base = "/api/v1/sessions/" + sid;
    const Response first = call("POST", base + "/prompts", R"({"points":[[32,24,1]]})");
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(body_json(first)["steps"], 1);
    EXPECT_EQ(body_json(first)["masks"].size(), 3u);  // the first click asks for candidates
    const Response second =
        call("POST", base + "/prompts", R"({"points":[[2,2,0]],"box":[10,10,50,40]})");
    ASSERT_EQ(second.status, 200) << second.body;
    EXPECT_EQ(body_json(second)["steps"], 2);
    EXPECT_EQ(body_json(second)["masks"].size(), 1u);
    const json state = body_json(call("GET", base));
    EXPECT_EQ(state["points"], json::parse("[[32.0,24.0,1],[2.0,2.0,0]]"));
    EXPECT_EQ(state["box"], json::parse("[10.0,10.0,50.0,40.0]"));

    const json undone = body_json(call("POST", base + "/undo"));
    EXPECT_EQ(undone["steps"], 1);
    EXPECT_EQ(undone["result"], body_json(first));
    EXPECT_EQ(body_json(call("POST", base + "/reset"))["steps"], 0);
    EXPECT_EQ(error_code(call("POST", base + "/undo")), "nothing_to_undo");
    EXPECT_EQ(call("DELETE", base).status, 204);
    EXPECT_EQ(call("GET", base).status, 404);
    EXPECT_EQ(call("POST", "/api/v1/sessions", R"({"image_id":"nope"})").status, 404);
    EXPECT_EQ(call("POST", "/api/v1/sessions", R"({})").status, 400);
}

TEST_F(ServiceApiEncoded, SessionsExpireAndTheOldestIsEvicted) {
    const std::string a = new_session(), b = new_session();
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + a).status, 200);
    const std::string c = new_session();  // cap of 2: b was the least recently used
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + b).status, 404);
    now += 999;
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + c).status, 200);
    now += 1;
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + a).status, 404);  // idle for the whole TTL
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + c).status, 200);
    EXPECT_NE(call("GET", "/metrics").body.find("splitseg_sessions 1"), std::string::npos);
}

TEST_F(ServiceApiEncoded, ReencodeAndDelete) {
    const Response again = call("POST", "/api/v1/images/" + id + "/encode");
    EXPECT_EQ(again.status, 202);
    EXPECT_EQ(call("DELETE", "/api/v1/images/" + id).status, 204);
    EXPECT_EQ(call("GET", "/api/v1/images/" + id).status, 404);
    EXPECT_EQ(call("DELETE", "/api/v1/images/" + id).status, 404);
    EXPECT_EQ(call("POST", "/api/v1/images/" + id + "/encode").status, 404);
}

TEST_F(ServiceApiEncoded, MaskInputFeedsTheDecoder) {
    const std::string url = "/api/v1/images/" + id + "/infer";
    const Response first = call("POST", url, R"({"points":[[32,24,1]],"logits":true})");
    ASSERT_EQ(first.status, 200) << first.body;
    const json logits = body_json(first)["masks"][0]["low_res_logits"];
    const json with_mask = {{"points", {{32, 24, 1}}}, {"mask_input", logits}};
    const Response refined = call("POST", url, with_mask.dump());
    ASSERT_EQ(refined.status, 200) << refined.body;
    // The same through a session: the client's mask replaces the session's previous one.
    const std::string base = "/api/v1/sessions/" + new_session();
    ASSERT_EQ(call("POST", base + "/prompts", R"({"points":[[32,24,1]]})").status, 200);
    const Response session_refined = call("POST", base + "/prompts", with_mask.dump());
    ASSERT_EQ(session_refined.status, 200) << session_refined.body;
    // Two points with the same mask: the session's answer is the stateless one for its points.
    const json two = {{"points", {{32, 24, 1}, {32, 24, 1}}}, {"mask_input", logits}};
    EXPECT_EQ(body_json(session_refined)["masks"][0]["rle"],
              body_json(call("POST", url, two.dump()))["masks"][0]["rle"]);

    const std::vector<float> nan(256 * 256, std::nanf(""));
    const std::string nan_b64 =
        base64_encode(std::span(reinterpret_cast<const uint8_t*>(nan.data()), nan.size() * 4));
    const std::string bad[] = {
        R"({"points":[[1,1,1]],"mask_input":"x"})",
        R"({"points":[[1,1,1]],"mask_input":{"f32_base64":"!!!!"}})",
        R"({"points":[[1,1,1]],"mask_input":{"f32_base64":"AAAA"}})",
        R"({"points":[[1,1,1]],"mask_input":{"shape":[64,64],"f32_base64":"AAAA"}})",
        json{{"points", {{1, 1, 1}}}, {"mask_input", {{"f32_base64", nan_b64}}}}.dump(),
    };
    for (const std::string& body : bad) {
        const Response r = call("POST", url, body);
        EXPECT_EQ(r.status, 400) << body.substr(0, 80);
        EXPECT_EQ(error_code(r), "bad_request") << body.substr(0, 80);
        EXPECT_EQ(call("POST", base + "/prompts", body).status, 400) << body.substr(0, 80);
    }
}

// "best_only": the interactive path returns the one multimask candidate of highest score.
TEST_F(ServiceApiEncoded, BestOnlyReturnsTheBestCandidate) {
    const std::string url = "/api/v1/images/" + id + "/infer";
    const json all = body_json(call("POST", url, R"({"points":[[32,24,1]],"multimask":true})"));
    const Response r =
        call("POST", url, R"({"points":[[32,24,1]],"multimask":true,"best_only":true})");
    ASSERT_EQ(r.status, 200) << r.body;
    const json best = body_json(r);
    ASSERT_EQ(best["masks"].size(), 1u);
    const json& want = all["masks"][all["best"].get<int>()];
    EXPECT_EQ(best["masks"][0]["score"], want["score"]);
    EXPECT_EQ(best["masks"][0]["rle"], want["rle"]);
    EXPECT_EQ(call("POST", url, R"({"points":[[32,24,1]],"best_only":"yes"})").status, 400);
}

TEST_F(ServiceApiEncoded, PolygonsCarryTheirHoles) {
    const Response r = call("POST", "/api/v1/images/" + id + "/infer",
                            R"({"points":[[32,24,1]],"multimask":true,"output":"polygon"})");
    ASSERT_EQ(r.status, 200) << r.body;
    // Named: a range-for over body_json(r)["masks"] would outlive the temporary json (ASan).
    const json body = body_json(r);
    for (const json& m : body["masks"]) {
        ASSERT_TRUE(m["holes"].is_array());
        EXPECT_EQ(m["holes"].size(), m["polygons"].size());
    }
}

TEST_F(ServiceApiEncoded, TenantsAreCappedInSessions) {
    reopen(SessionStoreOptions{60'000, 10, [this] { return now; }, 1u << 30, 2});
    const std::string a = new_session();
    new_session();
    const Response refused = call("POST", "/api/v1/sessions", json{{"image_id", id}}.dump());
    EXPECT_EQ(refused.status, 429);
    EXPECT_EQ(error_code(refused), "too_many_sessions");
    // Another tenant is not held back by alice's sessions (bob has no image: 404, not 429).
    EXPECT_EQ(call("POST", "/api/v1/sessions", json{{"image_id", id}}.dump(), bob).status, 404);
    EXPECT_EQ(call("DELETE", "/api/v1/sessions/" + a).status, 204);
    new_session();
}

TEST_F(ServiceApiEncoded, SessionBytesAreCappedByEvictingTheLeastRecentlyUsed) {
    // Room for about one session with one click (256x256 float logits and its answer).
    reopen(SessionStoreOptions{60'000, 10, [this] { return now; }, 400u << 10, 10});
    const std::string a = new_session(), b = new_session();
    ASSERT_EQ(
        call("POST", "/api/v1/sessions/" + a + "/prompts", R"({"points":[[32,24,1]]})").status,
        200);
    EXPECT_NE(call("GET", "/metrics").body.find("splitseg_session_bytes "), std::string::npos);
    ASSERT_EQ(
        call("POST", "/api/v1/sessions/" + b + "/prompts", R"({"points":[[32,24,1]]})").status,
        200);
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + a).status, 404);  // evicted for b's bytes
    EXPECT_EQ(call("GET", "/api/v1/sessions/" + b).status, 200);
}

TEST_F(ServiceApiEncoded, RateLimitsEachApiKey) {
    reopen(SessionStoreOptions{}, [this](ApiOptions& o) {
        o.rate_limit = {1, 2, [this] { return now; }};
    });
    now += 10'000;  // reopen's upload took a token: start from a full bucket
    const std::string url = "/api/v1/images?ids=" + id;
    EXPECT_EQ(call("GET", url).status, 200);
    EXPECT_EQ(call("GET", url).status, 200);
    const Response limited = call("GET", url);
    EXPECT_EQ(limited.status, 429);
    EXPECT_EQ(error_code(limited), "rate_limited");
    EXPECT_EQ(limited.header("Retry-After"), "1");
    EXPECT_EQ(call("GET", url, "", bob).status, 200);  // bob's key has its own bucket
    EXPECT_EQ(call("GET", "/healthz").status, 200);    // health is not rate limited
    now += 1000;
    EXPECT_EQ(call("GET", url).status, 200);
    EXPECT_EQ(call("GET", url).status, 429);
}

TEST(ServiceApiModel, BatchEncodeJobsReportTheirProgress) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    ApiFixture f(test::tiny_model(), kKeys);
    const std::map<std::string, std::string> alice = {{"x-api-key", "key-a"}};
    const std::string a = upload(f, test::test_png(1), alice).id;
    const std::string b = upload(f, test::test_png(2), alice).id;
    auto call = [&](const std::string& method, const std::string& target,
                    const std::string& body = "", std::map<std::string, std::string> h = {}) {
        return f.api->handle(make_request(method, target, body, h.empty() ? alice : h));
    };
    const Response created = call("POST", "/api/v1/jobs", json{{"image_ids", {a, b}}}.dump());
    ASSERT_EQ(created.status, 202) << created.body;
    const json batch = body_json(created);
    EXPECT_EQ(batch["total"], 2);
    EXPECT_EQ(batch["counts"]["pending"], 2);
    EXPECT_EQ(batch["done"], false);
    EXPECT_EQ(f.jobs->stats().counts.total(), 2);  // the uploads' jobs, not queued twice
    const std::string url = "/api/v1/jobs/" + batch["batch_id"].get<std::string>();

    f.encode_all();
    const json done = body_json(call("GET", url));
    EXPECT_EQ(done["done"], true);
    EXPECT_EQ(done["progress"], 1.0);
    EXPECT_EQ(done["counts"]["completed"], 2);
    EXPECT_EQ(done["images"][1]["id"], b);

    EXPECT_EQ(call("GET", url, "", {{"x-api-key", "key-b"}}).status, 404);  // alice's batch
    EXPECT_EQ(call("GET", "/api/v1/jobs/" + std::string(32, '0')).status, 404);
    const std::pair<std::string, int> bad[] = {
        {"{}", 400},
        {R"({"image_ids":[]})", 400},
        {R"({"image_ids":[1]})", 400},
        {R"({"image_ids":["0123"]})", 404},
        {json{{"image_ids", {a}}, {"force", "yes"}}.dump(), 400},
    };
    for (const auto& [body, status] : bad)
        EXPECT_EQ(call("POST", "/api/v1/jobs", body).status, status) << body;
    // force queues them again.
    const json forced =
        body_json(call("POST", "/api/v1/jobs", json{{"image_ids", {a}}, {"force", true}}.dump()));
    EXPECT_EQ(forced["total"], 1);
}

TEST_F(ServiceApiEncoded, MetricsCountRequestsPerRoute) {
    call("GET", "/api/v1/images/" + id);
    const std::string text = call("GET", "/metrics").body;
    EXPECT_NE(text.find("splitseg_http_requests_total{method=\"GET\",route=\"/api/v1/images/{id}"
                        "\",status=\"200\"} 1"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("splitseg_http_request_duration_seconds_bucket"), std::string::npos);
    EXPECT_NE(text.find("splitseg_encode_jobs{status=\"pending\"}"), std::string::npos);
    EXPECT_NE(text.find("splitseg_cache_hits_total"), std::string::npos);
    // A click's time by stage.
    call("POST", "/api/v1/images/" + id + "/infer", R"({"points":[[32,24,1]]})");
    const std::string after = call("GET", "/metrics").body;
    for (const char* stage : {"decoder", "upscale", "mask_encoding", "json"}) {
        EXPECT_NE(after.find("splitseg_click_stage_seconds_count{stage=\"" + std::string(stage) +
                             "\"} 1"),
                  std::string::npos)
            << stage;
    }
}

}  // namespace
}  // namespace splitseg
