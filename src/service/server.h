// The HTTP server: Boost.Beast over a fixed pool of io threads, carrying requests to Api::handle.
// One HttpSession per connection; every read and write has a timeout; the body limit is set on
// the parser before reading. The io threads only read, route and write: decodes (a session's
// prompts, over HTTP or its WebSocket, and stateless infers) run on the compute threads, in the
// order they arrive, and requests that wait on the stores (Api::pool_for: uploads, deletes,
// encodes, embedding downloads, session starts, decodes whose image must first be read from a
// tier) on the disk threads. Their answers are written back on their connection's strand, so a
// decode or a remote tier's read never holds up another connection's bytes.
// stop() stops accepting, lets requests in flight finish and closes idle keep-alive
// connections; wait() then joins the three pools.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "service/api.h"

namespace splitseg {

struct ServerOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 8080;  // 0: an ephemeral port, see Server::port()
    int threads = 4;
    int compute_threads = 0;  // decodes run here, in arrival order; 0: one per core
    int disk_threads = 2;     // requests that wait on the stores run here, in parallel
    size_t body_limit = 32u << 20;
    std::chrono::seconds read_timeout{30};
    std::chrono::seconds write_timeout{30};
    // WebSocket opening and closing handshakes; bounds how long stop() waits for a silent peer.
    std::chrono::milliseconds websocket_handshake_timeout{3000};
    // A WebSocket that sends nothing for this long, and answers no ping sent halfway, is closed.
    std::chrono::seconds websocket_idle_timeout{300};
    bool log_requests = true;      // one JSON line per request on stderr
    bool stop_on_signals = false;  // SIGINT and SIGTERM call stop()
};

class Server {
  public:
    // Binds and listens at once; throws std::runtime_error when the address cannot be used.
    Server(Api& api, ServerOptions options);
    ~Server();  // stop() and wait()
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    uint16_t port() const;
    void start();  // starts the io, compute and disk threads
    void stop();   // thread-safe, idempotent
    void wait();   // returns once the pools have ended (after stop())

    struct Impl;  // opaque: the connections in server.cpp share it

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace splitseg
