#include "service/server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

namespace splitseg {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

Request to_request(const http::request<http::string_body>& req) {
    Request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) {
        std::string name(field.name_string());
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        r.headers[name] = std::string(field.value());
    }
    r.body = req.body();
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
    const nlohmann::json line = {{"ts", std::time(nullptr)},
                                 {"method", method},
                                 {"path", target.substr(0, target.find('?'))},
                                 {"status", status},
                                 {"ms", std::round(ms * 100) / 100}};
    std::fprintf(stderr, "%s\n", line.dump().c_str());
}

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
    void close_idle_sessions();

    Api& api;
    ServerOptions options;
    net::io_context ioc;
    tcp::acceptor acceptor;
    net::signal_set signals;
    std::vector<std::thread> threads;
    std::atomic<bool> stopping{false};
    std::mutex sessions_mutex;  // guards sessions
    std::list<std::weak_ptr<HttpSession>> sessions;
};

// One connection: reads a request, answers it, and reads the next while the client keeps the
// connection alive.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
  public:
    HttpSession(tcp::socket&& socket, Server::Impl& server)
        : stream_(std::move(socket)), server_(server) {}

    ~HttpSession() {
        std::lock_guard lock(server_.sessions_mutex);
        server_.sessions.erase(registration_);
    }

    void start(std::list<std::weak_ptr<HttpSession>>::iterator registration) {
        registration_ = registration;
        net::dispatch(stream_.get_executor(),
                      beast::bind_front_handler(&HttpSession::do_read, shared_from_this()));
    }

    // From stop(): a connection waiting for its next request is closed; one with a request in
    // flight finishes it first (on_write closes it).
    void close_if_idle() {
        net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
            if (self->waiting_ && !self->parser_->got_some()) self->close();
        });
    }

  private:
    void do_read() {
        parser_.emplace();
        parser_->body_limit(server_.options.body_limit);
        stream_.expires_after(server_.options.read_timeout);
        waiting_ = true;
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        waiting_ = false;
        if (ec == http::error::body_limit) {
            const std::string limit = std::to_string(server_.options.body_limit);
            keep_alive_ = false;  // the rest of the body is still on the wire
            res_ = to_beast(server_.api.error(413, "body_too_large",
                                              "bodies are limited to " + limit + " bytes"),
                            11, false);
            res_.keep_alive(false);
            return do_write();
        }
        if (ec) return close();  // end of stream, timeout or a malformed request
        const auto start = std::chrono::steady_clock::now();
        const http::request<http::string_body>& req = parser_->get();
        Response response = server_.api.handle(to_request(req));
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        if (server_.options.log_requests) {
            log_request(std::string(req.method_string()), std::string(req.target()),
                        response.status, ms);
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
        if (!keep_alive_ || server_.stopping) return close();
        do_read();
    }

    void close() {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.socket().close(ignored);
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> res_;
    Server::Impl& server_;
    std::list<std::weak_ptr<HttpSession>>::iterator registration_;
    bool waiting_ = false;  // in async_read, between requests
    bool keep_alive_ = false;
};

void Server::Impl::do_accept() {
    acceptor.async_accept(net::make_strand(ioc), beast::bind_front_handler(&Impl::on_accept, this));
}

void Server::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (!ec) {
        auto session = std::make_shared<HttpSession>(std::move(socket), *this);
        std::list<std::weak_ptr<HttpSession>>::iterator registration;
        {
            std::lock_guard lock(sessions_mutex);
            registration = sessions.insert(sessions.end(), session);
        }
        session->start(registration);
    }
    do_accept();  // an error on one connection (e.g. too many open files) is not fatal
}

void Server::Impl::close_idle_sessions() {
    // Collected under the lock, closed outside it: a session may be destroyed as the last
    // reference here drops, and its destructor takes the lock.
    std::vector<std::shared_ptr<HttpSession>> alive;
    {
        std::lock_guard lock(sessions_mutex);
        for (const std::weak_ptr<HttpSession>& weak : sessions)
            if (auto session = weak.lock()) alive.push_back(std::move(session));
    }
    for (const auto& session : alive) session->close_if_idle();
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
}

void Server::stop() {
    if (impl_->stopping.exchange(true)) return;
    net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
        beast::error_code ignored;
        impl->acceptor.close(ignored);
        impl->signals.cancel(ignored);
        impl->close_idle_sessions();
    });
}

void Server::wait() {
    for (std::thread& t : impl_->threads)
        if (t.joinable()) t.join();
    impl_->threads.clear();
}

}  // namespace splitseg
