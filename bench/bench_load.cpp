// bench_load: the service under load, over loopback only. Starts `splitseg serve` as a child
// process (so it can read the server's RSS from /proc), uploads a few images, waits for their
// encodes, measures the memory of idle sessions, then runs N concurrent WebSocket clients that
// click (add point, undo, reset) on their own sessions for a bounded time and count. Prints one
// JSON object: clicks/s, latency percentiles, server RSS, memory per idle session and the
// server's per-stage click timings (from /metrics).
//
// All clients share one io_context on this thread, as in Beast's async client examples: the
// load generator itself takes little CPU from the server it measures.
//
// This VM's speed moves with the minute (the same server binary's CPU a message by 30-40 %), so
// the report also times a fixed decode on one thread while nothing else runs, before the server
// starts and after it stops ("machine_probe"): runs are comparable where their probes agree.
// The probe does not see short stalls of the whole VM during the run, which one late decode
// queues 20 clicks behind: "machine_stalls" counts them (StallMeter), and "server_major_faults"
// the server's waits for pages the kernel dropped (ServerProcess::major_faults).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "engine/models/sam_decoder.h"
#include "engine/ops.h"
#include "engine/weights/weight_file.h"
#include "runtime/image.h"

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace websocket = beast::websocket;
namespace fs = std::filesystem;
using nlohmann::json;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kSkip = 77;  // ctest's SKIP_RETURN_CODE

struct Options {
    std::string server = "build/splitseg";
    std::string model;
    std::string data_dir;  // empty: a fresh temporary directory, removed at the end
    std::vector<std::string> image_files;
    int synth_images = 4;  // synthetic images added to the files
    int image_w = 1024, image_h = 768;
    int clients = 32;
    double duration_s = 20;
    double warmup_s = 2;  // before the measured duration: see LoadState::measure_from
    int think_ms = 0;     // mean pause between a reply and the next message (exponential)
    long max_clicks = 100000;
    int idle_sessions = 100;
    int server_threads = 2;
    int server_omp = 0;  // OMP_NUM_THREADS for the server; 0 leaves the environment alone
    std::string server_precision = "f32";  // serve --precision
    int server_encode_nice = -1;           // serve --encode-nice; -1 leaves its default
    int server_decode_threads = -1;        // serve --decode-threads; -1 leaves its default
    int server_compute_threads = -1;       // serve --compute-threads; -1 leaves its default
    // Synthetic images uploaded while the clients click, so that the server encodes meanwhile.
    int encode_during = 0;
    std::string output = "rle";
    uint32_t seed = 1;
    bool skip_missing_model = false;
};

[[noreturn]] void usage(const std::string& problem) {
    std::fprintf(stderr,
                 "bench_load: %s\n"
                 "usage: bench_load --model PATH [--server build/splitseg] [--image FILE]...\n"
                 "  [--synth-images 4] [--image-size 1024x768] [--clients 32] [--duration 20]\n"
                 "  [--warmup 2]  (seconds of clicking before the measured duration)\n"
                 "  [--think-ms 0]\n"
                 "  [--max-clicks N] [--idle-sessions 100] [--server-threads 2]\n"
                 "  [--server-omp N] [--server-precision f32|bf16] [--server-encode-nice N]\n"
                 "  [--server-decode-threads N] [--server-compute-threads N]\n"
                 "  [--encode-during N]\n"
                 "  [--output rle|png|polygon|none] [--seed 1]\n"
                 "  [--data-dir DIR] [--skip-missing-model]\n",
                 problem.c_str());
    std::exit(2);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--skip-missing-model") {
            o.skip_missing_model = true;
            continue;
        }
        if (i + 1 >= argc) usage(flag + " needs a value");
        const std::string v = argv[++i];
        try {
            if (flag == "--server")
                o.server = v;
            else if (flag == "--model")
                o.model = v;
            else if (flag == "--data-dir")
                o.data_dir = v;
            else if (flag == "--image")
                o.image_files.push_back(v);
            else if (flag == "--synth-images")
                o.synth_images = std::stoi(v);
            else if (flag == "--image-size") {
                const size_t x = v.find('x');
                if (x == std::string::npos) usage("--image-size is WxH");
                o.image_w = std::stoi(v.substr(0, x));
                o.image_h = std::stoi(v.substr(x + 1));
            } else if (flag == "--clients")
                o.clients = std::stoi(v);
            else if (flag == "--duration")
                o.duration_s = std::stod(v);
            else if (flag == "--warmup")
                o.warmup_s = std::stod(v);
            else if (flag == "--think-ms")
                o.think_ms = std::stoi(v);
            else if (flag == "--max-clicks")
                o.max_clicks = std::stol(v);
            else if (flag == "--idle-sessions")
                o.idle_sessions = std::stoi(v);
            else if (flag == "--server-threads")
                o.server_threads = std::stoi(v);
            else if (flag == "--server-omp")
                o.server_omp = std::stoi(v);
            else if (flag == "--server-precision")
                o.server_precision = v;
            else if (flag == "--server-encode-nice")
                o.server_encode_nice = std::stoi(v);
            else if (flag == "--server-decode-threads")
                o.server_decode_threads = std::stoi(v);
            else if (flag == "--server-compute-threads")
                o.server_compute_threads = std::stoi(v);
            else if (flag == "--encode-during")
                o.encode_during = std::stoi(v);
            else if (flag == "--output")
                o.output = v;
            else if (flag == "--seed")
                o.seed = static_cast<uint32_t>(std::stoul(v));
            else
                usage("unknown flag " + flag);
        } catch (const std::logic_error&) {
            usage("bad value for " + flag + ": " + v);
        }
    }
    if (o.model.empty()) usage("--model is required");
    if (o.clients < 1 || o.duration_s <= 0 || o.warmup_s < 0 || o.max_clicks < 1 ||
        o.idle_sessions < 0 || o.synth_images < 0 || o.image_w < 16 || o.image_h < 16 ||
        o.think_ms < 0 || o.encode_during < 0) {
        usage("counts, sizes and the duration must be positive");
    }
    if (o.synth_images + o.image_files.size() == 0) usage("no images");
    return o;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---- the server process ----------------------------------------------------------------------

struct Memory {
    double rss_mb = 0, hwm_mb = 0;
};

class ServerProcess {
  public:
    // Starts `serve` on an ephemeral loopback port and waits (bounded) for its URL line.
    ServerProcess(const Options& o, const std::string& data_dir) {
        int out[2];
        if (pipe(out) != 0) throw std::runtime_error("pipe failed");
        const std::string log = data_dir + "/server.log";
        std::vector<std::string> args = {o.server,      "serve",
                                         "--host",      "127.0.0.1",
                                         "--port",      "0",
                                         "--data-dir",  data_dir,
                                         "--model",     o.model,
                                         "--threads",   std::to_string(o.server_threads),
                                         "--precision", o.server_precision,
                                         "--quiet"};
        if (o.server_encode_nice >= 0) {
            args.push_back("--encode-nice");
            args.push_back(std::to_string(o.server_encode_nice));
        }
        if (o.server_decode_threads >= 0) {
            args.push_back("--decode-threads");
            args.push_back(std::to_string(o.server_decode_threads));
        }
        if (o.server_compute_threads >= 0) {
            args.push_back("--compute-threads");
            args.push_back(std::to_string(o.server_compute_threads));
        }
        pid_ = fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            dup2(out[1], STDOUT_FILENO);
            const int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (err >= 0) dup2(err, STDERR_FILENO);
            close(out[0]);
            if (o.server_omp > 0)
                setenv("OMP_NUM_THREADS", std::to_string(o.server_omp).c_str(), 1);
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            std::perror("bench_load: exec splitseg");
            _exit(127);
        }
        close(out[1]);
        out_ = out[0];
        port_ = read_port(log);
    }
    ~ServerProcess() {
        kill(pid_, SIGTERM);
        int status = 0;
        for (int i = 0; i < 100 && waitpid(pid_, &status, WNOHANG) == 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (waitpid(pid_, &status, WNOHANG) == 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
        }
        close(out_);
    }
    uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }

    Memory memory() const {
        std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
        Memory m;
        std::string line;
        while (std::getline(in, line)) {
            // "VmRSS:    123456 kB"
            if (line.rfind("VmRSS:", 0) == 0) m.rss_mb = std::stod(line.substr(6)) / 1024;
            if (line.rfind("VmHWM:", 0) == 0) m.hwm_mb = std::stod(line.substr(6)) / 1024;
        }
        return m;
    }

    // User + system CPU seconds the server has used so far: with the machine shared, the CPU
    // time per click is the figure that does not depend on what else runs.
    double cpu_seconds() const {
        const std::vector<double> f = stat_fields(15);
        return (f[14] + f[15]) / static_cast<double>(sysconf(_SC_CLK_TCK));  // utime, stime
    }

    // Page faults the server waited on the disk for so far. This VM's kernel runs DAMON with a
    // "pageout" scheme: file pages (the program's code among them) unused for seconds are
    // dropped, and the next use reads them back while the request waits.
    double major_faults() const { return stat_fields(12)[12]; }  // majflt

  private:
    // /proc/<pid>/stat's numeric fields 3 to `last`, at their field numbers (1-based).
    std::vector<double> stat_fields(int last) const {
        std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::istringstream fields(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
        std::vector<double> out(last + 1);
        std::string field;
        for (int i = 3; i <= last && fields >> field; ++i)
            out[i] = i == 3 ? 0.0 : std::stod(field);  // field 3 is the state, a letter
        return out;
    }

    uint16_t read_port(const std::string& log) {
        std::string text;
        const auto deadline = Clock::now() + std::chrono::seconds(180);
        while (Clock::now() < deadline) {
            pollfd p{out_, POLLIN, 0};
            if (poll(&p, 1, 200) > 0) {
                char buf[512];
                const ssize_t n = read(out_, buf, sizeof buf);
                if (n <= 0) break;
                text.append(buf, static_cast<size_t>(n));
                const std::string marker = "listening on http://127.0.0.1:";
                const size_t at = text.find(marker);
                if (at != std::string::npos &&
                    text.find(' ', at + marker.size()) != std::string::npos)
                    return static_cast<uint16_t>(std::stoi(text.substr(at + marker.size())));
            }
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) break;
        }
        std::string tail = read_file(log);
        if (tail.size() > 2000) tail = tail.substr(tail.size() - 2000);
        throw std::runtime_error("the server did not start; its log ends:\n" + tail);
    }

    pid_t pid_ = -1;
    int out_ = -1;
    uint16_t port_ = 0;
};

// ---- HTTP over one keep-alive connection, each exchange bounded in time ----------------------

class HttpClient {
  public:
    explicit HttpClient(uint16_t port) : stream_(ioc_) {
        stream_.expires_after(std::chrono::seconds(10));
        bool done = false;
        beast::error_code ec;
        stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port),
                              [&](beast::error_code e) {
                                  ec = e;
                                  done = true;
                              });
        run(done);
        if (ec) throw beast::system_error(ec);
    }

    std::pair<int, std::string> send(http::verb method, const std::string& target,
                                     const std::string& body = "") {
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "127.0.0.1");
        req.body() = body;
        req.prepare_payload();
        http::response_parser<http::string_body> parser;
        parser.body_limit(256u << 20);
        bool done = false;
        beast::error_code ec;
        stream_.expires_after(std::chrono::seconds(60));
        http::async_write(stream_, req, [&](beast::error_code e, size_t) {
            if (e) {
                ec = e;
                done = true;
                return;
            }
            http::async_read(stream_, buffer_, parser, [&](beast::error_code e2, size_t) {
                ec = e2;
                done = true;
            });
        });
        run(done);
        if (ec) throw beast::system_error(ec);
        return {parser.get().result_int(), parser.get().body()};
    }

    json send_json(http::verb method, const std::string& target, const std::string& body,
                   int expect_low, int expect_high) {
        auto [status, text] = send(method, target, body);
        if (status < expect_low || status > expect_high) {
            throw std::runtime_error(target + " answered " + std::to_string(status) + ": " + text);
        }
        return json::parse(text);
    }

  private:
    void run(const bool& done) {
        ioc_.restart();
        while (!done && ioc_.run_one() > 0) {
        }
        if (!done) throw std::runtime_error("HTTP exchange ended without an answer");
    }

    net::io_context ioc_;
    beast::tcp_stream stream_;  // its expiry bounds every exchange
    beast::flat_buffer buffer_;
};

// ---- images ----------------------------------------------------------------------------------

// A synthetic photo-sized picture: a gradient with a few filled ellipses, different per seed.
std::string synthetic_png(int w, int h, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0, 1);
    std::vector<uint8_t> rgba(static_cast<size_t>(w) * h * 4);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            uint8_t* p = &rgba[(static_cast<size_t>(y) * w + x) * 4];
            p[0] = static_cast<uint8_t>(40 + 100 * x / w);
            p[1] = static_cast<uint8_t>(60 + 80 * y / h);
            p[2] = static_cast<uint8_t>(90 + (seed * 37) % 100);
            p[3] = 255;
        }
    for (int e = 0; e < 6; ++e) {
        const float cx = u(rng) * w, cy = u(rng) * h;
        const float rx = (0.05f + 0.2f * u(rng)) * w, ry = (0.05f + 0.2f * u(rng)) * h;
        const uint8_t color[3] = {static_cast<uint8_t>(255 * u(rng)),
                                  static_cast<uint8_t>(255 * u(rng)),
                                  static_cast<uint8_t>(255 * u(rng))};
        for (int y = std::max(0, int(cy - ry)); y < std::min(h, int(cy + ry) + 1); ++y)
            for (int x = std::max(0, int(cx - rx)); x < std::min(w, int(cx + rx) + 1); ++x) {
                const float dx = (x - cx) / rx, dy = (y - cy) / ry;
                if (dx * dx + dy * dy > 1) continue;
                uint8_t* p = &rgba[(static_cast<size_t>(y) * w + x) * 4];
                std::copy(color, color + 3, p);
            }
    }
    const std::vector<uint8_t> png = splitseg::encode_png_rgba(rgba.data(), w, h);
    return std::string(png.begin(), png.end());
}

struct UploadedImage {
    std::string id;
    int width = 0, height = 0;
};

// ---- statistics ------------------------------------------------------------------------------

json latency_summary(std::vector<double> ms) {
    if (ms.empty()) return {{"count", 0}};
    std::sort(ms.begin(), ms.end());
    auto pct = [&](double p) {  // nearest rank
        const size_t rank = static_cast<size_t>(std::ceil(p / 100 * ms.size()));
        return ms[std::clamp<size_t>(rank, 1, ms.size()) - 1];
    };
    double sum = 0;
    for (double v : ms) sum += v;
    auto r2 = [](double v) { return std::round(v * 100) / 100; };
    return {{"count", ms.size()}, {"mean", r2(sum / ms.size())}, {"p50", r2(pct(50))},
            {"p95", r2(pct(95))}, {"p99", r2(pct(99))},          {"max", r2(ms.back())}};
}

// Sum and count of every splitseg_click_stage_seconds series, by stage.
std::map<std::string, std::pair<double, double>> stage_totals(const std::string& metrics) {
    std::map<std::string, std::pair<double, double>> out;
    std::istringstream in(metrics);
    std::string line;
    const std::string name = "splitseg_click_stage_seconds_";
    while (std::getline(in, line)) {
        if (line.rfind(name, 0) != 0) continue;
        const size_t q = line.find("stage=\"");
        if (q == std::string::npos) continue;
        const std::string stage = line.substr(q + 7, line.find('"', q + 7) - q - 7);
        const double value = std::stod(line.substr(line.rfind(' ') + 1));
        if (line.compare(name.size(), 4, "sum{") == 0) out[stage].first = value;
        if (line.compare(name.size(), 6, "count{") == 0) out[stage].second = value;
    }
    return out;
}

double metric_value(const std::string& metrics, const std::string& name) {
    std::istringstream in(metrics);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    return 0;
}

// ---- the WebSocket clickers ------------------------------------------------------------------

struct LoadState {
    // Clicks sent before measure_from (the warm-up: every client's first, multimask click lands
    // within the first think time) are answered but not counted.
    Clock::time_point start, measure_from, stop_at;
    long answered = 0;  // every message answered, warm-up included
    long max_clicks = 0;
    long clicks_sent = 0;
    bool stopping = false;
    std::vector<double> click_ms, undo_ms, reset_ms;
    std::vector<double> click_server_ms;  // the replies' latency_ms: the server's own time
    long errors = 0;
    std::string first_error;
    int connected = 0, finished = 0;
    double reply_bytes = 0;  // summed over the clicks' replies

    void fail(const std::string& what) {
        if (errors++ == 0) first_error = what;
    }
};

// A socket reply's own fields ("id", "status", ...), parsed without its body: the server splices
// the body in last, and a click's body holds ~100 KB of masks that the load generator would
// otherwise parse on the cores the server is measured on. Not an object if malformed.
json reply_head(const std::string& text) {
    const size_t body = text.find(",\"body\":");
    if (body == std::string::npos) return json::parse(text, nullptr, false);
    return json::parse(text.substr(0, body) + "}", nullptr, false);
}

// The body's "latency_ms" (before its "masks": the server writes keys in order), or 0.
double body_latency_ms(const std::string& text) {
    const std::string key = "\"latency_ms\":";
    const size_t at = text.find(key, text.find(",\"body\":"));
    return at == std::string::npos ? 0.0 : std::strtod(text.c_str() + at + key.size(), nullptr);
}

// One client: opens the session's socket, then clicks until the run stops. Each message waits
// for its reply before the next is sent, as a person clicking would.
class Clicker : public std::enable_shared_from_this<Clicker> {
  public:
    Clicker(net::io_context& ioc, LoadState& state, uint16_t port, std::string session_id,
            const UploadedImage& image, const std::string& output, int think_ms, uint32_t seed)
        : ws_(ioc),
          think_(ioc),
          think_ms_(think_ms),
          state_(state),
          port_(port),
          session_id_(std::move(session_id)),
          image_(image),
          output_(output),
          rng_(seed) {}

    void connect(std::function<void()> on_ready) {
        on_ready_ = std::move(on_ready);
        beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(10));
        beast::get_lowest_layer(ws_).async_connect(
            tcp::endpoint(net::ip::make_address("127.0.0.1"), port_),
            [self = shared_from_this()](beast::error_code ec) {
                if (ec) return self->finish("connect: " + ec.message());
                beast::get_lowest_layer(self->ws_).socket().set_option(tcp::no_delay(true), ec);
                beast::get_lowest_layer(self->ws_).expires_never();
                self->ws_.set_option(
                    websocket::stream_base::timeout::suggested(beast::role_type::client));
                self->ws_.read_message_max(64u << 20);
                self->ws_.async_handshake("127.0.0.1",
                                          "/api/v1/sessions/" + self->session_id_ + "/ws",
                                          [self](beast::error_code e) {
                                              if (e)
                                                  return self->finish("handshake: " + e.message());
                                              self->on_ready_();
                                          });
            });
    }

    void send_next() {
        if (state_.stopping || Clock::now() >= state_.stop_at ||
            state_.clicks_sent >= state_.max_clicks) {
            state_.stopping = true;
            return ws_.async_close(
                websocket::close_code::normal,
                [self = shared_from_this()](beast::error_code) { self->finish(""); });
        }
        json msg;
        std::uniform_real_distribution<float> u(0, 1);
        if (points_ >= 8) {
            kind_ = "reset";
            msg = {{"type", "reset"}};
        } else if (points_ > 1 && u(rng_) < 0.15f) {
            kind_ = "undo";
            msg = {{"type", "undo"}};
        } else {
            kind_ = "click";
            // Points near this client's object, mostly foreground.
            if (points_ == 0) {
                cx_ = image_.width * (0.2f + 0.6f * u(rng_));
                cy_ = image_.height * (0.2f + 0.6f * u(rng_));
            }
            const float x = std::clamp(cx_ + (u(rng_) - 0.5f) * 0.1f * image_.width, 0.f,
                                       float(image_.width - 1));
            const float y = std::clamp(cy_ + (u(rng_) - 0.5f) * 0.1f * image_.height, 0.f,
                                       float(image_.height - 1));
            msg = {{"type", "prompts"},
                   {"points", {{x, y, u(rng_) < 0.8f ? 1 : 0}}},
                   {"output", output_}};
            ++state_.clicks_sent;
        }
        msg["id"] = ++sent_;
        out_ = msg.dump();
        sent_at_ = Clock::now();
        ws_.text(true);
        ws_.async_write(
            net::buffer(out_), [self = shared_from_this()](beast::error_code ec, size_t) {
                if (ec) return self->finish("write: " + ec.message());
                self->buffer_.clear();
                self->ws_.async_read(self->buffer_,
                                     [self](beast::error_code e, size_t) { self->on_reply(e); });
            });
    }

  private:
    void on_reply(beast::error_code ec) {
        if (ec) return finish("read: " + ec.message());
        const double ms =
            std::chrono::duration<double, std::milli>(Clock::now() - sent_at_).count();
        const std::string text = beast::buffers_to_string(buffer_.data());
        const json reply = reply_head(text);
        const bool measured = sent_at_ >= state_.measure_from;
        const int status = reply.is_object() ? reply.value("status", 0) : 0;
        if (status != 200 || reply.value("id", -1L) != sent_) {
            state_.fail(kind_ + " answered " + std::to_string(status) + ": " + text.substr(0, 300));
        } else if (kind_ == "click") {
            if (measured) {
                state_.click_ms.push_back(ms);
                state_.reply_bytes += static_cast<double>(buffer_.size());
                state_.click_server_ms.push_back(body_latency_ms(text));
            }
            ++points_;
        } else if (kind_ == "undo") {
            if (measured) state_.undo_ms.push_back(ms);
            --points_;
        } else {
            if (measured) state_.reset_ms.push_back(ms);
            points_ = 0;
        }
        ++state_.answered;
        think_then_send();
    }

  public:
    // The pause before the next message: exponential with mean think_ms, as independent people
    // take. A fixed pause keeps the clients in lockstep: every click would queue behind the
    // others' and the latencies would measure that burst, not the server's load. The first
    // message waits a uniform [0, think_ms) for the same reason.
    void think_then_send(bool first = false) {
        if (think_ms_ == 0) return send_next();
        const double ms = first ? std::uniform_real_distribution<double>(0, think_ms_)(rng_)
                                : std::exponential_distribution<double>(1.0 / think_ms_)(rng_);
        think_.expires_after(std::chrono::microseconds(static_cast<int64_t>(1000 * ms)));
        think_.async_wait([self = shared_from_this()](beast::error_code) { self->send_next(); });
    }

  private:
    void finish(const std::string& error) {
        if (!error.empty()) state_.fail(error);
        ++state_.finished;
    }

    websocket::stream<beast::tcp_stream> ws_;
    net::steady_timer think_;
    int think_ms_;
    LoadState& state_;
    uint16_t port_;
    std::string session_id_;
    UploadedImage image_;
    std::string output_;
    std::mt19937 rng_;
    std::function<void()> on_ready_;
    beast::flat_buffer buffer_;
    std::string out_, kind_;
    Clock::time_point sent_at_;
    long sent_ = 0;
    int points_ = 0;
    float cx_ = 0, cy_ = 0;
};

// CPU seconds of the calling thread: the clients all run on it.
double thread_cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// The machine's CPU time in clock ticks, all of it and what the hypervisor stole (/proc/stat's
// first line): a guest whose cores are taken away for a while shows it as a latency tail.
std::pair<double, double> machine_total_and_steal() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    double field = 0, total = 0, steal = 0;
    in >> cpu;
    for (int i = 0; i < 8 && in >> field; ++i) {  // user nice system idle iowait irq softirq steal
        total += field;
        if (i == 7) steal = field;
    }
    return {total, steal};
}

// How late a thread that sleeps 2 ms at a time wakes up, one such thread pinned to each CPU at
// real-time priority (where the process may have it): a real-time thread preempts the server on
// its CPU, so a wake-up tens of ms late is time the CPU did not run this machine at all. On this
// VM /proc/stat's steal stays 0 while single decodes take 10x their time; this shows those
// minutes. Counts the wake-ups of [from, to) only.
class StallMeter {
  public:
    StallMeter() {
        const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        late_.resize(cpus);
        for (int cpu = 0; cpu < cpus; ++cpu) threads_.emplace_back([this, cpu] { watch(cpu); });
    }
    ~StallMeter() { stop(); }

    json summary(Clock::time_point from, Clock::time_point to) {
        stop();
        int over_10 = 0, over_50 = 0;
        double worst = 0, total = 0;
        for (const auto& cpu : late_)
            for (const auto& [at, ms] : cpu) {
                if (at < from || at >= to || ms < 10) continue;
                ++over_10;
                over_50 += ms >= 50;
                worst = std::max(worst, ms);
                total += ms;
            }
        return {{"late_wakeups_over_10ms", over_10},
                {"late_wakeups_over_50ms", over_50},
                {"max_ms", std::round(worst * 10) / 10},
                {"total_ms", std::round(total)},
                {"realtime", realtime_.load()}};
    }

  private:
    void watch(int cpu) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        const sched_param rt{.sched_priority = 1};
        if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &rt) != 0) realtime_ = false;
        constexpr auto kPeriod = std::chrono::milliseconds(2);
        while (!stopping_) {
            const Clock::time_point due = Clock::now() + kPeriod;
            std::this_thread::sleep_until(due);
            const Clock::time_point woke = Clock::now();
            const double late = std::chrono::duration<double, std::milli>(woke - due).count();
            if (late >= 5) late_[cpu].push_back({woke, late});
        }
    }
    void stop() {
        stopping_ = true;
        for (std::thread& t : threads_)
            if (t.joinable()) t.join();
    }

    std::atomic<bool> stopping_{false}, realtime_{true};
    std::vector<std::vector<std::pair<Clock::time_point, double>>> late_;  // per CPU
    std::vector<std::thread> threads_;
};

Clock::duration seconds_of(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Runs every client on one io_context until all have finished or the run's hard limit passes.
json run_clicks(const Options& o, uint16_t port, const std::vector<std::string>& session_ids,
                const std::vector<UploadedImage>& images, const ServerProcess& server) {
    net::io_context ioc;
    LoadState state;
    state.max_clicks = o.max_clicks;
    std::vector<std::shared_ptr<Clicker>> clickers;
    for (size_t i = 0; i < session_ids.size(); ++i) {
        clickers.push_back(std::make_shared<Clicker>(
            ioc, state, port, session_ids[i], images[i % images.size()], o.output, o.think_ms,
            o.seed * 1000 + static_cast<uint32_t>(i)));
    }
    // Everyone connects first; the clock starts when the last socket is open.
    for (auto& c : clickers) {
        c->connect([&] {
            if (++state.connected < static_cast<int>(clickers.size())) return;
            state.start = Clock::now();
            state.measure_from = state.start + seconds_of(o.warmup_s);
            state.stop_at = state.measure_from + seconds_of(o.duration_s);
            for (auto& each : clickers) each->think_then_send(/*first=*/true);
        });
    }
    // Sample the server's RSS while it works.
    double peak_rss = 0;
    net::steady_timer sampler(ioc);
    std::function<void()> sample = [&] {
        peak_rss = std::max(peak_rss, server.memory().rss_mb);
        if (state.finished == static_cast<int>(clickers.size())) return;
        sampler.expires_after(std::chrono::milliseconds(250));
        sampler.async_wait([&](beast::error_code ec) {
            if (!ec) sample();
        });
    };
    sample();
    const double cpu_before = thread_cpu_seconds();
    const auto [ticks_before, steal_before] = machine_total_and_steal();
    StallMeter stalls;
    ioc.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(o.warmup_s + o.duration_s + 60)));
    const double seconds = std::chrono::duration<double>(Clock::now() - state.measure_from).count();
    const double client_cpu = thread_cpu_seconds() - cpu_before;
    const auto [ticks_after, steal_after] = machine_total_and_steal();
    const double ticks = ticks_after - ticks_before;
    if (state.finished < static_cast<int>(clickers.size()))
        state.fail(std::to_string(clickers.size() - state.finished) + " clients never finished");
    const double clicks = static_cast<double>(state.click_ms.size());
    const double messages = clicks + state.undo_ms.size() + state.reset_ms.size();
    return {
        {"seconds", std::round(seconds * 100) / 100},
        {"warmup_s", o.warmup_s},
        {"messages_answered", state.answered},
        {"clicks", state.click_ms.size()},
        {"clicks_per_s", std::round(clicks / seconds * 10) / 10},
        {"messages_per_s", std::round(messages / seconds * 10) / 10},
        {"click_latency_ms", latency_summary(state.click_ms)},
        {"click_server_latency_ms", latency_summary(state.click_server_ms)},
        {"undo_latency_ms", latency_summary(state.undo_ms)},
        {"reset_latency_ms", latency_summary(state.reset_ms)},
        {"errors", state.errors},
        {"first_error", state.first_error},
        {"server_peak_rss_mb", std::round(peak_rss * 10) / 10},
        {"client_cpu_s", std::round(client_cpu * 100) / 100},
        {"click_reply_kb", clicks > 0 ? std::round(state.reply_bytes / clicks / 102.4) / 10 : 0.0},
        {"machine_steal_pct",
         ticks > 0 ? std::round((steal_after - steal_before) / ticks * 1000) / 10 : 0.0},
        {"machine_stalls", stalls.summary(state.measure_from, state.stop_at)}};
}

// Milliseconds of the model's prompt decoder on one thread for a session's fifth click (five
// points and the previous mask, one mask), the median of 15 after a warm-up, on a random
// embedding: the machine's speed this minute. Null when the model has no SAM decoder.
json probe_decode_ms(const Options& o) {
    using namespace splitseg;
    try {
        const Precision precision = o.server_precision == "bf16" ? Precision::BF16 : Precision::F32;
        const SamDecoder decoder = SamDecoder::load(WeightFile::open(o.model), precision);
        const SamDecoderConfig& c = decoder.config();
        if (c.variant != DecoderVariant::Sam) return nullptr;  // SAM 2 wants its high-res maps
        std::mt19937 rng(1);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        Tensor embed({c.embed_dim, c.grid, c.grid});
        Tensor mask({1, c.mask_size(), c.mask_size()});
        for (int64_t i = 0; i < embed.numel(); ++i) embed[i] = normal(rng);
        for (int64_t i = 0; i < mask.numel(); ++i) mask[i] = 4.0f * normal(rng);
        const DecoderImage image = decoder.prepare(std::move(embed));
        Prompt prompt;
        for (int i = 0; i < 5; ++i)
            prompt.points.push_back({100.0f + 150.0f * i, 900.0f - 140.0f * i, i % 2});
        prompt.mask_input = &mask;
        const ThreadCap one(1);
        const double seconds =
            bench::median_seconds(15, [&] { decoder.decode(image, prompt, MaskChoice::Single); });
        return std::round(seconds * 1e5) / 100;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_load: no decode probe: %s\n", e.what());
        return nullptr;
    }
}

std::string session_body(const std::string& image_id) {
    return json{{"image_id", image_id}}.dump();
}

int run(const Options& o) {
    if (!fs::exists(o.model)) {
        std::fprintf(stderr, "bench_load: no model at %s\n", o.model.c_str());
        return o.skip_missing_model ? kSkip : 1;
    }
    if (!fs::exists(o.server)) usage("no server binary at " + o.server);
    const bool own_dir = o.data_dir.empty();
    const std::string data_dir =
        own_dir ? (fs::temp_directory_path() / ("bench_load." + std::to_string(getpid()))).string()
                : o.data_dir;
    fs::create_directories(data_dir);
    struct RemoveDir {  // a temporary directory goes, however the run ends
        std::string path;
        ~RemoveDir() {
            std::error_code ignored;
            if (!path.empty()) fs::remove_all(path, ignored);
        }
    } cleanup{own_dir ? data_dir : ""};
    json report;
    report["machine_probe"]["decode_ms_before"] = probe_decode_ms(o);
    {
        ServerProcess server(o, data_dir);
        HttpClient http(server.port());
        report["server"] = {
            {"pid", server.pid()},
            {"threads", o.server_threads},
            {"omp_threads", o.server_omp > 0 ? json(o.server_omp) : json(nullptr)},
            {"decode_threads",
             o.server_decode_threads >= 0 ? json(o.server_decode_threads) : json(nullptr)},
            {"compute_threads",
             o.server_compute_threads >= 0 ? json(o.server_compute_threads) : json(nullptr)},
            {"rss_mb_started", server.memory().rss_mb}};

        // Upload and wait for every encode.
        std::vector<std::string> bodies;
        for (const std::string& f : o.image_files) bodies.push_back(read_file(f));
        for (int i = 0; i < o.synth_images; ++i)
            bodies.push_back(synthetic_png(o.image_w, o.image_h, o.seed + i));
        std::vector<UploadedImage> images;
        std::string ids;
        const auto upload_start = Clock::now();
        for (const std::string& body : bodies) {
            json r = http.send_json(http::verb::post, "/api/v1/images", body, 200, 201);
            images.push_back({r["id"], r["width"], r["height"]});
            ids += (ids.empty() ? "" : ",") + images.back().id;
        }
        for (;;) {
            json r = http.send_json(http::verb::get, "/api/v1/images?ids=" + ids, "", 200, 200);
            int done = 0;
            for (const json& im : r["images"]) {
                if (im["status"] == "completed") ++done;
                if (im["status"] == "failed")
                    throw std::runtime_error("encode failed: " + im.dump());
            }
            if (done == static_cast<int>(images.size())) break;
            if (Clock::now() - upload_start > std::chrono::minutes(15))
                throw std::runtime_error("encodes did not finish within 15 minutes");
            std::this_thread::sleep_for(std::chrono::milliseconds(250));
        }
        const double encode_s = std::chrono::duration<double>(Clock::now() - upload_start).count();
        report["images"] = {
            {"count", images.size()},
            {"encode_all_s", std::round(encode_s * 10) / 10},
            {"synthetic_size", std::to_string(o.image_w) + "x" + std::to_string(o.image_h)},
            {"files", o.image_files}};

        // Warm every image's decoder state with a throwaway session, so that neither the idle
        // figure nor the first clicks pay for it.
        for (const UploadedImage& im : images) {
            json s =
                http.send_json(http::verb::post, "/api/v1/sessions", session_body(im.id), 201, 201);
            http.send(http::verb::delete_,
                      "/api/v1/sessions/" + s["session_id"].get<std::string>());
        }

        // Idle sessions: K sessions that each answered one click, then sit idle.
        if (o.idle_sessions > 0) {
            const std::string before_metrics = http.send(http::verb::get, "/metrics").second;
            const Memory before = server.memory();
            std::vector<std::string> idle;
            for (int i = 0; i < o.idle_sessions; ++i) {
                const UploadedImage& im = images[i % images.size()];
                json s = http.send_json(http::verb::post, "/api/v1/sessions", session_body(im.id),
                                        201, 201);
                idle.push_back(s["session_id"]);
                const json click = {{"points", {{im.width / 2, im.height / 2, 1}}},
                                    {"output", o.output}};
                http.send_json(http::verb::post, "/api/v1/sessions/" + idle.back() + "/prompts",
                               click.dump(), 200, 200);
            }
            const Memory after = server.memory();
            const std::string after_metrics = http.send(http::verb::get, "/metrics").second;
            const double held = metric_value(after_metrics, "splitseg_session_bytes") -
                                metric_value(before_metrics, "splitseg_session_bytes");
            const double per = (after.rss_mb - before.rss_mb) / o.idle_sessions;
            report["idle_sessions"] = {{"count", o.idle_sessions},
                                       {"rss_mb_before", std::round(before.rss_mb * 10) / 10},
                                       {"rss_mb_after", std::round(after.rss_mb * 10) / 10},
                                       {"rss_mb_per_session", std::round(per * 1000) / 1000},
                                       {"accounted_mb_per_session",
                                        std::round(held / o.idle_sessions / 1e6 * 1000) / 1000}};
            for (const std::string& sid : idle)
                http.send(http::verb::delete_, "/api/v1/sessions/" + sid);
        }

        // The clicking clients, each on its own session.
        std::vector<std::string> sessions;
        for (int i = 0; i < o.clients; ++i) {
            json s = http.send_json(http::verb::post, "/api/v1/sessions",
                                    session_body(images[i % images.size()].id), 201, 201);
            sessions.push_back(s["session_id"]);
        }
        const auto stages_before = stage_totals(http.send(http::verb::get, "/metrics").second);
        const double cpu_before = server.cpu_seconds(), faults_before = server.major_faults();
        // Background encodes: new images uploaded one after another while the clients click
        // (their encodes queue on the server's encode thread).
        std::string uploader_error;
        std::thread uploader([&] {
            try {
                if (o.encode_during == 0) return;
                HttpClient uploads(server.port());
                for (int i = 0; i < o.encode_during; ++i)
                    uploads.send_json(http::verb::post, "/api/v1/images",
                                      synthetic_png(o.image_w, o.image_h, o.seed + 1000 + i), 201,
                                      201);
            } catch (const std::exception& e) {
                uploader_error = e.what();
            }
        });
        report["load"] = run_clicks(o, server.port(), sessions, images, server);
        uploader.join();
        if (!uploader_error.empty()) throw std::runtime_error("upload: " + uploader_error);
        report["load"]["encodes_queued_during"] = o.encode_during;
        const double cpu_used = server.cpu_seconds() - cpu_before;
        report["load"]["server_major_faults"] = server.major_faults() - faults_before;
        // The server's CPU covers the warm-up too: per message answered, warm-up included.
        const double messages = report["load"]["messages_answered"].get<double>();
        report["load"]["server_cpu_s"] = std::round(cpu_used * 100) / 100;
        report["load"]["server_cpu_ms_per_message"] =
            messages > 0 ? json(std::round(cpu_used / messages * 1e5) / 100) : json(nullptr);
        report["load"]["clients"] = o.clients;
        report["load"]["think_ms"] = o.think_ms;
        report["load"]["output"] = o.output;
        const auto stages_after = stage_totals(http.send(http::verb::get, "/metrics").second);
        json stages = json::object();
        for (const auto& [stage, total] : stages_after) {
            const auto b = stages_before.count(stage) ? stages_before.at(stage)
                                                      : std::pair<double, double>{0, 0};
            const double n = total.second - b.second;
            if (n > 0) stages[stage] = std::round((total.first - b.first) / n * 1e5) / 100;
        }
        report["load"]["server_stage_mean_ms"] = stages;
        const Memory end = server.memory();
        report["server"]["rss_mb_end"] = std::round(end.rss_mb * 10) / 10;
        report["server"]["hwm_mb"] = std::round(end.hwm_mb * 10) / 10;
    }
    report["machine_probe"]["decode_ms_after"] = probe_decode_ms(o);

    const json& load = report["load"];
    const double p99 = load["click_latency_ms"].value("p99", 1e9);
    report["targets"] = {{"clicks_per_s_ge_100", load["clicks_per_s"].get<double>() >= 100},
                         {"p99_le_60ms", p99 <= 60}};
    if (report.contains("idle_sessions"))
        report["targets"]["idle_session_le_6mb"] =
            report["idle_sessions"]["rss_mb_per_session"].get<double>() <= 6;
    std::printf("%s\n", report.dump(2).c_str());
    // A run with errors or without a single answered click did not measure anything.
    if (load["errors"].get<long>() > 0 || load["clicks"].get<long>() == 0) return 1;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    const Options o = parse_options(argc, argv);
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_load: %s\n", e.what());
        return 1;
    }
}
