// The HTTP API as a plain function from request to response: images, embeddings, stateless infer,
// interactive sessions, health, metrics and the OpenAPI document. It knows nothing of sockets;
// server.h carries its requests. Thread-safe: the server calls handle() from many threads.
//
// Errors are JSON, {"error":{"code":"...","message":"..."}}, with stable codes: bad_request,
// invalid_json, invalid_image, image_too_large, body_too_large, too_many_points, unauthorized,
// not_found, no_route, method_not_allowed, not_encoded, nothing_to_undo, range_not_satisfiable,
// upgrade_required, no_model, too_many_sessions, rate_limited, invalid_multipart,
// part_too_large, internal.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/segmenter.h"
#include "service/http_message.h"
#include "service/metrics.h"
#include "service/rate_limiter.h"
#include "service/session_store.h"
#include "service/static_files.h"
#include "store/embedding_cache.h"
#include "store/encode_worker.h"
#include "store/job_queue.h"

namespace splitseg {

struct ApiOptions {
    std::string data_dir;                    // uploaded images live under <data_dir>/images
    std::shared_ptr<const Segmenter> model;  // null: routes that need one answer 503 no_model
    std::shared_ptr<EmbeddingCache> cache;
    std::shared_ptr<JobQueue> jobs;
    // API key -> tenant. Empty: no authentication, every request is tenant "default".
    std::map<std::string, std::string> api_keys;
    std::string cors_origin = "*";
    size_t max_body_bytes = 32u << 20;
    size_t max_pixels = 64u << 20;
    size_t max_points = 64;
    size_t prepared_images = 8;  // decoder states kept for the most recently used images
    // Threads of a decode that starts while no other runs (one beside others; 0: all cores). One
    // by default: a team of two slows the decodes that arrive while it runs (their threads
    // spin-wait on each other on two cores); in paired load runs one thread gave the lower p99
    // click latency in 6 of 7 pairs (BENCHMARKS.md, session 9).
    int decode_threads = 1;
    SessionStoreOptions sessions;
    RateLimitOptions rate_limit;             // requests per API key (per tenant without keys)
    std::shared_ptr<const StaticFiles> web;  // the web client at "/"; null: none
    // The browser's decoder weights (`splitseg models extract-decoder`) for the loaded model,
    // served at /api/v1/models/{name}/decoder; "": none.
    std::string decoder_path;
};

// Reads {"keys":{"KEY":"tenant",...}}; tenants are 1-64 characters of [A-Za-z0-9_-].
// Throws std::runtime_error naming the problem.
std::map<std::string, std::string> load_api_keys(const std::string& path);

class Api {
  public:
    explicit Api(ApiOptions options);
    ~Api();

    Response handle(const Request& request);
    // Which of the server's thread pools answers a request. The io threads only read, route and
    // write, so that a decode or a store's wait never holds up the other connections' bytes:
    //  - disk: handle() would wait on the stores: an upload writes and fsyncs the image before
    //    answering, a (re)encode or a batch commits its jobs, a delete removes files, an image's
    //    or a batch's status queries the job queue (SQLite's file, or PostgreSQL over the
    //    network) and asks the tiers whether they hold the embedding (up to 1000 images a
    //    request), the browser's decoder weights are read from disk, and an embedding download
    //    or a session's start (which also prepares the decoder's state for the image) may read a
    //    disk or a remote tier, as does a decode on an image whose decoder state is not prepared.
    //  - compute: a decode on a prepared image (a stateless infer, a session's prompts), and the
    //    session routes that take the session's lock, which a decode holds.
    //  - io: the rest (health, metrics, the OpenAPI document, deleting a session).
    enum class Pool { io, compute, disk };
    Pool pool_for(const Request& request);
    // The same for a message on the WebSocket of the session that `upgrade` opened.
    Pool pool_for_message(const Request& upgrade);
    // An error in the API's format with its usual headers, for failures found before a request
    // reaches handle() (a body over the limit).
    Response error(int status, const std::string& code, const std::string& message) const;

    // A WebSocket message on a session's socket (opened by a GET .../sessions/{sid}/ws upgrade,
    // which handle() accepts with status 101), answered as the session route of its type would:
    // {"type":"prompts", "points":..., "box":...}, {"type":"undo"}, {"type":"reset"} or
    // {"type":"state"}. The reply: {"type", "status", "body", "seq"} plus the message's "id" if
    // any. A prompts message with "output": "binary" has its masks sent as binary frames
    // (service/mask_frame.h) after the text, which then says "frames": n and gives each mask the
    // index of its frame; `sequence` numbers the replies on one socket and is in every frame.
    struct SocketReply {
        std::string text;
        std::vector<std::string> frames;  // binary, in order, after the text
    };
    SocketReply session_message(const Request& upgrade, const std::string& text, uint32_t sequence);

    // The encode worker's job: decodes the uploaded image, encodes it and caches the bundle.
    void encode_job(JobLease& lease);

    struct Route {
        std::string method;
        std::string path;  // OpenAPI template: "/api/v1/images/{id}"
    };
    std::vector<Route> routes() const;
    static const char* openapi_document();

  private:
    struct Context;
    struct RouteEntry;
    struct PreparedImage;

    // `frames`: where binary mask frames go (a WebSocket message); null over HTTP, where
    // "output": "binary" is refused.
    Response handle(const Request& request, std::vector<std::string>* frames);
    Response dispatch(const Request& request, std::vector<std::string>* frames,
                      std::string* route_name);
    // The tenant of the request's API key (and the key, for rate limiting); false without one.
    bool authenticate(const Request& request, std::string* tenant, std::string* key) const;
    void add_common_headers(Response& response) const;

    Response healthz(Context& c);
    Response readyz(Context& c);
    Response metrics(Context& c);
    Response openapi(Context& c);
    Response upload_image(Context& c);
    Response list_images(Context& c);
    Response get_image(Context& c);
    Response delete_image(Context& c);
    Response encode_image(Context& c);
    Response get_embedding(Context& c);
    Response get_decoder(Context& c);
    Response infer(Context& c);
    Response create_batch(Context& c);
    Response get_batch(Context& c);
    Response create_session(Context& c);
    Response get_session(Context& c);
    Response delete_session(Context& c);
    Response add_prompts(Context& c);
    Response undo(Context& c);
    Response reset(Context& c);
    Response session_socket(Context& c);

    const Segmenter& require_model() const;
    std::string_view upload_bytes(const Request& request) const;
    std::string image_path(const std::string& tenant, const std::string& id) const;
    std::string batch_path(const std::string& tenant, const std::string& id) const;
    nlohmann::json image_record(const std::string& tenant, const std::string& id) const;
    nlohmann::json image_status(const std::string& tenant, const std::string& id);
    std::shared_ptr<const PreparedImage> prepared(const std::string& tenant, const std::string& id);
    std::shared_ptr<Session> session_for(Context& c);
    // compute, or disk when the image is not prepared (its embedding is then read from the
    // tiers). The session's image is found under the request's tenant.
    Pool decode_pool(const Request& request, const std::string& image_id,
                     const std::string& session_id);

    ApiOptions options_;
    std::vector<RouteEntry> table_;
    RequestMetrics metrics_;
    std::atomic<int> decodes_running_{0};  // decodes in progress, on any compute or disk thread
    SessionStore sessions_;
    RateLimiter limiter_;
    mutable std::mutex prepared_mutex_;  // guards prepared_ and prepared_lru_
    std::unordered_map<std::string, std::shared_ptr<const PreparedImage>> prepared_;
    std::list<std::string> prepared_lru_;  // front = most recently used
};

}  // namespace splitseg
