#include "service/api.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "engine/file_io.h"
#include "engine/ops.h"
#include "runtime/bundle.h"
#include "runtime/image.h"
#include "service/mask_encoding.h"
#include "service/mask_frame.h"
#include "service/mask_polygon.h"
#include "service/multipart.h"
#include "service/spliced_json.h"
#include "store/crypto.h"

namespace splitseg {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A failure the client is told about with a status and a stable code.
struct ApiError : std::runtime_error {
    ApiError(int status_, std::string code_, const std::string& message)
        : std::runtime_error(message), status(status_), code(std::move(code_)) {}
    int status;
    std::string code;
};

// A JSON body already serialised.
Response json_text_response(int status, std::string text) {
    Response r;
    r.status = status;
    r.body = std::move(text);
    r.set_header("Content-Type", "application/json");
    return r;
}

Response json_response(int status, const json& body) {
    return json_text_response(status, body.dump());
}

Response error_response(int status, const std::string& code, const std::string& message) {
    return json_response(status, {{"error", {{"code", code}, {"message", message}}}});
}

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> parts;
    std::string part;
    std::istringstream in(text);
    while (std::getline(in, part, sep)) parts.push_back(part);
    return parts;
}

// "a=1&b=2" -> {a:1, b:2}; values are used as ids and flags only, so no percent-decoding.
std::map<std::string, std::string> parse_query(const std::string& query) {
    std::map<std::string, std::string> out;
    for (const std::string& pair : split(query, '&')) {
        const size_t eq = pair.find('=');
        if (eq == std::string::npos)
            out[pair] = "";
        else
            out[pair.substr(0, eq)] = pair.substr(eq + 1);
    }
    return out;
}

bool is_hex_id(const std::string& id) {
    if (id.size() != 32) return false;
    for (char ch : id)
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
    return true;
}

json parse_body(const Request& request) {
    if (request.body.empty()) return json::object();
    json body = json::parse(request.body, nullptr, false);
    if (body.is_discarded()) throw ApiError(400, "invalid_json", "the body is not valid JSON");
    if (!body.is_object()) throw ApiError(400, "invalid_json", "the body must be a JSON object");
    return body;
}

float finite_number(const json& v, const std::string& what) {
    if (!v.is_number()) throw ApiError(400, "bad_request", what + " must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 1e9) {
        throw ApiError(400, "bad_request", what + " must be a finite number");
    }
    return static_cast<float>(d);
}

// Points [[x, y, label], ...] and box [x0, y0, x1, y1] from a request body, checked against the
// image's size.
void parse_prompts(const json& body, int width, int height, size_t max_points,
                   std::vector<Click>* points, std::optional<std::array<float, 4>>* box) {
    auto inside = [&](float x, float y, const std::string& what) {
        if (x < 0 || y < 0 || x > width || y > height) {
            throw ApiError(400, "bad_request", what + " lies outside the image");
        }
    };
    if (body.contains("points")) {
        const json& p = body["points"];
        if (!p.is_array()) throw ApiError(400, "bad_request", "points must be an array");
        if (p.size() > max_points) {
            throw ApiError(400, "too_many_points",
                           "at most " + std::to_string(max_points) + " points per request");
        }
        for (const json& pt : p) {
            if (!pt.is_array() || pt.size() != 3) {
                throw ApiError(400, "bad_request", "each point is [x, y, label]");
            }
            Click c{finite_number(pt[0], "point x"), finite_number(pt[1], "point y"), 0};
            if (!pt[2].is_number_integer() || (pt[2] != 0 && pt[2] != 1)) {
                throw ApiError(400, "bad_request", "point label must be 0 or 1");
            }
            c.label = pt[2].get<int>();
            inside(c.x, c.y, "a point");
            points->push_back(c);
        }
    }
    if (body.contains("box") && !body["box"].is_null()) {
        const json& b = body["box"];
        if (!b.is_array() || b.size() != 4) {
            throw ApiError(400, "bad_request", "box is [x0, y0, x1, y1]");
        }
        std::array<float, 4> v{};
        for (int i = 0; i < 4; ++i) v[i] = finite_number(b[i], "box coordinate");
        if (v[2] < v[0] || v[3] < v[1]) {
            throw ApiError(400, "bad_request", "box needs x0 <= x1 and y0 <= y1");
        }
        inside(v[0], v[1], "the box");
        inside(v[2], v[3], "the box");
        *box = v;
    }
}

struct OutputOptions {
    std::string format = "rle";  // "rle", "png", "polygon", "binary" or "none"
    bool logits = false;         // add the low-res logits (float32 little-endian, base64)
};

// `binary_allowed`: the request came over a session's WebSocket, which carries binary frames.
OutputOptions parse_output(const json& body, bool binary_allowed) {
    OutputOptions o;
    if (body.contains("output")) {
        if (!body["output"].is_string()) throw ApiError(400, "bad_request", "output is a string");
        o.format = body["output"].get<std::string>();
        if (o.format == "binary" && !binary_allowed) {
            throw ApiError(400, "bad_request",
                           "output binary is for the session WebSocket; use rle, png or polygon");
        }
        if (o.format != "rle" && o.format != "png" && o.format != "polygon" &&
            o.format != "binary" && o.format != "none") {
            throw ApiError(400, "bad_request", "output must be rle, png, polygon, binary or none");
        }
    }
    if (body.contains("logits")) {
        if (!body["logits"].is_boolean()) throw ApiError(400, "bad_request", "logits is a bool");
        o.logits = body["logits"].get<bool>();
    }
    return o;
}

// "mask_input": {"f32_base64": "..."} with 256x256 float32 little-endian logits, the form in
// which "logits": true returns them; absent or null: none.
std::optional<Tensor> parse_mask_input(const json& body) {
    if (!body.contains("mask_input") || body["mask_input"].is_null()) return std::nullopt;
    const json& m = body["mask_input"];
    if (!m.is_object() || !m.contains("f32_base64") || !m["f32_base64"].is_string()) {
        throw ApiError(400, "bad_request", "mask_input is {\"f32_base64\": \"...\"}");
    }
    if (m.contains("shape") && m["shape"] != json::array({256, 256})) {
        throw ApiError(400, "bad_request", "mask_input must be 256x256 low-res logits");
    }
    std::vector<uint8_t> bytes;
    try {
        bytes = base64_decode(m["f32_base64"].get<std::string>());
    } catch (const std::invalid_argument& e) {
        throw ApiError(400, "bad_request", std::string("mask_input.f32_base64: ") + e.what());
    }
    if (bytes.size() != 256 * 256 * sizeof(float)) {
        throw ApiError(400, "bad_request", "mask_input must hold 256x256 float32 values");
    }
    std::vector<float> values(256 * 256);
    std::memcpy(values.data(), bytes.data(), bytes.size());
    return Tensor::from({1, 256, 256}, values.data());
}

double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
}

// "binary": each mask's frame is appended to `frames` (sequence 0, stamped when sent) and the
// mask's JSON names its index there. "rle": the counts are held by `strings`.
json masks_json(const Masks& masks, const OutputOptions& out, std::vector<std::string>* frames,
                SplicedJson& strings) {
    json list = json::array();
    const size_t plane = static_cast<size_t>(masks.width) * masks.height;
    for (int i = 0; i < masks.count(); ++i) {
        const uint8_t* mask = masks.masks.data() + plane * i;
        const MaskExtent extent = mask_extent(mask, masks.width, masks.height);
        json m = {{"score", masks.iou[i]}, {"bbox", extent.bbox}, {"area", extent.area}};
        if (out.format == "rle") {
            m["rle"] = {
                {"size", {masks.height, masks.width}},
                {"counts",
                 strings.hold(coco_rle_string(coco_rle_counts(mask, masks.width, masks.height)))}};
        } else if (out.format == "polygon") {
            // COCO-style outer outlines, and per outline the rings of its holes.
            json outers = json::array(), holes = json::array();
            for (MaskPolygon& p : mask_polygons(mask, masks.width, masks.height)) {
                outers.push_back(std::move(p.outer));
                holes.push_back(std::move(p.holes));
            }
            m["polygons"] = std::move(outers);
            m["holes"] = std::move(holes);
        } else if (out.format == "png") {
            std::vector<uint8_t> gray(mask, mask + plane);
            for (uint8_t& v : gray) v = v ? 255 : 0;
            const std::vector<uint8_t> png =
                encode_png_gray(gray.data(), masks.width, masks.height);
            m["png"] = base64_encode(png);
        } else if (out.format == "binary") {
            m["frame"] = frames->size();
            frames->push_back(encode_mask_frame(mask, masks.width, masks.height, i, 0));
        }
        if (out.logits) {
            const int64_t n = masks.low_res_logits.numel() / masks.count();
            const float* p = masks.low_res_logits.data() + n * i;
            m["low_res_logits"] = {
                {"shape", {256, 256}},
                {"f32_base64",
                 base64_encode(std::span(reinterpret_cast<const uint8_t*>(p), n * sizeof(float)))}};
        }
        list.push_back(std::move(m));
    }
    return {{"masks", list}, {"best", masks.best()}};
}

// Counts itself in `count` while it lives; `others` were counted before it.
struct RunningCount {
    std::atomic<int>& count;
    const int others;
    explicit RunningCount(std::atomic<int>& c) : count(c), others(c++) {}
    ~RunningCount() { --count; }
};

// Decodes `prompts` and encodes the masks as `out` asks, recording each stage's time. A decode
// that starts while others run gets one thread: teams of several per decode would oversubscribe
// the cores and spin-wait on each other; a lone decode gets `lone_threads` (0: all cores).
json decode_masks(const Segmenter& model, const DecoderImage& decoder, const ImageGeometry& geom,
                  const Prompts& prompts, const OutputOptions& out, RequestMetrics& metrics,
                  std::atomic<int>& decodes_running, int lone_threads, Masks* masks,
                  std::vector<std::string>* frames, SplicedJson& strings) {
    {
        const RunningCount running(decodes_running);
        const ThreadCap cap(running.others > 0 ? 1
                            : lone_threads > 0 ? lone_threads
                                               : num_threads());
        *masks = model.decode(decoder, geom, prompts);
    }
    metrics.observe_stage("decoder", masks->decoder_ms);
    metrics.observe_stage("upscale", masks->upscale_ms);
    const auto start = std::chrono::steady_clock::now();
    json result = masks_json(*masks, out, frames, strings);
    metrics.observe_stage("mask_encoding", ms_since(start));
    return result;
}

// The response for a decode, with its total latency; its serialisation is a stage of its own.
Response timed_json_response(const json& body, const SplicedJson& strings,
                             RequestMetrics& metrics) {
    const auto start = std::chrono::steady_clock::now();
    Response r = json_text_response(200, strings.dump(body));
    metrics.observe_stage("json", ms_since(start));
    return r;
}

// Digits only (no sign, no spaces); false when empty or not all digits.
bool parse_digits(std::string_view text, uint64_t* out) {
    if (text.empty()) return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
    return ec == std::errc() && end == text.data() + text.size();
}

// One range of a Range header, "bytes=a-b", "bytes=a-" or "bytes=-n", resolved against `size`
// into [*first, *last]; false when malformed or unsatisfiable.
bool parse_byte_range(const std::string& header, size_t size, size_t* first, size_t* last) {
    const std::string_view prefix = "bytes=";
    if (header.rfind(prefix, 0) != 0 || size == 0) return false;
    const std::string_view spec = std::string_view(header).substr(prefix.size());
    const size_t dash = spec.find('-');
    if (dash == std::string_view::npos) return false;
    uint64_t a = 0, b = 0;
    if (dash == 0) {  // the last b bytes
        if (!parse_digits(spec.substr(1), &b) || b == 0) return false;
        *first = size - std::min<uint64_t>(b, size);
        *last = size - 1;
        return true;
    }
    if (!parse_digits(spec.substr(0, dash), &a) || a >= size) return false;
    *first = a;
    *last = size - 1;
    if (dash + 1 == spec.size()) return true;
    if (!parse_digits(spec.substr(dash + 1), &b) || b < a) return false;
    *last = std::min<uint64_t>(b, size - 1);
    return true;
}

// Whether a path's segments fit a route's pattern ("/api/v1/images/{id}"); the values of its
// {params} go to *params.
bool match_route(const std::string& route, const std::vector<std::string>& segments,
                 std::map<std::string, std::string>* params) {
    const std::vector<std::string> pattern = split(route, '/');
    if (pattern.size() != segments.size()) return false;
    for (size_t i = 0; i < pattern.size(); ++i) {
        if (!pattern[i].empty() && pattern[i].front() == '{') {
            if (segments[i].empty()) return false;
            (*params)[pattern[i]] = segments[i];
        } else if (pattern[i] != segments[i]) {
            return false;
        }
    }
    return true;
}

bool valid_tenant(const std::string& t) {
    if (t.empty() || t.size() > 64) return false;
    for (char ch : t)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-') return false;
    return true;
}

}  // namespace

std::map<std::string, std::string> load_api_keys(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read the API keys file " + path);
    json doc = json::parse(in, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("keys") ||
        !doc["keys"].is_object()) {
        throw std::runtime_error(path + ": expected {\"keys\": {\"KEY\": \"tenant\", ...}}");
    }
    std::map<std::string, std::string> keys;
    for (const auto& [key, tenant] : doc["keys"].items()) {
        if (key.empty() || !tenant.is_string() || !valid_tenant(tenant.get<std::string>())) {
            throw std::runtime_error(path + ": every key needs a tenant of [A-Za-z0-9_-]");
        }
        keys[key] = tenant.get<std::string>();
    }
    if (keys.empty()) throw std::runtime_error(path + ": no keys");
    return keys;
}

struct Api::Context {
    const Request& request;
    std::string path;
    std::map<std::string, std::string> query;
    std::map<std::string, std::string> params;  // {id}, {sid}
    std::string tenant;
    std::vector<std::string>* frames;  // binary mask frames: over a WebSocket only, else null
};

struct Api::RouteEntry {
    std::string method;
    std::string path;
    Response (Api::*handler)(Context&);
    bool needs_tenant;
    // Where the server runs it (see pool_for()): decode_pool means compute, or disk when the
    // image (of the path's {id}, or of the session {sid}) has no prepared decoder state.
    enum class Runs { io, compute, disk, decode_pool } runs = Runs::io;
};

struct Api::PreparedImage {
    ImageGeometry geom;
    DecoderImage decoder;
};

Api::Api(ApiOptions options)
    : options_(std::move(options)), sessions_(options_.sessions), limiter_(options_.rate_limit) {
    if (!options_.cache || !options_.jobs) {
        throw std::invalid_argument("the API needs an embedding cache and a job queue");
    }
    using Runs = RouteEntry::Runs;
    table_ = {
        {"GET", "/healthz", &Api::healthz, false},
        {"GET", "/readyz", &Api::readyz, false},
        {"GET", "/metrics", &Api::metrics, false},
        {"GET", "/api/v1/openapi.json", &Api::openapi, false},
        {"POST", "/api/v1/images", &Api::upload_image, true, Runs::disk},
        {"GET", "/api/v1/images", &Api::list_images, true, Runs::disk},
        {"GET", "/api/v1/images/{id}", &Api::get_image, true, Runs::disk},
        {"DELETE", "/api/v1/images/{id}", &Api::delete_image, true, Runs::disk},
        {"POST", "/api/v1/images/{id}/encode", &Api::encode_image, true, Runs::disk},
        {"GET", "/api/v1/images/{id}/embedding", &Api::get_embedding, true, Runs::disk},
        {"HEAD", "/api/v1/images/{id}/embedding", &Api::get_embedding, true, Runs::disk},
        {"POST", "/api/v1/images/{id}/infer", &Api::infer, true, Runs::decode_pool},
        {"POST", "/api/v1/jobs", &Api::create_batch, true, Runs::disk},
        {"GET", "/api/v1/jobs/{id}", &Api::get_batch, true, Runs::disk},
        {"POST", "/api/v1/sessions", &Api::create_session, true, Runs::disk},
        {"GET", "/api/v1/sessions/{sid}", &Api::get_session, true, Runs::compute},
        {"DELETE", "/api/v1/sessions/{sid}", &Api::delete_session, true},
        {"POST", "/api/v1/sessions/{sid}/prompts", &Api::add_prompts, true, Runs::decode_pool},
        {"POST", "/api/v1/sessions/{sid}/undo", &Api::undo, true, Runs::compute},
        {"POST", "/api/v1/sessions/{sid}/reset", &Api::reset, true, Runs::compute},
        {"GET", "/api/v1/sessions/{sid}/ws", &Api::session_socket, true},
        {"GET", "/api/v1/models/{name}/decoder", &Api::get_decoder, true, Runs::disk},
    };
}

Api::~Api() = default;

std::vector<Api::Route> Api::routes() const {
    std::vector<Route> out;
    for (const RouteEntry& r : table_) out.push_back({r.method, r.path});
    return out;
}

Api::Pool Api::pool_for(const Request& request) {
    const std::vector<std::string> segments =
        split(request.target.substr(0, request.target.find('?')), '/');
    std::map<std::string, std::string> params;
    for (const RouteEntry& r : table_) {
        if (r.method != request.method || !match_route(r.path, segments, &params)) continue;
        switch (r.runs) {
            case RouteEntry::Runs::io:
                return Pool::io;
            case RouteEntry::Runs::compute:
                return Pool::compute;
            case RouteEntry::Runs::disk:
                return Pool::disk;
            case RouteEntry::Runs::decode_pool:
                return decode_pool(request, params["{id}"], params["{sid}"]);
        }
    }
    return Pool::io;
}

Api::Pool Api::pool_for_message(const Request& upgrade) {
    // /api/v1/sessions/{sid}/ws
    const std::vector<std::string> segments =
        split(upgrade.target.substr(0, upgrade.target.find('?')), '/');
    return decode_pool(upgrade, "", segments.size() >= 2 ? segments[segments.size() - 2] : "");
}

Api::Pool Api::decode_pool(const Request& request, const std::string& image_id,
                           const std::string& session_id) {
    std::string id = image_id, tenant, key;
    if (!session_id.empty() && authenticate(request, &tenant, &key)) {
        if (const auto session = sessions_.get(tenant, session_id)) id = session->image_id;
    }
    std::lock_guard lock(prepared_mutex_);
    return id.empty() || prepared_.contains(id) ? Pool::compute : Pool::disk;
}

Response Api::handle(const Request& request) {
    return handle(request, nullptr);
}

Response Api::handle(const Request& request, std::vector<std::string>* frames) {
    const auto start = std::chrono::steady_clock::now();
    std::string route = "unmatched";
    Response response;
    try {
        response = dispatch(request, frames, &route);
    } catch (const ApiError& e) {
        response = error_response(e.status, e.code, e.what());
    } catch (const json::exception& e) {
        response = error_response(400, "invalid_json", e.what());
    } catch (const ImageError& e) {
        // probe_image and decode_image say "above the limit" for images with too many pixels.
        const bool too_large = std::strstr(e.what(), "above the limit") != nullptr;
        response = error_response(too_large ? 413 : 400,
                                  too_large ? "image_too_large" : "invalid_image", e.what());
    } catch (const TooManySessions& e) {
        response = error_response(429, "too_many_sessions", e.what());
    } catch (const std::invalid_argument& e) {
        response = error_response(400, "bad_request", e.what());
    } catch (const std::exception& e) {
        response = error_response(500, "internal", e.what());
    }
    add_common_headers(response);
    metrics_.observe(request.method, route, response.status, ms_since(start));
    return response;
}

Response Api::error(int status, const std::string& code, const std::string& message) const {
    Response r = error_response(status, code, message);
    add_common_headers(r);
    return r;
}

void Api::add_common_headers(Response& r) const {
    r.set_header("Access-Control-Allow-Origin", options_.cors_origin);
    r.set_header("Access-Control-Expose-Headers", "ETag, Content-Range, Content-Length");
    // The WASM client needs cross-origin isolation (SharedArrayBuffer for threads).
    r.set_header("Cross-Origin-Opener-Policy", "same-origin");
    r.set_header("Cross-Origin-Embedder-Policy", "require-corp");
    r.set_header("Cross-Origin-Resource-Policy", "cross-origin");
}

Response Api::dispatch(const Request& request, std::vector<std::string>* frames,
                       std::string* route_name) {
    const size_t q = request.target.find('?');
    Context c{request, request.target.substr(0, q), {}, {}, {}, frames};
    if (q != std::string::npos) c.query = parse_query(request.target.substr(q + 1));
    const std::vector<std::string> segments = split(c.path, '/');

    std::vector<std::string> allowed;
    for (const RouteEntry& r : table_) {
        std::map<std::string, std::string> params;
        if (!match_route(r.path, segments, &params)) continue;
        *route_name = r.path;
        if (r.method != request.method) {
            allowed.push_back(r.method);
            continue;
        }
        c.params = std::move(params);
        std::string key;
        if (r.needs_tenant && !authenticate(request, &c.tenant, &key)) {
            return error_response(401, "unauthorized",
                                  "send a valid API key: Authorization: Bearer KEY or X-API-Key");
        }
        double retry_after = 0;
        if (r.needs_tenant && !limiter_.allow(key, &retry_after)) {
            Response limited = error_response(429, "rate_limited",
                                              "too many requests for this API key: slow down");
            limited.set_header("Retry-After",
                               std::to_string(static_cast<int>(std::ceil(retry_after))));
            return limited;
        }
        return (this->*(r.handler))(c);
    }
    if (allowed.empty() && options_.web) {
        if (std::optional<Response> file = options_.web->serve(request)) {
            *route_name = "static";  // one metrics label for every file
            return std::move(*file);
        }
    }
    if (allowed.empty()) return error_response(404, "no_route", "no route for " + c.path);
    std::string allow;
    for (const std::string& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    if (request.method == "OPTIONS") {  // CORS preflight
        Response r;
        r.status = 204;
        r.set_header("Access-Control-Allow-Methods", allow + ", OPTIONS");
        r.set_header("Access-Control-Allow-Headers",
                     "Authorization, X-API-Key, Content-Type, Range, If-None-Match");
        r.set_header("Access-Control-Max-Age", "600");
        return r;
    }
    Response r = error_response(405, "method_not_allowed", request.method + " is not allowed");
    r.set_header("Allow", allow);
    return r;
}

bool Api::authenticate(const Request& request, std::string* tenant, std::string* key_out) const {
    if (options_.api_keys.empty()) {
        *tenant = "default";
        *key_out = *tenant;
        return true;
    }
    std::string key = request.header("x-api-key");
    const std::string auth = request.header("authorization");
    if (key.empty() && auth.rfind("Bearer ", 0) == 0) key = auth.substr(7);
    auto it = options_.api_keys.find(key);
    if (key.empty() || it == options_.api_keys.end()) return false;
    *tenant = it->second;
    *key_out = key;
    return true;
}

const Segmenter& Api::require_model() const {
    if (!options_.model) {
        throw ApiError(503, "no_model",
                       "no model is loaded: start serve with --model CKPT or SPLITSEG_MODEL");
    }
    return *options_.model;
}

Response Api::healthz(Context&) {
    return json_response(200, {{"status", "ok"}});
}

Response Api::readyz(Context&) {
    json checks = {{"model", options_.model != nullptr}, {"jobs", true}};
    try {
        options_.jobs->stats();
    } catch (const std::exception&) {
        checks["jobs"] = false;
    }
    const bool ready = checks["model"] && checks["jobs"];
    return json_response(ready ? 200 : 503,
                         {{"status", ready ? "ready" : "not_ready"}, {"checks", checks}});
}

Response Api::metrics(Context&) {
    std::ostringstream out;
    out << metrics_.render();
    out << "# HELP splitseg_sessions Interactive sessions open now.\n"
        << "# TYPE splitseg_sessions gauge\nsplitseg_sessions " << sessions_.size() << "\n"
        << "# HELP splitseg_session_bytes Bytes held by the sessions' prompts and masks.\n"
        << "# TYPE splitseg_session_bytes gauge\nsplitseg_session_bytes " << sessions_.bytes()
        << "\n";
    try {
        const QueueStats s = options_.jobs->stats();
        out << "# HELP splitseg_encode_jobs Encode jobs by status.\n"
            << "# TYPE splitseg_encode_jobs gauge\n";
        const std::pair<const char*, int64_t> counts[] = {{"pending", s.counts.pending},
                                                          {"processing", s.counts.processing},
                                                          {"completed", s.counts.completed},
                                                          {"failed", s.counts.failed}};
        for (const auto& [name, n] : counts)
            out << "splitseg_encode_jobs{status=\"" << name << "\"} " << n << "\n";
        out << "# HELP splitseg_encode_queue_runnable Encode jobs ready to run.\n"
            << "# TYPE splitseg_encode_queue_runnable gauge\n"
            << "splitseg_encode_queue_runnable " << s.runnable << "\n";
    } catch (const std::exception&) {
        // An unreachable queue shows in /readyz; the other metrics are still worth serving.
    }
    out << "# HELP splitseg_cache_hits_total Embedding cache hits per tier.\n"
        << "# TYPE splitseg_cache_hits_total counter\n";
    for (const StoreStats& t : options_.cache->store().tier_stats()) {
        out << "splitseg_cache_hits_total{tier=\"" << t.tier << "\"} " << t.hits << "\n"
            << "splitseg_cache_misses_total{tier=\"" << t.tier << "\"} " << t.misses << "\n";
    }
    Response r;
    r.body = out.str();
    r.set_header("Content-Type", "text/plain; version=0.0.4");
    return r;
}

Response Api::openapi(Context&) {
    Response r;
    r.body = openapi_document();
    r.set_header("Content-Type", "application/json");
    return r;
}

std::string Api::image_path(const std::string& tenant, const std::string& id) const {
    return options_.data_dir + "/images/" + tenant + "/" + id;
}

// The stored record ({width, height}) of a tenant's image; throws 404 when there is none.
json Api::image_record(const std::string& tenant, const std::string& id) const {
    if (!is_hex_id(id)) throw ApiError(404, "not_found", "no image " + id);
    std::ifstream in(image_path(tenant, id) + ".json");
    if (!in) throw ApiError(404, "not_found", "no image " + id);
    return json::parse(in);
}

json Api::image_status(const std::string& tenant, const std::string& id) {
    json record = image_record(tenant, id);
    const std::string& model_hash = require_model().model_hash();
    json out = {{"id", id}, {"width", record["width"]}, {"height", record["height"]}};
    const std::optional<Job> job = options_.jobs->find(tenant, id, model_hash);
    if (options_.cache->contains(id, model_hash)) {
        out["status"] = "completed";
    } else if (job) {
        out["status"] = job_status_name(job->status);
        if (!job->error.empty()) out["error"] = job->error;
    } else {
        out["status"] = "missing";  // neither cached nor queued: POST .../encode queues it
    }
    return out;
}

// The uploaded image's bytes: the body itself, or the file part of a multipart/form-data body.
std::string_view Api::upload_bytes(const Request& request) const {
    const std::string& body = request.body;
    if (body.size() > options_.max_body_bytes) {
        throw ApiError(413, "body_too_large", "the image is larger than the body limit");
    }
    try {
        const std::optional<std::string> boundary =
            multipart_boundary(request.header("content-type"));
        if (!boundary) return body;
        MultipartLimits limits;
        limits.max_file_bytes = options_.max_body_bytes;
        return multipart_file(body, *boundary, limits).data;
    } catch (const MultipartError& e) {
        throw ApiError(e.status, e.code, e.what());
    }
}

Response Api::upload_image(Context& c) {
    const Segmenter& model = require_model();
    const std::string_view body = upload_bytes(c.request);
    if (body.empty()) throw ApiError(400, "invalid_image", "the upload holds no image");
    const auto* bytes = reinterpret_cast<const uint8_t*>(body.data());
    // The header alone, so a big photo does not hold up this io thread; a body damaged past the
    // header fails its encode job, which the image's status then reports.
    const ImageInfo image = probe_image(bytes, body.size(), options_.max_pixels);
    const std::string id = image_content_hash(bytes, body.size());
    const std::string path = image_path(c.tenant, id);
    const bool known = fs::exists(path + ".json");
    if (!known) {
        fs::create_directories(fs::path(path).parent_path());
        write_file_atomic(path, std::vector<uint8_t>(bytes, bytes + body.size()));
        const std::string record = json{{"width", image.width}, {"height", image.height}}.dump();
        write_file_atomic(path + ".json", std::vector<uint8_t>(record.begin(), record.end()));
    }
    if (!options_.cache->contains(id, model.model_hash())) {
        options_.jobs->enqueue({c.tenant, id, model.model_hash()});
    }
    return json_response(known ? 200 : 201, image_status(c.tenant, id));
}

Response Api::list_images(Context& c) {
    auto it = c.query.find("ids");
    if (it == c.query.end() || it->second.empty()) {
        throw ApiError(400, "bad_request", "give the images as ?ids=ID,ID,...");
    }
    const std::vector<std::string> ids = split(it->second, ',');
    if (ids.size() > 1000) throw ApiError(400, "bad_request", "at most 1000 ids per request");
    json images = json::array();
    for (const std::string& id : ids) {
        try {
            images.push_back(image_status(c.tenant, id));
        } catch (const ApiError& e) {
            if (e.status != 404) throw;
            images.push_back({{"id", id}, {"status", "not_found"}});
        }
    }
    return json_response(200, {{"images", images}});
}

Response Api::get_image(Context& c) {
    return json_response(200, image_status(c.tenant, c.params["{id}"]));
}

Response Api::delete_image(Context& c) {
    const std::string& id = c.params["{id}"];
    image_record(c.tenant, id);  // 404 unless the tenant has it
    if (options_.model) {
        if (auto job = options_.jobs->find(c.tenant, id, options_.model->model_hash()))
            options_.jobs->remove(job->id);
    }
    fs::remove(image_path(c.tenant, id) + ".json");
    fs::remove(image_path(c.tenant, id));
    Response r;
    r.status = 204;
    return r;
}

Response Api::encode_image(Context& c) {
    const std::string& id = c.params["{id}"];
    image_record(c.tenant, id);
    options_.jobs->enqueue({c.tenant, id, require_model().model_hash(), /*force=*/true});
    return json_response(202, image_status(c.tenant, id));
}

Response Api::get_embedding(Context& c) {
    const std::string& id = c.params["{id}"];
    json status = image_status(c.tenant, id);
    const std::string& model_hash = require_model().model_hash();
    std::optional<Blob> bundle;
    if (status["status"] == "completed") bundle = options_.cache->get_bundle(id, model_hash);
    if (!bundle) {
        throw ApiError(409, "not_encoded",
                       "the embedding is " + status["status"].get<std::string>());
    }
    Response r;
    const std::string etag = "\"" + id + "-" + model_hash + "\"";
    r.set_header("ETag", etag);
    r.set_header("Cache-Control", "public, max-age=31536000, immutable");
    r.set_header("Accept-Ranges", "bytes");
    if (c.request.header("if-none-match") == etag) {
        r.status = 304;
        return r;
    }
    r.set_header("Content-Type", "application/octet-stream");
    std::string range = c.request.header("range");
    // RFC 9110 14.2: a Range in another unit must be ignored; several ranges (which would need
    // a multipart/byteranges answer) may be, and are: both get the whole bundle.
    if (range.rfind("bytes=", 0) != 0 || range.find(',') != std::string::npos) range.clear();
    const size_t size = bundle->size();
    size_t first = 0, last = size - 1;
    if (!range.empty()) {
        if (!parse_byte_range(range, size, &first, &last)) {
            Response e = error_response(416, "range_not_satisfiable", "bad or unsatisfiable Range");
            e.set_header("Content-Range", "bytes */" + std::to_string(size));
            return e;
        }
        r.status = 206;
        r.set_header("Content-Range", "bytes " + std::to_string(first) + "-" +
                                          std::to_string(last) + "/" + std::to_string(size));
    }
    r.body.assign(reinterpret_cast<const char*>(bundle->data()) + first, last - first + 1);
    return r;
}

std::string Api::batch_path(const std::string& tenant, const std::string& id) const {
    return options_.data_dir + "/batches/" + tenant + "/" + id + ".json";
}

// A batch is the list of its images, kept as a file; its progress is read from the images'
// statuses each time, so it needs no bookkeeping of its own in the job queue.
Response Api::create_batch(Context& c) {
    const Segmenter& model = require_model();
    const json body = parse_body(c.request);
    if (!body.contains("image_ids") || !body["image_ids"].is_array() || body["image_ids"].empty()) {
        throw ApiError(400, "bad_request", "give the batch's image_ids, a non-empty array");
    }
    const json& ids = body["image_ids"];
    if (ids.size() > 1000) throw ApiError(400, "bad_request", "at most 1000 images per batch");
    bool force = false;
    if (body.contains("force")) {
        if (!body["force"].is_boolean()) throw ApiError(400, "bad_request", "force is a bool");
        force = body["force"];
    }
    std::vector<std::string> images;
    for (const json& id : ids) {
        if (!id.is_string()) throw ApiError(400, "bad_request", "image_ids holds strings");
        image_record(c.tenant, id);  // 404 for an unknown image, before anything is queued
        images.push_back(id);
    }
    for (const std::string& id : images) {
        if (force || !options_.cache->contains(id, model.model_hash()))
            options_.jobs->enqueue({c.tenant, id, model.model_hash(), force});
    }
    const std::string batch_id = random_id();
    const std::string path = batch_path(c.tenant, batch_id);
    fs::create_directories(fs::path(path).parent_path());
    const std::string record = json{{"image_ids", images}}.dump();
    write_file_atomic(path, std::vector<uint8_t>(record.begin(), record.end()));
    c.params["{id}"] = batch_id;
    Response r = get_batch(c);
    r.status = 202;
    return r;
}

Response Api::get_batch(Context& c) {
    const std::string& id = c.params["{id}"];
    if (!is_hex_id(id)) throw ApiError(404, "not_found", "no batch " + id);
    std::ifstream in(batch_path(c.tenant, id));
    if (!in) throw ApiError(404, "not_found", "no batch " + id);
    const json record = json::parse(in);
    json images = json::array();
    std::map<std::string, int> counts;
    for (const json& image_id : record["image_ids"]) {
        json status;
        try {
            status = image_status(c.tenant, image_id);
        } catch (const ApiError& e) {
            if (e.status != 404) throw;
            status = {{"id", image_id}, {"status", "not_found"}};  // deleted since
        }
        ++counts[status["status"].get<std::string>()];
        images.push_back(std::move(status));
    }
    const int total = static_cast<int>(images.size());
    const int finished = counts["completed"] + counts["failed"];
    const int gone = counts["not_found"] + counts["missing"];
    return json_response(200, {{"batch_id", id},
                               {"total", total},
                               {"counts", counts},
                               {"done", finished + gone == total},
                               {"progress", total ? double(finished) / total : 1.0},
                               {"images", images}});
}

Response Api::get_decoder(Context& c) {
    const std::string& hash = require_model().model_hash();
    const std::string& name = c.params["{name}"];
    if (name != "current" && name != hash) throw ApiError(404, "not_found", "no model " + name);
    if (options_.decoder_path.empty()) {
        throw ApiError(404, "not_found",
                       "no decoder weights: start serve with --decoder FILE (from splitseg models "
                       "extract-decoder)");
    }
    Response r;
    const std::string etag = "\"decoder-" + hash + "\"";
    r.set_header("ETag", etag);
    // By hash the weights never change; "current" changes when serve loads another model.
    r.set_header("Cache-Control",
                 name == hash ? "public, max-age=31536000, immutable" : "no-cache");
    if (c.request.header("if-none-match") == etag) {
        r.status = 304;
        return r;
    }
    const std::vector<uint8_t> bytes = read_file_bytes(options_.decoder_path);
    r.body.assign(bytes.begin(), bytes.end());
    r.set_header("Content-Type", "application/octet-stream");
    return r;
}

std::shared_ptr<const Api::PreparedImage> Api::prepared(const std::string& tenant,
                                                        const std::string& id) {
    const Segmenter& model = require_model();
    {
        std::lock_guard lock(prepared_mutex_);
        auto it = prepared_.find(id);
        if (it != prepared_.end()) {
            prepared_lru_.remove(id);
            prepared_lru_.push_front(id);
            return it->second;
        }
    }
    std::optional<Embedding> embedding = options_.cache->get(id, model.model_hash());
    if (!embedding) {
        json status = image_status(tenant, id);
        throw ApiError(409, "not_encoded",
                       "the embedding is " + status["status"].get<std::string>() + ", not ready");
    }
    auto made =
        std::make_shared<PreparedImage>(PreparedImage{embedding->geom, model.prepare(*embedding)});
    std::lock_guard lock(prepared_mutex_);
    if (prepared_.emplace(id, made).second) {
        prepared_lru_.push_front(id);
        while (prepared_lru_.size() > options_.prepared_images) {
            prepared_.erase(prepared_lru_.back());
            prepared_lru_.pop_back();
        }
    }
    return made;
}

Response Api::infer(Context& c) {
    const auto start = std::chrono::steady_clock::now();
    const std::string& id = c.params["{id}"];
    const json record = image_record(c.tenant, id);
    const json body = parse_body(c.request);
    Prompts prompts;
    parse_prompts(body, record["width"], record["height"], options_.max_points, &prompts.points,
                  &prompts.box);
    if (prompts.points.empty() && !prompts.box) {
        throw ApiError(400, "bad_request", "give at least one point or a box");
    }
    if (body.contains("multimask")) prompts.multimask = body["multimask"].get<bool>();
    prompts.best_only = body.value("best_only", false);
    prompts.mask_input = parse_mask_input(body);
    const OutputOptions out = parse_output(body, false);
    auto image = prepared(c.tenant, id);
    Masks masks;
    SplicedJson strings;
    json result = decode_masks(require_model(), image->decoder, image->geom, prompts, out, metrics_,
                               decodes_running_, options_.decode_threads, &masks, nullptr, strings);
    result["latency_ms"] = ms_since(start);
    return timed_json_response(result, strings, metrics_);
}

std::shared_ptr<Session> Api::session_for(Context& c) {
    auto session = sessions_.get(c.tenant, c.params["{sid}"]);
    if (!session) throw ApiError(404, "not_found", "no session " + c.params["{sid}"]);
    return session;
}

Response Api::create_session(Context& c) {
    require_model();
    const json body = parse_body(c.request);
    if (!body.contains("image_id") || !body["image_id"].is_string()) {
        throw ApiError(400, "bad_request", "give the session's image_id");
    }
    const std::string id = body["image_id"];
    image_record(c.tenant, id);
    prepared(c.tenant, id);  // 409 until the embedding exists; warms the decoder state
    auto session = sessions_.create(c.tenant, id);
    return json_response(201, {{"session_id", session->id}, {"image_id", id}});
}

namespace {

json session_state(const Session& s) {
    json points = json::array();
    json box = nullptr;
    if (!s.steps.empty()) {
        for (const Click& p : s.steps.back().points) points.push_back({p.x, p.y, p.label});
        if (s.steps.back().box) box = *s.steps.back().box;
    }
    return {{"session_id", s.id},
            {"image_id", s.image_id},
            {"steps", s.steps.size()},
            {"points", points},
            {"box", box}};
}

}  // namespace

Response Api::get_session(Context& c) {
    auto session = session_for(c);
    std::lock_guard lock(session->mutex);
    return json_response(200, session_state(*session));
}

Response Api::delete_session(Context& c) {
    if (!sessions_.remove(c.tenant, c.params["{sid}"])) {
        throw ApiError(404, "not_found", "no session " + c.params["{sid}"]);
    }
    Response r;
    r.status = 204;
    return r;
}

Response Api::add_prompts(Context& c) {
    const auto start = std::chrono::steady_clock::now();
    auto session = session_for(c);
    const json record = image_record(c.tenant, session->image_id);
    const json body = parse_body(c.request);
    const OutputOptions out = parse_output(body, c.frames != nullptr);
    std::optional<Tensor> mask_input = parse_mask_input(body);
    const auto wait_start = std::chrono::steady_clock::now();
    std::lock_guard lock(session->mutex);
    metrics_.observe_stage("session_wait", ms_since(wait_start));
    SessionStep step;
    if (!session->steps.empty()) {
        step.points = session->steps.back().points;
        step.box = session->steps.back().box;
    }
    std::vector<Click> added;
    parse_prompts(body, record["width"], record["height"], options_.max_points, &added, &step.box);
    if (added.empty() && !body.contains("box")) {
        throw ApiError(400, "bad_request", "give at least one point or a box");
    }
    step.points.insert(step.points.end(), added.begin(), added.end());
    if (step.points.size() > options_.max_points) {
        throw ApiError(400, "too_many_points", "the session has too many points");
    }
    Prompts prompts;
    prompts.points = step.points;
    prompts.box = step.box;
    prompts.multimask = body.value("multimask", session->steps.empty());
    prompts.best_only = body.value("best_only", false);
    // Refine the previous answer, as SAM's interactive use does, unless the client sends a mask.
    if (mask_input) {
        prompts.mask_input = std::move(mask_input);
    } else if (!session->steps.empty()) {
        prompts.mask_input = session->steps.back().best_low_res;
    }
    auto image = prepared(c.tenant, session->image_id);
    Masks masks;
    SplicedJson strings;
    json result =
        decode_masks(require_model(), image->decoder, image->geom, prompts, out, metrics_,
                     decodes_running_, options_.decode_threads, &masks, &step.frames, strings);
    const int64_t plane = 256 * 256;
    step.best_low_res =
        Tensor::from({1, 256, 256}, masks.low_res_logits.data() + plane * masks.best());
    result["steps"] = session->steps.size() + 1;
    result["latency_ms"] = ms_since(start);
    Response response = timed_json_response(result, strings, metrics_);
    step.result = response.body;
    if (c.frames) *c.frames = step.frames;
    session->steps.push_back(std::move(step));
    sessions_.set_bytes(*session, session->bytes());
    return response;
}

Response Api::undo(Context& c) {
    auto session = session_for(c);
    std::lock_guard lock(session->mutex);
    if (session->steps.empty())
        throw ApiError(409, "nothing_to_undo", "the session has no prompts");
    session->steps.pop_back();
    sessions_.set_bytes(*session, session->bytes());
    Response r = json_response(200, session_state(*session));
    if (!session->steps.empty()) {
        // The restored step's result as it was made, spliced in (parsing and re-serialising the
        // masks took milliseconds); a binary one brings its frames (over HTTP only its JSON
        // part, which names the frames).
        const SessionStep& restored = session->steps.back();
        r.body.pop_back();  // the closing brace
        r.body += ",\"result\":";
        r.body += restored.result;
        r.body += '}';
        if (c.frames) *c.frames = restored.frames;
    }
    return r;
}

Response Api::reset(Context& c) {
    auto session = session_for(c);
    std::lock_guard lock(session->mutex);
    session->steps.clear();
    sessions_.set_bytes(*session, session->bytes());
    return json_response(200, session_state(*session));
}

Response Api::session_socket(Context& c) {
    std::string upgrade = c.request.header("upgrade");
    for (char& ch : upgrade) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (upgrade != "websocket") {
        Response r = error_response(426, "upgrade_required", "open this route as a WebSocket");
        r.set_header("Upgrade", "websocket");
        return r;
    }
    session_for(c);  // 404 for an unknown session or another tenant's
    Response r;
    r.status = 101;  // the server completes the upgrade
    return r;
}

Api::SocketReply Api::session_message(const Request& upgrade, const std::string& text,
                                      uint32_t sequence) {
    const std::string base = upgrade.target.substr(0, upgrade.target.rfind("/ws"));
    json message = json::parse(text, nullptr, false);
    json reply = {{"type", "error"}};
    Response r;
    SocketReply out;
    if (message.is_object() && message.contains("id")) reply["id"] = message["id"];
    const std::string type =
        message.is_object() ? message.value("type", std::string()) : std::string();
    static const std::map<std::string, std::pair<std::string, std::string>> kRoutes = {
        {"prompts", {"POST", "/prompts"}},
        {"undo", {"POST", "/undo"}},
        {"reset", {"POST", "/reset"}},
        {"state", {"GET", ""}}};
    auto route = kRoutes.find(type);
    if (route == kRoutes.end()) {
        r = error_response(400, "bad_request", "type must be prompts, undo, reset or state");
    } else {
        reply["type"] = type;
        message.erase("type");
        message.erase("id");
        r = handle(Request{route->second.first, base + route->second.second, upgrade.headers,
                           message.dump()},
                   &out.frames);
    }
    reply["status"] = r.status;
    reply["seq"] = sequence;
    if (r.status >= 300) out.frames.clear();  // a refusal sends none
    if (!out.frames.empty()) reply["frames"] = out.frames.size();
    for (std::string& frame : out.frames) set_mask_frame_sequence(frame, sequence);
    // Every answer a session message can get is a JSON body: splice it in rather than parse
    // and re-serialise a body that holds the masks.
    out.text = reply.dump();
    out.text.pop_back();  // the closing brace
    out.text += ",\"body\":";
    out.text += r.body.empty() ? std::string_view("null") : std::string_view(r.body);
    out.text += '}';
    return out;
}

void Api::encode_job(JobLease& lease) {
    const Job& job = lease.job();
    const Segmenter& model = require_model();
    if (job.model_hash != model.model_hash()) {
        throw PermanentJobError("the job is for model " + job.model_hash + ", not this one");
    }
    std::vector<uint8_t> bytes;
    try {
        bytes = read_file_bytes(image_path(job.tenant, job.image_id));
    } catch (const std::exception& e) {
        throw PermanentJobError(std::string("the uploaded image is gone: ") + e.what());
    }
    Image image;
    try {
        image = decode_image(bytes.data(), bytes.size(), options_.max_pixels);
    } catch (const ImageError& e) {
        throw PermanentJobError(e.what());
    }
    if (!lease.keep_alive()) return;
    Embedding embedding = model.encode(image);
    embedding.image_hash = job.image_id;
    if (lease.keep_alive()) options_.cache->put(embedding);
}

}  // namespace splitseg
