// The real server on an ephemeral loopback port, driven over HTTP by a Beast client with bounded
// timeouts.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <thread>

#include "service/server.h"
#include "service_test_util.h"

namespace splitseg {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using nlohmann::json;
using tcp = net::ip::tcp;

// One keep-alive connection to the server; every operation times out after 10 s.
class Client {
  public:
    explicit Client(uint16_t port) : stream_(ioc_) {
        stream_.expires_after(std::chrono::seconds(10));
        stream_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    }

    http::response<http::string_body> send(http::verb method, const std::string& target,
                                           const std::string& body = "") {
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "127.0.0.1");
        req.body() = body;
        req.prepare_payload();
        stream_.expires_after(std::chrono::seconds(10));
        http::write(stream_, req);
        http::response_parser<http::string_body> parser;
        parser.body_limit(64u << 20);
        parser.skip(method == http::verb::head);
        http::read(stream_, buffer_, parser);
        return parser.release();
    }

  private:
    net::io_context ioc_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
};

ServerOptions loopback_options() {
    ServerOptions o;
    o.port = 0;
    o.threads = 2;
    o.body_limit = 1u << 20;
    o.read_timeout = std::chrono::seconds(5);
    o.write_timeout = std::chrono::seconds(5);
    o.log_requests = false;
    return o;
}

TEST(ServiceServer, AnswersOverKeepAliveConnectionsAndStopsPromptly) {
    test::ApiFixture f(nullptr);
    Server server(*f.api, loopback_options());
    server.start();
    ASSERT_NE(server.port(), 0);
    {
        Client client(server.port());
        auto health = client.send(http::verb::get, "/healthz");
        EXPECT_EQ(health.result_int(), 200);
        EXPECT_EQ(json::parse(health.body())["status"], "ok");
        EXPECT_EQ(health["Cross-Origin-Embedder-Policy"], "require-corp");
        auto missing = client.send(http::verb::get, "/api/v1/nothing");  // same connection
        EXPECT_EQ(missing.result_int(), 404);
        auto head = client.send(http::verb::head, "/api/v1/openapi.json");
        EXPECT_EQ(head.result_int(), 405);
        auto doc = client.send(http::verb::get, "/api/v1/openapi.json");
        EXPECT_EQ(json::parse(doc.body())["openapi"], "3.0.3");
    }
    {
        Client client(server.port());
        auto big = client.send(http::verb::post, "/api/v1/images", std::string(2u << 20, 'x'));
        EXPECT_EQ(big.result_int(), 413);
        EXPECT_EQ(json::parse(big.body())["error"]["code"], "body_too_large");
    }
    Client idle(server.port());  // an idle keep-alive connection must not hold up shutdown
    idle.send(http::verb::get, "/healthz");
    const auto start = std::chrono::steady_clock::now();
    server.stop();
    server.wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(ServiceServer, UploadEncodeInferAndSessionOverHttp) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    EncodeWorkerOptions worker_options;
    worker_options.idle_wait = 20;
    EncodeWorker worker(
        *f.jobs, [&f](JobLease& lease) { f.api->encode_job(lease); }, worker_options);
    std::thread encoder([&worker] { worker.run(); });
    Server server(*f.api, loopback_options());
    server.start();

    Client client(server.port());
    auto uploaded = client.send(http::verb::post, "/api/v1/images", test::test_png(7));
    ASSERT_EQ(uploaded.result_int(), 201) << uploaded.body();
    const std::string id = json::parse(uploaded.body())["id"];

    std::string status;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (status != "completed" && status != "failed" &&
           std::chrono::steady_clock::now() < deadline) {
        status = json::parse(client.send(http::verb::get, "/api/v1/images/" + id).body())["status"];
        if (status != "completed") std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(status, "completed");

    auto masks = client.send(http::verb::post, "/api/v1/images/" + id + "/infer",
                             R"({"points":[[32,24,1]]})");
    ASSERT_EQ(masks.result_int(), 200) << masks.body();
    EXPECT_EQ(json::parse(masks.body())["masks"].size(), 1u);

    auto session = client.send(http::verb::post, "/api/v1/sessions", json{{"image_id", id}}.dump());
    ASSERT_EQ(session.result_int(), 201) << session.body();
    const std::string sid = json::parse(session.body())["session_id"];
    auto click = client.send(http::verb::post, "/api/v1/sessions/" + sid + "/prompts",
                             R"({"points":[[32,24,1]]})");
    EXPECT_EQ(click.result_int(), 200) << click.body();
    auto bundle = client.send(http::verb::head, "/api/v1/images/" + id + "/embedding");
    EXPECT_EQ(bundle.result_int(), 200);
    EXPECT_GT(std::stoul(std::string(bundle[http::field::content_length])), 1000u);
    EXPECT_EQ(client.send(http::verb::delete_, "/api/v1/sessions/" + sid).result_int(), 204);

    server.stop();
    server.wait();
    worker.stop();
    encoder.join();
}

}  // namespace
}  // namespace splitseg
