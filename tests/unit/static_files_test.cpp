// The web client's static files: content types, index fallback, path safety, and the API's hook
// (API routes first; files get the cross-origin isolation headers the WASM decoder needs).
#include "service/static_files.h"

#include <gtest/gtest.h>

#include <fstream>

#include "service_test_util.h"

namespace splitseg {
namespace {

using test::make_request;

void write(const std::string& path, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

struct WebRoot {
    WebRoot() {
        write(dir.file("web/index.html"), "<!doctype html>index");
        write(dir.file("web/assets/app-1234.js"), "export {}");
        write(dir.file("web/wasm/splitseg_decoder.wasm"), std::string("\0asm", 4));
        write(dir.file("secret.txt"), "outside the root");
    }
    test::ScratchDir dir;
};

TEST(StaticFiles, ContentTypes) {
    EXPECT_EQ(content_type_for("/a/b.wasm"), "application/wasm");
    EXPECT_EQ(content_type_for("x.mjs"), "text/javascript; charset=utf-8");
    EXPECT_EQ(content_type_for("x.js"), "text/javascript; charset=utf-8");
    EXPECT_EQ(content_type_for("index.html"), "text/html; charset=utf-8");
    EXPECT_EQ(content_type_for("style.css"), "text/css; charset=utf-8");
    EXPECT_EQ(content_type_for("noext"), "application/octet-stream");
}

TEST(StaticFiles, ServesFilesAndIndexForClientRoutes) {
    WebRoot w;
    StaticFiles files(w.dir.file("web"));
    const auto index = files.serve(make_request("GET", "/"));
    ASSERT_TRUE(index);
    EXPECT_EQ(index->body, "<!doctype html>index");
    EXPECT_EQ(index->header("Cache-Control"), "no-cache");
    ASSERT_TRUE(files.serve(make_request("GET", "/some/view?x=1")));  // no extension: index
    EXPECT_EQ(files.serve(make_request("GET", "/some/view"))->body, index->body);

    const auto wasm = files.serve(make_request("GET", "/wasm/splitseg_decoder.wasm"));
    ASSERT_TRUE(wasm);
    EXPECT_EQ(wasm->header("Content-Type"), "application/wasm");
    EXPECT_EQ(wasm->body.size(), 4u);
    const auto js = files.serve(make_request("HEAD", "/assets/app-1234.js"));
    ASSERT_TRUE(js);
    EXPECT_EQ(js->header("Cache-Control"), "public, max-age=31536000, immutable");
}

TEST(StaticFiles, RefusesWhatItShouldNotServe) {
    WebRoot w;
    StaticFiles files(w.dir.file("web"));
    EXPECT_FALSE(files.serve(make_request("GET", "/missing.js")));
    EXPECT_FALSE(files.serve(make_request("POST", "/index.html")));
    EXPECT_FALSE(files.serve(make_request("GET", "/api/v1/anything")));
    EXPECT_FALSE(files.serve(make_request("GET", "/../secret.txt")));
    EXPECT_FALSE(files.serve(make_request("GET", "/assets/../../secret.txt")));
    EXPECT_FALSE(files.serve(make_request("GET", "/%2e%2e/secret.txt")));
    EXPECT_FALSE(files.serve(make_request("GET", "relative.txt")));
    std::filesystem::create_symlink(w.dir.file("secret.txt"), w.dir.file("web/link.txt"));
    EXPECT_FALSE(files.serve(make_request("GET", "/link.txt")));
    EXPECT_THROW(StaticFiles(w.dir.file("nowhere")), std::runtime_error);
}

TEST(StaticFiles, ApiServesTheClientBesideItsRoutes) {
    WebRoot w;
    test::ScratchDir data;
    ApiOptions o;
    o.data_dir = data.path();
    o.cache = std::make_shared<EmbeddingCache>(open_store("mem:?max_bytes=1M"));
    o.jobs = open_sqlite_job_queue(data.file("jobs.db"));
    o.web = std::make_shared<StaticFiles>(w.dir.file("web"));
    Api api(std::move(o));

    const Response index = api.handle(make_request("GET", "/"));
    EXPECT_EQ(index.status, 200);
    EXPECT_EQ(index.header("Content-Type"), "text/html; charset=utf-8");
    EXPECT_EQ(index.header("Cross-Origin-Opener-Policy"), "same-origin");
    EXPECT_EQ(index.header("Cross-Origin-Embedder-Policy"), "require-corp");
    EXPECT_EQ(api.handle(make_request("GET", "/healthz")).body, R"({"status":"ok"})");
    EXPECT_EQ(test::error_code(api.handle(make_request("GET", "/api/v1/nothing"))), "no_route");
    EXPECT_EQ(api.handle(make_request("GET", "/nothing.js")).status, 404);
}

TEST(StaticFiles, ApiServesTheBrowserDecoderWeights) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ScratchDir data;
    write(data.file("decoder.safetensors"), "decoder bytes");
    ApiOptions o;
    o.data_dir = data.path();
    o.model = test::tiny_model();
    o.cache = std::make_shared<EmbeddingCache>(open_store("mem:?max_bytes=1M"));
    o.jobs = open_sqlite_job_queue(data.file("jobs.db"));
    Api without(o);
    EXPECT_EQ(without.handle(make_request("GET", "/api/v1/models/current/decoder")).status, 404);

    o.decoder_path = data.file("decoder.safetensors");
    Api api(std::move(o));
    const std::string hash = test::tiny_model()->model_hash();
    const Response current = api.handle(make_request("GET", "/api/v1/models/current/decoder"));
    EXPECT_EQ(current.status, 200);
    EXPECT_EQ(current.body, "decoder bytes");
    EXPECT_EQ(current.header("Cache-Control"), "no-cache");
    const Response by_hash = api.handle(make_request("GET", "/api/v1/models/" + hash + "/decoder"));
    EXPECT_EQ(by_hash.body, "decoder bytes");
    EXPECT_EQ(by_hash.header("Cache-Control"), "public, max-age=31536000, immutable");
    const Response again = api.handle(make_request("GET", "/api/v1/models/current/decoder", "",
                                                   {{"if-none-match", current.header("ETag")}}));
    EXPECT_EQ(again.status, 304);
    EXPECT_EQ(api.handle(make_request("GET", "/api/v1/models/other/decoder")).status, 404);
}

}  // namespace
}  // namespace splitseg
