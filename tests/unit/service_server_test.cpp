// The real server on an ephemeral loopback port, driven over HTTP by a Beast client with bounded
// timeouts.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "service/mask_frame.h"
#include "service/server.h"
#include "service/static_files.h"
#include "service_test_util.h"
#include "store/memory_store.h"
#include "store/tiered_store.h"
#include "test_jpeg.h"

namespace splitseg {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace websocket = beast::websocket;
using nlohmann::json;
using tcp = net::ip::tcp;

// Runs the async operations `start` begins until `done` is set, for at most 10 s: sync
// operations would ignore the stream's timeouts, and a test must never hang.
template <class Start>
void run_bounded(net::io_context& ioc, const bool& done, Start start) {
    start();
    ioc.restart();
    ioc.run_for(std::chrono::seconds(10));
    if (!done) throw std::runtime_error("the server did not answer within 10 s");
}

// One keep-alive connection to the server.
class Client {
  public:
    explicit Client(uint16_t port) : stream_(ioc_) {
        bool done = false;
        beast::error_code ec;
        auto finish = [&](beast::error_code e) {
            ec = e;
            done = true;
        };
        run_bounded(ioc_, done, [&] {
            stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port),
                                  [&](beast::error_code e) { finish(e); });
        });
        if (ec) throw beast::system_error(ec);
    }

    http::response<http::string_body> send(http::verb method, const std::string& target,
                                           const std::string& body = "",
                                           const std::string& content_type = "") {
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "127.0.0.1");
        if (!content_type.empty()) req.set(http::field::content_type, content_type);
        req.body() = body;
        req.prepare_payload();
        http::response_parser<http::string_body> parser;
        parser.body_limit(64u << 20);
        parser.skip(method == http::verb::head);
        bool done = false;
        beast::error_code ec;
        auto finish = [&](beast::error_code e) {
            ec = e;
            done = true;
        };
        run_bounded(ioc_, done, [&] {
            http::async_write(stream_, req, [&](beast::error_code e, size_t) {
                if (e) return finish(e);
                http::async_read(stream_, buffer_, parser,
                                 [&](beast::error_code e2, size_t) { finish(e2); });
            });
        });
        if (ec) throw beast::system_error(ec);
        return parser.release();
    }

    uint16_t local_port() const { return stream_.socket().local_endpoint().port(); }

    // Writes `bytes` as they are and reads up to and including `until`.
    std::string send_raw(const std::string& bytes, const std::string& until) {
        bool done = false;
        beast::error_code ec;
        auto finish = [&](beast::error_code e) {
            ec = e;
            done = true;
        };
        std::string got;
        run_bounded(ioc_, done, [&] {
            net::async_write(stream_, net::buffer(bytes), [&](beast::error_code e, size_t) {
                if (e) return finish(e);
                net::async_read_until(stream_, net::dynamic_buffer(got), until,
                                      [&](beast::error_code e2, size_t) { finish(e2); });
            });
        });
        if (ec) throw beast::system_error(ec);
        return got;
    }

    // A WebSocket reply: its text frame and the binary frames that followed it.
    struct SocketReply {
        std::string text;
        std::vector<std::string> frames;
    };

    // The connection upgraded to a WebSocket on `target`; the client is used up. Each message
    // gets one text reply and as many binary frames as its "frames" says.
    std::string websocket_exchange(const std::string& target,
                                   const std::vector<std::string>& messages,
                                   std::vector<SocketReply>* replies) {
        websocket::stream<beast::tcp_stream> ws(std::move(stream_));
        bool done = false;
        beast::error_code ec;
        auto finish = [&](beast::error_code e) {
            ec = e;
            done = true;
        };
        beast::flat_buffer in;
        size_t next = 0, frames_left = 0;
        std::function<void()> send_next;
        // Reads the text reply, then its binary frames, then sends the next message.
        std::function<void()> read_reply = [&] {
            ws.async_read(in, [&](beast::error_code e, size_t) {
                if (e) return finish(e);
                const std::string data = beast::buffers_to_string(in.data());
                in.clear();
                if (frames_left == 0) {
                    if (!ws.got_text()) return finish(websocket::error::bad_data_frame);
                    replies->push_back({data, {}});
                    frames_left = json::parse(data).value("frames", size_t(0));
                } else {
                    if (ws.got_text()) return finish(websocket::error::bad_data_frame);
                    replies->back().frames.push_back(data);
                    --frames_left;
                }
                if (frames_left > 0) return read_reply();
                send_next();
            });
        };
        send_next = [&] {
            if (next == messages.size()) {
                return ws.async_close(websocket::close_code::normal,
                                      [&](beast::error_code) { done = true; });
            }
            ws.async_write(net::buffer(messages[next++]), [&](beast::error_code e, size_t) {
                if (e) return finish(e);
                read_reply();
            });
        };
        run_bounded(ioc_, done, [&] {
            ws.async_handshake("127.0.0.1", target, [&](beast::error_code e) {
                if (e) return finish(e);
                send_next();
            });
        });
        return ec ? ec.message() : "";
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
    o.websocket_handshake_timeout = std::chrono::milliseconds(300);
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
    {
        // curl sends large uploads with "Expect: 100-continue" and waits for the go-ahead.
        Client client(server.port());
        const std::string head = client.send_raw(
            "POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n",
            "\r\n\r\n");
        EXPECT_EQ(head.rfind("HTTP/1.1 100 Continue\r\n", 0), 0u) << head;
        const std::string answer = client.send_raw("hello", "}}");
        EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;  // no model loaded
    }
    Client idle(server.port());  // an idle keep-alive connection must not hold up shutdown
    idle.send(http::verb::get, "/healthz");
    const auto start = std::chrono::steady_clock::now();
    server.stop();
    server.wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

// The server's end of the loopback connection from client_port to server_port, found among this
// process's file descriptors (the server runs in the test's process), or -1.
int server_socket_of(uint16_t server_port, uint16_t client_port) {
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        const int fd = std::stoi(entry.path().filename().string());
        sockaddr_in local{}, peer{};
        socklen_t len = sizeof local, peer_len = sizeof peer;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0 ||
            local.sin_family != AF_INET ||
            getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
            continue;
        if (ntohs(local.sin_port) == server_port && ntohs(peer.sin_port) == client_port) return fd;
    }
    return -1;
}

// Accepted connections send at once (TCP_NODELAY): with Nagle's algorithm, a WebSocket reply
// written while the client still owed an ACK waited for its delayed ACK, and a lone client's
// clicks took 40 ms longer at p99 (bench_load, one client, 300 ms between clicks: 71 -> 27 ms).
TEST(ServiceServer, AcceptedConnectionsSendWithoutNaglesDelay) {
    test::ApiFixture f(nullptr);
    Server server(*f.api, loopback_options());
    server.start();
    Client client(server.port());
    EXPECT_EQ(client.send(http::verb::get, "/healthz").result_int(), 200);
    const int fd = server_socket_of(server.port(), client.local_port());
    ASSERT_GE(fd, 0) << "the server's end of the connection was not found";
    int no_delay = 0;
    socklen_t len = sizeof no_delay;
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &no_delay, &len), 0);
    EXPECT_NE(no_delay, 0);
    server.stop();
    server.wait();
}

// Opens session sid's WebSocket with a handwritten upgrade request on a raw connection (a peer
// that then stays silent); returns the server's answer up to its blank line.
std::string upgrade_by_hand(Client& client, const std::string& sid) {
    return client.send_raw(
        "GET /api/v1/sessions/" + sid +
            "/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "\r\n\r\n");
}

// Sends `bytes` (maybe none) and reads: the server must end the connection after the one-second
// timeout the test configured, not at once and not much later.
void expect_closed_after_a_second(Client& client, const std::string& bytes) {
    const auto start = std::chrono::steady_clock::now();
    try {
        const std::string got = client.send_raw(bytes, "never sent");
        ADD_FAILURE() << "the connection stayed open, got " << got;
    } catch (const beast::system_error& e) {
        EXPECT_EQ(e.code(), net::error::eof) << e.code().message();
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_GE(waited, std::chrono::milliseconds(900));
    EXPECT_LT(waited, std::chrono::seconds(4));
}

// A client that sends part of a request and then nothing (slowloris) is disconnected after the
// read timeout, in the headers and in the body alike.
TEST(ServiceServer, SlowClientsAreCutOffAfterTheReadTimeout) {
    test::ApiFixture f(nullptr);
    ServerOptions options = loopback_options();
    options.read_timeout = std::chrono::seconds(1);
    Server server(*f.api, options);
    server.start();
    for (const std::string partial :
         {"GET /healthz HTTP/1.1\r\nHost: x\r\n",
          "POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"}) {
        Client client(server.port());
        expect_closed_after_a_second(client, partial);
    }
}

// A client that asks for a large body and then never reads (its receive buffer made tiny before
// connecting, so loopback cannot take the body into buffers) is cut off after the write
// timeout, while the server goes on answering others.
TEST(ServiceServer, ClientsThatStopReadingAreCutOffAfterTheWriteTimeout) {
    test::ScratchDir web;
    // 4x what loopback buffers on both ends hold here (tcp_wmem at most 4 MiB, 8 KiB received).
    const size_t size = 16u << 20;
    std::ofstream(web.file("big.bin"), std::ios::binary) << std::string(size, 'x');
    test::ApiFixture f(nullptr, {}, {}, [&web](ApiOptions& o) {
        o.web = std::make_shared<StaticFiles>(web.path());
    });
    ServerOptions options = loopback_options();
    options.write_timeout = std::chrono::seconds(1);
    Server server(*f.api, options);
    server.start();

    net::io_context ioc;
    tcp::socket stalled(ioc);
    stalled.open(tcp::v4());
    stalled.set_option(net::socket_base::receive_buffer_size(4096));
    stalled.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
    net::write(stalled, net::buffer(std::string("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")));
    // The write (and its timeout) has begun once the first bytes wait in our receive buffer;
    // reading the file and building the answer may take seconds on a loaded machine or under
    // ASan, and a fixed pause would then start reading before the write had even begun.
    const auto asked = std::chrono::steady_clock::now();
    while (stalled.available() == 0 &&
           std::chrono::steady_clock::now() - asked < std::chrono::seconds(60))
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_GT(stalled.available(), 0u) << "the server did not start answering within 60 s";
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2500)) {
        Client other(server.port());  // served while the stalled write waits
        EXPECT_EQ(other.send(http::verb::get, "/healthz").result_int(), 200);
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }

    // Past the timeout: what was sent drains, then the connection ends short of the body.
    size_t received = 0;
    beast::error_code end;
    std::vector<char> chunk(1 << 16);
    std::function<void()> read_more = [&] {
        stalled.async_read_some(net::buffer(chunk), [&](beast::error_code ec, size_t n) {
            received += n;
            if (ec) {
                end = ec;
                return;
            }
            read_more();
        });
    };
    read_more();
    ioc.run_for(std::chrono::seconds(10));
    EXPECT_TRUE(end == net::error::eof || end == net::error::connection_reset)
        << (end ? end.message() : "the connection is still open");
    EXPECT_LT(received, size);
    EXPECT_GT(received, 0u);  // the answer had started
}

// A WebSocket peer that goes silent (and answers no ping) is closed after the idle timeout.
TEST(ServiceServer, SilentWebSocketsAreClosedAfterTheIdleTimeout) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    ServerOptions options = loopback_options();
    options.websocket_idle_timeout = std::chrono::seconds(1);
    Server server(*f.api, options);
    server.start();
    // A session needs an encoded image; the socket route checks that the session exists.
    const Response up =
        f.api->handle(test::make_request("POST", "/api/v1/images", test::test_png()));
    ASSERT_EQ(up.status, 201) << up.body;
    f.encode_all();
    const Response made = f.api->handle(test::make_request(
        "POST", "/api/v1/sessions", json{{"image_id", test::body_json(up)["id"]}}.dump()));
    ASSERT_EQ(made.status, 201) << made.body;
    const std::string sid = test::body_json(made)["session_id"];
    Client silent(server.port());
    const std::string upgraded = upgrade_by_hand(silent, sid);
    ASSERT_EQ(upgraded.rfind("HTTP/1.1 101", 0), 0u) << upgraded;
    expect_closed_after_a_second(silent, "");  // reads the ping, then the end of the connection
}

// Request targets are bytes: one that is not UTF-8 must still be answered (a JSON error) and
// logged, not take the io thread down while its log line is serialised.
TEST(ServiceServer, TargetsThatAreNotUtf8AreAnsweredAndLogged) {
    test::ApiFixture f(nullptr);
    ServerOptions options = loopback_options();
    options.log_requests = true;
    Server server(*f.api, options);
    server.start();
    Client client(server.port());
    const std::string answer =
        client.send_raw("GET /api/v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", "}}");
    EXPECT_EQ(answer.rfind("HTTP/1.1 4", 0), 0u) << answer;
    EXPECT_EQ(client.send(http::verb::get, "/healthz").result_int(), 200);
}

TEST(ServiceServer, RateLimitedRequestsGetA429OverHttp) {
    test::ApiFixture f(nullptr, {}, {}, [](ApiOptions& o) {
        o.rate_limit.per_second = 1;
        o.rate_limit.burst = 2;
    });
    Server server(*f.api, loopback_options());
    server.start();
    Client client(server.port());
    // The two allowed requests are answered (no such image); the third is refused.
    EXPECT_EQ(client.send(http::verb::get, "/api/v1/images?ids=a").result_int(), 200);
    EXPECT_EQ(client.send(http::verb::get, "/api/v1/images?ids=a").result_int(), 200);
    auto limited = client.send(http::verb::get, "/api/v1/images?ids=a");
    EXPECT_EQ(limited.result_int(), 429);
    EXPECT_EQ(json::parse(limited.body())["error"]["code"], "rate_limited");
    EXPECT_FALSE(limited[http::field::retry_after].empty());
    EXPECT_EQ(client.send(http::verb::get, "/healthz").result_int(), 200);
}

// The encode worker of `f` on its own thread, as serve runs it; stopped and joined on scope exit
// (also when an assertion returns early).
class BackgroundEncoder {
  public:
    explicit BackgroundEncoder(test::ApiFixture& f)
        : worker_(
              *f.jobs, [&f](JobLease& lease) { f.api->encode_job(lease); }, options()),
          thread_([this] { worker_.run(); }) {}
    ~BackgroundEncoder() {
        worker_.stop();
        thread_.join();
    }

  private:
    static EncodeWorkerOptions options() {
        EncodeWorkerOptions o;
        o.idle_wait = 20;
        return o;
    }
    EncodeWorker worker_;
    std::thread thread_;
};

// Polls the image's status until its encode has finished (completed or failed), for at most
// 60 s; returns the last status.
json wait_for_encode(Client& client, const std::string& id) {
    json status;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        status = json::parse(client.send(http::verb::get, "/api/v1/images/" + id).body());
        if (status["status"] == "completed" || status["status"] == "failed") break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return status;
}

TEST(ServiceServer, UploadEncodeInferAndSessionOverHttp) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    BackgroundEncoder encoder(f);
    Server server(*f.api, loopback_options());
    server.start();

    Client client(server.port());
    auto uploaded = client.send(http::verb::post, "/api/v1/images", test::test_png(7));
    ASSERT_EQ(uploaded.result_int(), 201) << uploaded.body();
    const std::string id = json::parse(uploaded.body())["id"];
    ASSERT_EQ(wait_for_encode(client, id)["status"], "completed");

    // The same image as the file part of a multipart/form-data body: the same id.
    auto multipart = client.send(http::verb::post, "/api/v1/images",
                                 "--zz\r\nContent-Disposition: form-data; name=\"image\"; "
                                 "filename=\"x.png\"\r\n\r\n" +
                                     test::test_png(7) + "\r\n--zz--\r\n",
                                 "multipart/form-data; boundary=zz");
    EXPECT_EQ(multipart.result_int(), 200) << multipart.body();
    EXPECT_EQ(json::parse(multipart.body())["id"], id);

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

    // The same session over a WebSocket: a click, an undo, and a message of an unknown type.
    EXPECT_EQ(client.send(http::verb::get, "/api/v1/sessions/" + sid + "/ws").result_int(), 426);
    std::vector<Client::SocketReply> replies;
    EXPECT_EQ(Client(server.port())
                  .websocket_exchange("/api/v1/sessions/" + sid + "/ws",
                                      {R"({"type":"prompts","id":7,"points":[[10,10,0]]})",
                                       R"({"type":"undo"})", R"({"type":"paint"})"},
                                      &replies),
              "");
    ASSERT_EQ(replies.size(), 3u);
    const json clicked = json::parse(replies[0].text);
    EXPECT_EQ(clicked["type"], "prompts");
    EXPECT_EQ(clicked["id"], 7);
    EXPECT_EQ(clicked["status"], 200);
    EXPECT_EQ(clicked["body"]["steps"], 2);
    EXPECT_FALSE(clicked.contains("frames"));  // JSON masks unless binary is asked for
    EXPECT_EQ(json::parse(replies[1].text)["body"]["steps"], 1);
    EXPECT_EQ(json::parse(replies[2].text)["status"], 400);
    for (const auto& reply : replies) EXPECT_TRUE(reply.frames.empty());

    // Binary masks: the same first click as COCO RLE and as binary frames must be the same
    // masks; an undo back to a binary step sends its frames again; HTTP refuses binary.
    const std::string socket = "/api/v1/sessions/" + sid + "/ws";
    const std::string first_click = R"("points":[[40,20,1]],"multimask":true)";
    replies.clear();
    EXPECT_EQ(
        Client(server.port())
            .websocket_exchange(
                socket,
                {R"({"type":"reset"})", "{\"type\":\"prompts\"," + first_click + "}",
                 R"({"type":"reset"})",
                 "{\"type\":\"prompts\",\"id\":\"b\",\"output\":\"binary\"," + first_click + "}",
                 R"({"type":"prompts","output":"binary","points":[[5,5,0]]})",
                 R"({"type":"undo"})"},
                &replies),
        "");
    ASSERT_EQ(replies.size(), 6u);
    const json rle = json::parse(replies[1].text);
    const json bin = json::parse(replies[3].text);
    ASSERT_EQ(rle["status"], 200) << replies[1].text;
    ASSERT_EQ(bin["status"], 200) << replies[3].text;
    EXPECT_EQ(bin["id"], "b");
    ASSERT_EQ(rle["body"]["masks"].size(), 3u);
    ASSERT_EQ(bin["body"]["masks"].size(), 3u);
    EXPECT_EQ(bin["frames"], 3);
    ASSERT_EQ(replies[3].frames.size(), 3u);
    int64_t inside = 0;  // the masks compared are not all empty
    for (size_t i = 0; i < 3; ++i) {
        const json& by_rle = rle["body"]["masks"][i];
        const json& by_frame = bin["body"]["masks"][i];
        EXPECT_FALSE(by_frame.contains("rle"));
        EXPECT_EQ(by_frame["score"], by_rle["score"]);
        EXPECT_EQ(by_frame["bbox"], by_rle["bbox"]);
        const MaskFrame frame = decode_mask_frame(replies[3].frames[by_frame["frame"]]);
        EXPECT_EQ(frame.sequence, bin["seq"]);
        EXPECT_EQ(frame.mask_index, i);
        ASSERT_EQ(frame.width, 64);
        ASSERT_EQ(frame.height, 48);
        const std::vector<uint8_t> expected =
            test::coco_rle_decode(by_rle["rle"]["counts"], frame.width, frame.height);
        EXPECT_EQ(frame.mask, expected) << "mask " << i;
        EXPECT_EQ(std::count(expected.begin(), expected.end(), 1), by_rle["area"]);
        inside += by_rle["area"].get<int64_t>();
    }
    EXPECT_GT(inside, 0);
    EXPECT_EQ(json::parse(replies[4].text)["frames"], 1);  // later clicks: the best mask only
    ASSERT_EQ(replies[4].frames.size(), 1u);
    const json undone = json::parse(replies[5].text);
    EXPECT_EQ(undone["body"]["steps"], 1);
    ASSERT_EQ(replies[5].frames.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        const MaskFrame again = decode_mask_frame(replies[5].frames[i]);
        EXPECT_EQ(again.sequence, undone["seq"]);
        EXPECT_EQ(again.mask, decode_mask_frame(replies[3].frames[i]).mask);
    }
    const auto over_http = client.send(http::verb::post, "/api/v1/sessions/" + sid + "/prompts",
                                       R"({"points":[[32,24,1]],"output":"binary"})");
    EXPECT_EQ(over_http.result_int(), 400);

    // An open WebSocket whose client never answers the closing handshake: stop() closes it
    // after the handshake timeout.
    Client held(server.port());
    const std::string upgraded = upgrade_by_hand(held, sid);
    EXPECT_EQ(upgraded.rfind("HTTP/1.1 101", 0), 0u) << upgraded;
    EXPECT_EQ(client.send(http::verb::delete_, "/api/v1/sessions/" + sid).result_int(), 204);

    const auto start = std::chrono::steady_clock::now();
    server.stop();
    server.wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// The upload reads only the image header on the io thread. A JPEG cut after a good header is
// accepted; the encode worker then fails it, its status says why in JSON, and the server and the
// worker carry on with the next image.
TEST(ServiceServer, ImageDataCutAfterAGoodHeaderFailsItsEncodeNotTheServer) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    BackgroundEncoder encoder(f);
    Server server(*f.api, loopback_options());
    server.start();

    std::vector<uint8_t> pixels(size_t{320} * 240 * 3);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7 % 251);
    const std::vector<uint8_t> jpeg = test::make_jpeg(pixels.data(), 320, 240);
    const std::string cut(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
    Client client(server.port());
    auto uploaded = client.send(http::verb::post, "/api/v1/images", cut, "image/jpeg");
    ASSERT_EQ(uploaded.result_int(), 201) << uploaded.body();
    const std::string id = json::parse(uploaded.body())["id"];

    const json status = wait_for_encode(client, id);
    EXPECT_EQ(status["status"], "failed") << status;
    ASSERT_TRUE(status.contains("error") && status["error"].is_string()) << status;
    EXPECT_NE(status["error"].get<std::string>().find("JPEG"), std::string::npos) << status;
    EXPECT_EQ(status["width"], 320);
    EXPECT_EQ(status["height"], 240);
    auto session = client.send(http::verb::post, "/api/v1/sessions", json{{"image_id", id}}.dump());
    EXPECT_EQ(session.result_int(), 409) << session.body();
    EXPECT_EQ(json::parse(session.body())["error"]["code"], "not_encoded");

    EXPECT_EQ(client.send(http::verb::get, "/healthz").result_int(), 200);
    auto good = client.send(http::verb::post, "/api/v1/images", test::test_png(3));
    ASSERT_EQ(good.result_int(), 201) << good.body();
    EXPECT_EQ(wait_for_encode(client, json::parse(good.body())["id"])["status"], "completed");
}

// Where a test holds a call: once armed, pass() waits until open(); wait_for_arrival() tells the
// test that a call is waiting.
class Gate {
  public:
    explicit Gate(bool armed) : armed_(armed) {}
    void arm() {
        std::lock_guard lock(mutex_);
        armed_ = true;
    }
    // True once a call waits at the armed gate; false if none came within 10 s.
    bool wait_for_arrival() {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, std::chrono::seconds(10), [&] { return arrived_; });
    }
    void open() {
        std::lock_guard lock(mutex_);
        open_ = true;
        changed_.notify_all();
    }
    void pass() {
        std::unique_lock lock(mutex_);
        if (!armed_) return;
        arrived_ = true;
        changed_.notify_all();
        changed_.wait(lock, [&] { return open_; });
    }

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool armed_, arrived_ = false, open_ = false;
};

// A job queue whose enqueue() waits at a gate until the test opens it. The upload route enqueues
// after it has stored the image, so an upload held there is one whose handler has done its disk
// work and not yet answered: an upload on a slow disk, held for as long as the test needs.
class GatedJobQueue final : public JobQueue {
  public:
    explicit GatedJobQueue(std::shared_ptr<JobQueue> inner) : inner_(std::move(inner)) {}

    // True once an enqueue() waits at the gate; false if none came within 10 s.
    bool wait_for_arrival() { return gate_.wait_for_arrival(); }
    void open() { gate_.open(); }

    EnqueueResult enqueue(const EnqueueRequest& request) override {
        gate_.pass();
        return inner_->enqueue(request);
    }
    std::optional<Job> lease(const std::string& worker_id, Millis lease_duration) override {
        return inner_->lease(worker_id, lease_duration);
    }
    bool heartbeat(JobId id, const std::string& worker_id, Millis lease_duration) override {
        return inner_->heartbeat(id, worker_id, lease_duration);
    }
    bool complete(JobId id, const std::string& worker_id) override {
        return inner_->complete(id, worker_id);
    }
    bool fail(JobId id, const std::string& worker_id, const std::string& error,
              bool permanent) override {
        return inner_->fail(id, worker_id, error, permanent);
    }
    std::optional<Job> get(JobId id) override { return inner_->get(id); }
    std::optional<Job> find(const std::string& tenant, const std::string& image_id,
                            const std::string& model_hash) override {
        return inner_->find(tenant, image_id, model_hash);
    }
    std::vector<Job> get_many(const std::vector<JobId>& ids) override {
        return inner_->get_many(ids);
    }
    bool remove(JobId id) override { return inner_->remove(id); }
    Batch create_batch(const BatchRequest& request) override {
        return inner_->create_batch(request);
    }
    std::optional<BatchProgress> batch_progress(int64_t batch_id) override {
        return inner_->batch_progress(batch_id);
    }
    QueueStats stats() override { return inner_->stats(); }

  private:
    std::shared_ptr<JobQueue> inner_;
    Gate gate_{/*armed=*/true};
};

std::future<http::response<http::string_body>> upload_in_background(uint16_t port,
                                                                    const std::string& image) {
    return std::async(std::launch::async, [port, image] {
        return Client(port).send(http::verb::post, "/api/v1/images", image, "image/png");
    });
}

template <class T>
bool answered(const std::future<T>& request) {
    return request.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

// A server on the golden model with one io thread and one disk thread, its uploads held at
// the gate. The gate opens when the test ends, however it ends, so that a held upload finishes
// and the server can stop.
struct GatedServer {
    GatedServer()
        : f(test::tiny_model(), {}, {},
            [this](ApiOptions& o) {
                gate = std::make_shared<GatedJobQueue>(o.jobs);
                o.jobs = gate;
            }),
          server(*f.api, options()) {
        server.start();
    }
    static ServerOptions options() {
        ServerOptions o = loopback_options();
        o.threads = 1;  // every connection shares it
        o.disk_threads = 1;
        return o;
    }
    ~GatedServer() { gate->open(); }
    // Starts uploading test PNG `seed` and waits until the upload is held at the gate; false if
    // it never gets there.
    bool hold_upload(int seed) {
        upload = upload_in_background(server.port(), test::test_png(seed));
        return gate->wait_for_arrival();
    }
    // The stored image, under the data directory's images/<tenant>/<id>.
    std::string image_path(const std::string& id) const {
        return f.dir.path() + "/images/default/" + id;
    }

    std::shared_ptr<GatedJobQueue> gate;
    test::ApiFixture f;
    Server server;
    std::future<http::response<http::string_body>> upload;  // the held one
};

// An upload waiting on the disk must not hold the io thread: with one io thread, /healthz is
// answered while the upload's handler waits (had the handler run on the io thread, /healthz
// would get no answer and the client would give up after 10 s), and the upload's 201 comes
// only once its handler has finished, with the image stored.
TEST(ServiceServer, AnUploadWaitingOnTheDiskDoesNotHoldTheIoThread) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    GatedServer s;
    ASSERT_TRUE(s.hold_upload(11)) << "the upload never reached its enqueue";

    Client other(s.server.port());
    auto health = other.send(http::verb::get, "/healthz");
    EXPECT_EQ(health.result_int(), 200);
    // A route of the io threads (an image's status now waits on the disk threads, behind the
    // upload: it queries the job queue).
    auto session = other.send(http::verb::get, "/api/v1/sessions/0123456789abcdef");
    EXPECT_EQ(session.result_int(), 404) << session.body();
    EXPECT_FALSE(answered(s.upload)) << "answered before its handler finished";

    s.gate->open();
    auto uploaded = s.upload.get();
    ASSERT_EQ(uploaded.result_int(), 201) << uploaded.body();
    const std::string id = json::parse(uploaded.body())["id"];
    EXPECT_TRUE(std::filesystem::is_regular_file(s.image_path(id)));
    EXPECT_TRUE(std::filesystem::is_regular_file(s.image_path(id) + ".json"));
    // The same bytes again: found by their hash, stored once.
    auto again = other.send(http::verb::post, "/api/v1/images", test::test_png(11), "image/png");
    EXPECT_EQ(again.result_int(), 200) << again.body();
    EXPECT_EQ(json::parse(again.body())["id"], id);
}

// A cache tier whose reads wait at a gate once it is armed, as a slow remote tier would.
class GatedTier final : public BlobStore {
  public:
    void arm() { gate_.arm(); }
    // True once a get() waits at the armed gate; false if none came within 10 s.
    bool wait_for_arrival() { return gate_.wait_for_arrival(); }
    void open() { gate_.open(); }

    std::optional<Blob> get(const std::string& key) override {
        gate_.pass();
        return inner_.get(key);
    }
    void put(const std::string& key, std::span<const uint8_t> bytes) override {
        inner_.put(key, bytes);
    }
    void remove(const std::string& key) override { inner_.remove(key); }
    bool contains(const std::string& key) override { return inner_.contains(key); }
    std::vector<BlobInfo> list() override { return inner_.list(); }
    StoreStats stats() override { return inner_.stats(); }
    std::string describe() const override { return "gated " + inner_.describe(); }

  private:
    MemoryStore inner_{64u << 20};
    Gate gate_{/*armed=*/false};
};

// A server with one io thread whose cache is one GatedTier, holding an uploaded, encoded image.
struct SlowTierServer {
    explicit SlowTierServer(int seed, size_t prepared_images = 8)
        : f(test::tiny_model(), {}, {},
            [this, prepared_images](ApiOptions& o) {
                o.prepared_images = prepared_images;
                auto gated = std::make_unique<GatedTier>();
                tier = gated.get();
                std::vector<std::unique_ptr<BlobStore>> tiers;
                tiers.push_back(std::move(gated));
                o.cache = std::make_shared<EmbeddingCache>(
                    std::make_shared<TieredStore>(std::move(tiers)));
            }),
          server(*f.api, GatedServer::options()) {
        server.start();
        client.emplace(server.port());
        auto uploaded =
            client->send(http::verb::post, "/api/v1/images", test::test_png(seed), "image/png");
        EXPECT_EQ(uploaded.result_int(), 201) << uploaded.body();
        id = json::parse(uploaded.body()).value("id", "");
        f.encode_all();
    }
    ~SlowTierServer() { tier->open(); }
    // Runs send() on another thread once the tier is armed, and waits until it reads the tier:
    // /healthz must then be answered on this client while send() has not returned.
    template <class Send>
    auto held(const std::string& what, Send send) {
        tier->arm();
        auto request = std::async(std::launch::async, std::move(send));
        EXPECT_TRUE(tier->wait_for_arrival()) << what << " never read the cache";
        EXPECT_EQ(client->send(http::verb::get, "/healthz").result_int(), 200);
        EXPECT_FALSE(answered(request)) << "answered before the cache read finished";
        tier->open();
        return request;
    }
    // The same for an HTTP request.
    std::future<http::response<http::string_body>> held(http::verb verb, std::string target,
                                                        std::string body) {
        const uint16_t port = server.port();
        return held(target, [port, verb, target, body] {
            return Client(port).send(verb, target, body, "application/json");
        });
    }

    GatedTier* tier = nullptr;
    test::ApiFixture f;
    Server server;
    std::optional<Client> client;  // connected once the server runs
    std::string id;
};

// Starting a session reads the embedding from the cache's tiers, which may be remote: with one
// io thread, /healthz is answered while POST /sessions waits on a slow tier, and the session
// is created once the read finishes.
TEST(ServiceServer, StartingASessionOnASlowTierDoesNotHoldTheIoThread) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    SlowTierServer s(14);
    auto session =
        s.held(http::verb::post, "/api/v1/sessions", json{{"image_id", s.id}}.dump()).get();
    ASSERT_EQ(session.result_int(), 201) << session.body();
    EXPECT_EQ(json::parse(session.body())["image_id"], s.id);
}

// A stateless infer on an image whose decoder state is not prepared reads the embedding from the
// tiers: it waits off the io thread, on a disk thread; once prepared, the next infer on the image
// needs no tier and runs on a compute thread.
TEST(ServiceServer, AnInferThatReadsASlowTierDoesNotHoldTheIoThread) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    SlowTierServer s(15);
    const std::string target = "/api/v1/images/" + s.id + "/infer";
    const std::string click = json{{"points", {{10, 10, 1}}}}.dump();
    EXPECT_EQ(s.f.api->pool_for(test::make_request("POST", target)), Api::Pool::disk);
    auto masks = s.held(http::verb::post, target, click).get();
    ASSERT_EQ(masks.result_int(), 200) << masks.body();
    EXPECT_EQ(s.f.api->pool_for(test::make_request("POST", target)), Api::Pool::compute);
    EXPECT_EQ(s.client->send(http::verb::post, target, click, "application/json").result_int(),
              200);
}

// A session's click over its WebSocket whose image has left the prepared images (one kept here)
// reads the embedding from the tiers again: the message waits on a disk thread, and /healthz is
// answered on the one io thread meanwhile.
TEST(ServiceServer, ASocketClickWhoseImageIsNoLongerPreparedDoesNotHoldTheIoThread) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    SlowTierServer s(16, /*prepared_images=*/1);
    auto session = s.client->send(http::verb::post, "/api/v1/sessions",
                                  json{{"image_id", s.id}}.dump(), "application/json");
    ASSERT_EQ(session.result_int(), 201) << session.body();
    const std::string socket =
        "/api/v1/sessions/" + json::parse(session.body())["session_id"].get<std::string>() + "/ws";
    EXPECT_EQ(s.f.api->pool_for_message(test::make_request("GET", socket)), Api::Pool::compute);
    // Another image's infer takes the one prepared place.
    auto other =
        s.client->send(http::verb::post, "/api/v1/images", test::test_png(17), "image/png");
    ASSERT_EQ(other.result_int(), 201) << other.body();
    s.f.encode_all();
    const std::string other_id = json::parse(other.body())["id"];
    EXPECT_EQ(s.client
                  ->send(http::verb::post, "/api/v1/images/" + other_id + "/infer",
                         json{{"points", {{10, 10, 1}}}}.dump(), "application/json")
                  .result_int(),
              200);
    EXPECT_EQ(s.f.api->pool_for_message(test::make_request("GET", socket)), Api::Pool::disk);

    const uint16_t port = s.server.port();
    auto click = s.held(socket, [port, socket] {
        std::vector<Client::SocketReply> replies;
        const std::string error = Client(port).websocket_exchange(
            socket, {R"({"type":"prompts","points":[[20,12,1]]})"}, &replies);
        return std::make_pair(error, replies);
    });
    const auto [error, replies] = click.get();
    EXPECT_EQ(error, "");
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_EQ(json::parse(replies[0].text)["status"], 200) << replies[0].text;
}

// stop() while an upload waits on the disk: the upload still gets its 201 (on a connection the
// server then closes), and wait() returns once it has.
TEST(ServiceServer, StopLetsAnUploadWaitingOnTheDiskFinish) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    GatedServer s;
    ASSERT_TRUE(s.hold_upload(12)) << "the upload never reached its enqueue";

    s.server.stop();
    s.gate->open();
    auto uploaded = s.upload.get();
    ASSERT_EQ(uploaded.result_int(), 201) << uploaded.body();
    EXPECT_FALSE(uploaded.keep_alive());
    const auto start = std::chrono::steady_clock::now();
    s.server.wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
    const std::string id = json::parse(uploaded.body())["id"];
    EXPECT_TRUE(std::filesystem::is_regular_file(s.image_path(id)));
}

// A disk that fails the write (here: a file stands where the tenant's image folder goes) is a
// JSON 500 from the disk thread, as on the io thread before, and the server carries on.
TEST(ServiceServer, AnUploadThatCannotBeStoredIsAJson500) {
    SPLITSEG_REQUIRE_TINY_MODEL();
    test::ApiFixture f(test::tiny_model());
    std::filesystem::create_directories(f.dir.file("images"));
    std::ofstream(f.dir.file("images/default")) << "not a folder";
    Server server(*f.api, loopback_options());
    server.start();

    Client client(server.port());
    auto uploaded = client.send(http::verb::post, "/api/v1/images", test::test_png(13));
    EXPECT_EQ(uploaded.result_int(), 500) << uploaded.body();
    EXPECT_EQ(uploaded[http::field::content_type], "application/json");
    EXPECT_EQ(json::parse(uploaded.body())["error"]["code"], "internal");
    EXPECT_EQ(client.send(http::verb::get, "/healthz").result_int(), 200);  // same connection
}

}  // namespace
}  // namespace splitseg
