#include "service/server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cctype>
#include <cmath>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "service/log.h"

namespace splitseg {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

// The body moves out of `req`: an upload's megabytes are not copied.
Request to_request(http::request<http::string_body>& req) {
    Request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) {
        std::string name(field.name_string());
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        r.headers[name] = std::string(field.value());
    }
    r.body = std::move(req.body());
    return r;
}

http::response<http::string_body> to_beast(Response&& response, unsigned version, bool head) {
    http::response<http::string_body> res{static_cast<http::status>(response.status), version};
    for (const auto& [name, value] : response.headers) res.set(name, value);
    if (head) {  // HEAD: the length of the body a GET would send, and no body
        res.content_length(response.body.size());
    } else {
        res.body() = std::move(response.body);
        res.prepare_payload();
    }
    return res;
}

void log_request(const std::string& method, const std::string& target, int status, double ms) {
    log_json({{"event", "request"},
              {"method", method},
              {"path", target.substr(0, target.find('?'))},
              {"status", status},
              {"ms", std::round(ms * 100) / 100}});
}

}  // namespace

class Connection;

namespace {

// A fixed pool of threads draining one queue of handlers, in the order they were posted. `work`
// keeps the threads waiting for more until join().
struct HandlerPool {
    net::io_context ioc;
    net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(ioc);
    std::vector<std::thread> threads;

    void start(int n) {
        for (int i = 0; i < std::max(1, n); ++i) threads.emplace_back([this] { ioc.run(); });
    }
    void join() {
        work.reset();
        for (std::thread& t : threads)
            if (t.joinable()) t.join();
        threads.clear();
    }
};

}  // namespace

struct Server::Impl {
    Impl(Api& api_, ServerOptions options_)
        : api(api_),
          options(std::move(options_)),
          ioc(std::max(1, options.threads)),
          acceptor(net::make_strand(ioc)),
          signals(ioc) {}

    void do_accept();
    void on_accept(beast::error_code ec, tcp::socket socket);
    void close_idle_connections();
    // The pool that runs what Api::pool_for names; null for the io threads.
    net::io_context* pool(Api::Pool p) {
        return p == Api::Pool::compute ? &compute.ioc : p == Api::Pool::disk ? &disk.ioc : nullptr;
    }

    Api& api;
    ServerOptions options;
    net::io_context ioc;
    tcp::acceptor acceptor;
    net::signal_set signals;
    std::vector<std::thread> threads;
    HandlerPool compute, disk;  // see Api::Pool
    std::atomic<bool> stopping{false};
    std::mutex connections_mutex;  // guards connections
    std::list<std::weak_ptr<Connection>> connections;
};

// What the server tracks of every open connection (HTTP or WebSocket), to close them on stop().
class Connection {
  public:
    explicit Connection(Server::Impl& server) : server_(server) {}
    virtual ~Connection() {
        std::lock_guard lock(server_.connections_mutex);
        server_.connections.erase(registration_);
    }
    // Closes the connection if it is waiting for the peer; one busy with a request finishes it.
    virtual void close_if_idle() = 0;

    static void track(const std::shared_ptr<Connection>& c) {
        std::lock_guard lock(c->server_.connections_mutex);
        c->registration_ = c->server_.connections.insert(c->server_.connections.end(), c);
    }

  protected:
    // Runs work() where the API puts the request (`where`: on this io thread, or posted to a
    // pool; nothing else touches the connection meanwhile) and then(result) on the
    // connection's strand. The work guard keeps the io threads running until `then` is there,
    // through a stop() in between too.
    template <class Work, class Then>
    void run_then(Api::Pool where, const net::any_io_executor& strand, Work work, Then then) {
        net::io_context* pool = server_.pool(where);
        if (!pool) return then(work());
        net::post(*pool, [strand, work = std::move(work), then = std::move(then),
                          guard = net::make_work_guard(server_.ioc)]() mutable {
            net::post(strand, [then = std::move(then), result = work()]() mutable {
                then(std::move(result));
            });
        });
    }

    Server::Impl& server_;

  private:
    std::list<std::weak_ptr<Connection>>::iterator registration_;
};

// A session's WebSocket: each text message is answered by Api::session_message, in order: its
// text frame, then its binary mask frames if any, before the next message is read.
class WebSocketSession : public Connection, public std::enable_shared_from_this<WebSocketSession> {
  public:
    WebSocketSession(beast::tcp_stream&& stream, Server::Impl& server, Request upgrade)
        : Connection(server), ws_(std::move(stream)), upgrade_(std::move(upgrade)) {}

    void close_if_idle() override {
        net::dispatch(ws_.get_executor(), [self = shared_from_this()] {
            if (self->waiting_ && self->ws_.is_open()) {
                self->ws_.async_close(websocket::close_code::going_away,
                                      [self](beast::error_code) {});
            }
        });
    }

    void start(http::request<http::string_body> req) {
        beast::get_lowest_layer(ws_).expires_never();  // the websocket has its own timeouts
        auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
        timeouts.handshake_timeout = server_.options.websocket_handshake_timeout;
        timeouts.idle_timeout = server_.options.websocket_idle_timeout;
        timeouts.keep_alive_pings = true;
        ws_.set_option(timeouts);
        ws_.read_message_max(server_.options.body_limit);
        // A reply goes out as one frame in one write. Fragmented (Beast's default, 4 KB frames),
        // each fragment's write completes through the shared handler queue, so under load a
        // 100 KB reply waited behind other connections' decodes once per fragment.
        ws_.auto_fragment(false);
        ws_.async_accept(
            req, beast::bind_front_handler(&WebSocketSession::on_accept, shared_from_this()));
    }

  private:
    void on_accept(beast::error_code ec) {
        if (!ec) do_read();
    }

    void do_read() {
        if (server_.stopping) {  // stop() may have passed while the handshake ran
            return ws_.async_close(websocket::close_code::going_away,
                                   [self = shared_from_this()](beast::error_code) {});
        }
        buffer_.clear();
        waiting_ = true;
        ws_.async_read(buffer_,
                       beast::bind_front_handler(&WebSocketSession::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        waiting_ = false;
        if (ec) return;  // closed by the peer, a timeout, or the server stopping
        run_then(
            server_.api.pool_for_message(upgrade_), ws_.get_executor(),
            [self = shared_from_this(), text = beast::buffers_to_string(buffer_.data()),
             sequence = sequence_++] {
                return self->server_.api.session_message(self->upgrade_, text, sequence);
            },
            [self = shared_from_this()](Api::SocketReply reply) {
                self->reply_ = std::move(reply);
                self->next_frame_ = 0;
                self->ws_.text(true);
                self->ws_.async_write(net::buffer(self->reply_.text),
                                      beast::bind_front_handler(&WebSocketSession::on_write, self));
            });
    }

    void on_write(beast::error_code ec, size_t) {
        if (ec) return;
        if (next_frame_ == reply_.frames.size()) return do_read();
        ws_.binary(true);
        ws_.async_write(net::buffer(reply_.frames[next_frame_++]),
                        beast::bind_front_handler(&WebSocketSession::on_write, shared_from_this()));
    }

    websocket::stream<beast::tcp_stream> ws_;
    Request upgrade_;
    beast::flat_buffer buffer_;
    Api::SocketReply reply_;
    size_t next_frame_ = 0;  // the next of reply_.frames to write
    uint32_t sequence_ = 0;  // numbers the replies on this socket
    bool waiting_ = false;   // in async_read, between messages
};

// One connection: reads a request, answers it, and reads the next while the client keeps the
// connection alive.
class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
  public:
    HttpSession(tcp::socket&& socket, Server::Impl& server)
        : Connection(server), stream_(std::move(socket)), executor_(stream_.get_executor()) {}

    void start() {
        net::dispatch(stream_.get_executor(),
                      beast::bind_front_handler(&HttpSession::do_read, shared_from_this()));
    }

    // From stop(): a connection waiting for its next request is closed; one with a request in
    // flight finishes it first (on_write closes it).
    void close_if_idle() override {
        // executor_, not the stream's: the stream is moved out when it becomes a WebSocket.
        net::dispatch(executor_, [self = shared_from_this()] {
            if (self->waiting_ && !self->parser_->got_some()) self->close();
        });
    }

  private:
    void do_read() {
        if (server_.stopping) return close();  // stop() may have passed before the first read
        parser_.emplace();
        parser_->body_limit(server_.options.body_limit);
        stream_.expires_after(server_.options.read_timeout);
        waiting_ = true;
        http::async_read_header(
            stream_, buffer_, *parser_,
            beast::bind_front_handler(&HttpSession::on_header, shared_from_this()));
    }

    // A client that sends "Expect: 100-continue" (curl does for large uploads) waits for a
    // 100 Continue before sending the body.
    void on_header(beast::error_code ec, size_t bytes) {
        waiting_ = false;
        if (ec) return on_read(ec, bytes);
        if (!beast::iequals(parser_->get()[http::field::expect], "100-continue"))
            return read_body();
        continue_ = {http::status::continue_, parser_->get().version()};
        http::async_write(stream_, continue_,
                          [self = shared_from_this()](beast::error_code e, size_t) {
                              if (e) return self->close();
                              self->read_body();
                          });
    }

    void read_body() {
        stream_.expires_after(server_.options.read_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        waiting_ = false;
        if (ec == http::error::body_limit) {
            const std::string limit = std::to_string(server_.options.body_limit);
            keep_alive_ = false;
            drain_ = true;  // the rest of the body is still on the wire
            res_ = to_beast(server_.api.error(413, "body_too_large",
                                              "bodies are limited to " + limit + " bytes"),
                            11, false);
            res_.keep_alive(false);
            if (server_.options.log_requests) {
                log_request(std::string(parser_->get().method_string()),
                            std::string(parser_->get().target()), 413, 0);
            }
            return do_write();
        }
        if (ec) return close();  // end of stream, timeout or a malformed request
        request_ = to_request(parser_->get());
        run_then(
            server_.api.pool_for(request_), executor_,
            [self = shared_from_this()] { return self->call_api(); },
            [self = shared_from_this()](Handled handled) { self->on_handled(std::move(handled)); });
    }

    struct Handled {
        Response response;
        double ms;  // the time Api::handle took
    };

    Handled call_api() {
        const auto start = std::chrono::steady_clock::now();
        Response response = server_.api.handle(request_);
        return {std::move(response),
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count()};
    }

    void on_handled(Handled handled) {
        const http::request<http::string_body>& req = parser_->get();
        Response& response = handled.response;
        if (response.status == 101 && !websocket::is_upgrade(req)) {
            // The API allowed an upgrade that Beast cannot perform.
            response = server_.api.error(400, "bad_request", "not a valid WebSocket upgrade");
        }
        if (server_.options.log_requests) {
            log_request(std::string(req.method_string()), std::string(req.target()),
                        response.status, handled.ms);
        }
        if (response.status == 101) {
            // The connection becomes the WebSocket's; this session ends here.
            auto ws = std::make_shared<WebSocketSession>(std::move(stream_), server_,
                                                         std::move(request_));
            Connection::track(ws);
            ws->start(parser_->release());
            return;
        }
        keep_alive_ = req.keep_alive() && !server_.stopping;
        res_ = to_beast(std::move(response), req.version(), req.method() == http::verb::head);
        res_.keep_alive(keep_alive_);
        do_write();
    }

    void do_write() {
        stream_.expires_after(server_.options.write_timeout);
        http::async_write(stream_, res_,
                          beast::bind_front_handler(&HttpSession::on_write, shared_from_this()));
    }

    void on_write(beast::error_code ec, size_t) {
        if (ec) return close();
        if (drain_) return do_drain();
        if (!keep_alive_ || server_.stopping) return close();
        do_read();
    }

    // After refusing a request mid-body: stop sending and read the rest away (for a bounded
    // time), so that closing with unread data does not reset the connection before the client
    // has read the refusal.
    void do_drain() {
        if (!drain_started_) {
            drain_started_ = true;
            beast::error_code ignored;
            stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
            stream_.expires_after(std::chrono::seconds(2));
        }
        stream_.async_read_some(net::buffer(drain_buffer_),
                                [self = shared_from_this()](beast::error_code ec, size_t) {
                                    if (ec) return self->close();
                                    self->do_drain();
                                });
    }

    void close() {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.socket().close(ignored);
    }

    beast::tcp_stream stream_;
    const beast::tcp_stream::executor_type executor_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    Request request_;  // the request being handled, its body moved out of parser_
    http::response<http::string_body> res_;
    http::response<http::empty_body> continue_;
    bool waiting_ = false;  // in async_read, between requests
    bool keep_alive_ = false;
    bool drain_ = false, drain_started_ = false;
    std::array<char, 16384> drain_buffer_;
};

void Server::Impl::do_accept() {
    acceptor.async_accept(net::make_strand(ioc), beast::bind_front_handler(&Impl::on_accept, this));
}

void Server::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (!ec) {
        // Answers go out as soon as they are written: with Nagle's algorithm a reply written
        // while the peer still owed an ACK waited for its delayed ACK (~40 ms on a lone client).
        socket.set_option(tcp::no_delay(true), ec);
        auto session = std::make_shared<HttpSession>(std::move(socket), *this);
        Connection::track(session);
        session->start();
    }
    do_accept();  // an error on one connection (e.g. too many open files) is not fatal
}

void Server::Impl::close_idle_connections() {
    // Collected under the lock, closed outside it: a connection may be destroyed as the last
    // reference here drops, and its destructor takes the lock.
    std::vector<std::shared_ptr<Connection>> alive;
    {
        std::lock_guard lock(connections_mutex);
        for (const std::weak_ptr<Connection>& weak : connections)
            if (auto c = weak.lock()) alive.push_back(std::move(c));
    }
    for (const auto& c : alive) c->close_if_idle();
}

Server::Server(Api& api, ServerOptions options)
    : impl_(std::make_unique<Impl>(api, std::move(options))) {
    const ServerOptions& o = impl_->options;
    beast::error_code ec;
    const tcp::endpoint endpoint(net::ip::make_address(o.host, ec), o.port);
    if (ec) throw std::runtime_error("bad listen address " + o.host + ": " + ec.message());
    tcp::acceptor& a = impl_->acceptor;
    a.open(endpoint.protocol(), ec);
    if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) a.bind(endpoint, ec);
    if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
        throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                                 ": " + ec.message());
    }
    if (o.stop_on_signals) {
        impl_->signals.add(SIGINT);
        impl_->signals.add(SIGTERM);
        impl_->signals.async_wait([this](beast::error_code e, int) {
            if (!e) stop();
        });
    }
}

Server::~Server() {
    stop();
    wait();
}

uint16_t Server::port() const {
    return impl_->acceptor.local_endpoint().port();
}

void Server::start() {
    impl_->do_accept();
    for (int i = 0; i < std::max(1, impl_->options.threads); ++i)
        impl_->threads.emplace_back([this] { impl_->ioc.run(); });
    impl_->compute.start(impl_->options.compute_threads > 0
                             ? impl_->options.compute_threads
                             : static_cast<int>(std::thread::hardware_concurrency()));
    impl_->disk.start(impl_->options.disk_threads);
}

void Server::stop() {
    if (impl_->stopping.exchange(true)) return;
    net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
        beast::error_code ignored;
        impl->acceptor.close(ignored);
        impl->signals.cancel(ignored);
        impl->close_idle_connections();
    });
}

void Server::wait() {
    for (std::thread& t : impl_->threads)
        if (t.joinable()) t.join();
    impl_->threads.clear();
    // The io threads end only once every request's answer is written (a request on a pool
    // holds them with its work guard), so none is left for the pools.
    impl_->compute.join();
    impl_->disk.join();
}

}  // namespace splitseg
