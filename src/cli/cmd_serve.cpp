// splitseg serve: the HTTP API over one model, with one background encode thread. Everything
// lives under --data-dir by default: the SQLite job database, uploaded images and a disk cache of
// embedding bundles. --jobs postgres:CONNINFO puts the job queue in PostgreSQL instead, for
// encode workers on other machines.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "service/api.h"
#include "service/log.h"
#include "service/server.h"
#include "store/postgres_job_queue.h"
#include "store/sqlite_job_queue.h"
#include "store/store_spec.h"

namespace splitseg::cli {

// "sqlite:PATH" or "postgres:CONNINFO" (a libpq string or postgresql:// URI). Each call opens
// its own connection: the API and the encode thread each need one.
static std::unique_ptr<JobQueue> open_job_queue(const std::string& spec) {
    if (spec.rfind("sqlite:", 0) == 0) return open_sqlite_job_queue(spec.substr(7));
    if (spec.rfind("postgres:", 0) == 0) return open_postgres_job_queue(spec.substr(9));
    if (spec.rfind("postgresql://", 0) == 0) return open_postgres_job_queue(spec);
    throw UsageError("--jobs is sqlite:PATH or postgres:CONNINFO, not '" + spec + "'");
}

static std::optional<std::string> flag_or_env(const Args& args, const std::string& name,
                                              const char* env) {
    if (auto v = args.get(name)) return v;
    const char* e = std::getenv(env);
    return e && *e ? std::optional<std::string>(e) : std::nullopt;
}

namespace {

// The built web client: --web DIR, else SPLITSEG_WEB_DIR, else the first of <repo>/web/dist (the
// binary in a build folder of the repository) and <prefix>/share/splitseg/web (installed) that
// exists. "--web none" serves no client.
std::optional<std::string> web_dir(const Args& args) {
    if (auto dir = args.get("web")) return *dir == "none" ? std::nullopt : dir;
    if (const char* env = std::getenv("SPLITSEG_WEB_DIR")) return std::string(env);
    std::error_code ec;
    const std::filesystem::path exe_dir =
        std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
    if (ec) return std::nullopt;
    for (const auto& candidate :
         {exe_dir.parent_path() / "web" / "dist", exe_dir.parent_path() / "share/splitseg/web"}) {
        if (std::filesystem::is_regular_file(candidate / "index.html")) return candidate.string();
    }
    return std::nullopt;
}

// The worker's job with a log line per outcome; a failure is rethrown for the queue to record.
void logged_encode_job(Api& service, JobLease& lease) {
    const auto start = std::chrono::steady_clock::now();
    const Job& job = lease.job();
    nlohmann::json line = {{"event", "encode"}, {"tenant", job.tenant}, {"image", job.image_id}};
    auto ms = [&] {
        return std::round(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count());
    };
    try {
        service.encode_job(lease);
    } catch (const std::exception& e) {
        line.update({{"status", "failed"}, {"level", "error"}, {"error", e.what()}, {"ms", ms()}});
        log_json(line);
        throw;
    }
    line.update({{"status", "finished"}, {"ms", ms()}});
    log_json(line);
}

}  // namespace

int cmd_serve(const std::vector<std::string>& argv) {
    Args args(argv, {"quiet"});
    args.allow_only({"host",
                     "port",
                     "data-dir",
                     "model",
                     "store",
                     "threads",
                     "compute-threads",
                     "disk-threads",
                     "decode-threads",
                     "api-keys",
                     "cors-origin",
                     "max-body-mb",
                     "max-points",
                     "jobs",
                     "max-sessions",
                     "max-sessions-per-tenant",
                     "max-session-mb",
                     "session-ttl-s",
                     "rate-limit",
                     "rate-burst",
                     "quiet",
                     "web",
                     "encode-nice",
                     "decoder",
                     "precision",
                     "read-timeout-s",
                     "write-timeout-s",
                     "ws-idle-timeout-s"});
    const std::string data_dir = args.get("data-dir").value_or("./splitseg-data");
    std::filesystem::create_directories(data_dir);
    const std::string jobs_spec =
        flag_or_env(args, "jobs", "SPLITSEG_JOBS").value_or("sqlite:" + data_dir + "/jobs.db");

    ApiOptions api;
    api.data_dir = data_dir;
    api.cache = std::make_shared<EmbeddingCache>(open_store(
        args.get("store").value_or("mem:?max_bytes=256M,disk:" + data_dir + "/bundles")));
    api.jobs = open_job_queue(jobs_spec);
    api.max_body_bytes = static_cast<size_t>(args.get_int("max-body-mb", 32, 1, 4096)) << 20;
    api.max_points = static_cast<size_t>(args.get_int("max-points", 64, 1, 4096));
    api.cors_origin = args.get("cors-origin").value_or("*");
    api.decode_threads = args.get_int("decode-threads", 1, 0, 1024);
    api.sessions.max_sessions = static_cast<size_t>(args.get_int("max-sessions", 1000, 1, 1 << 24));
    api.sessions.max_per_tenant =
        static_cast<size_t>(args.get_int("max-sessions-per-tenant", 1000, 1, 1 << 24));
    api.sessions.max_bytes = static_cast<size_t>(args.get_int("max-session-mb", 2048, 1, 1 << 20))
                             << 20;
    api.sessions.ttl = Millis{1000} * args.get_int("session-ttl-s", 300, 1, 86400 * 7);
    api.rate_limit.per_second = args.get_int("rate-limit", 0, 0, 1 << 20);
    api.rate_limit.burst = args.get_int("rate-burst", 0, 0, 1 << 20);
    if (const auto model_path = flag_or_env(args, "model", "SPLITSEG_MODEL")) {
        api.model = load_model(*model_path, args);
        log_json({{"event", "model"}, {"model", api.model->describe()}});
    } else {
        log_json({{"event", "model"},
                  {"level", "warning"},
                  {"message",
                   "no model (--model or SPLITSEG_MODEL): image routes answer 503 no_model"}});
    }
    if (auto keys = args.get("api-keys")) {
        api.api_keys = load_api_keys(*keys);
    } else {
        log_json({{"event", "auth"},
                  {"level", "warning"},
                  {"message",
                   "no --api-keys: the API is open to anyone who can reach it (tenant "
                   "\"default\")"}});
    }

    api.decoder_path = args.get("decoder").value_or("");
    if (!api.decoder_path.empty() && !std::filesystem::is_regular_file(api.decoder_path))
        throw std::runtime_error("no decoder weights at " + api.decoder_path);
    if (const std::optional<std::string> web = web_dir(args)) {
        api.web = std::make_shared<StaticFiles>(*web);
        log_json({{"event", "web"}, {"root", api.web->root()}});
    } else {
        log_json({{"event", "web"}, {"message", "no web client (build web/ or give --web DIR)"}});
    }

    ServerOptions server_options;
    server_options.host = args.get("host").value_or("127.0.0.1");
    server_options.port = static_cast<uint16_t>(args.get_int("port", 8080, 0, 65535));
    server_options.threads = args.get_int("threads", 4, 1, 256);
    server_options.compute_threads = args.get_int("compute-threads", 0, 0, 256);
    server_options.disk_threads = args.get_int("disk-threads", 2, 1, 256);
    server_options.read_timeout = std::chrono::seconds(args.get_int("read-timeout-s", 30, 1, 3600));
    server_options.write_timeout =
        std::chrono::seconds(args.get_int("write-timeout-s", 30, 1, 3600));
    server_options.websocket_idle_timeout =
        std::chrono::seconds(args.get_int("ws-idle-timeout-s", 300, 1, 86400));
    server_options.body_limit = api.max_body_bytes;
    server_options.log_requests = !args.flag("quiet");
    server_options.stop_on_signals = true;

    Api service(api);
    Server server(service, server_options);

    // One encode thread with its own queue connection; it finishes its current job on
    // shutdown and leaves the queued ones for the next start.
    std::unique_ptr<JobQueue> worker_queue;
    std::unique_ptr<EncodeWorker> worker;
    std::thread worker_thread;
    if (api.model) {
        worker_queue = open_job_queue(jobs_spec);
        EncodeWorkerOptions worker_options;
        worker_options.nice_increment = args.get_int("encode-nice", 10, 0, 19);
        worker = std::make_unique<EncodeWorker>(
            *worker_queue, [&service](JobLease& lease) { logged_encode_job(service, lease); },
            worker_options);
        worker_thread = std::thread([&worker] { worker->run(); });
    }

    server.start();
    // The human-readable line stays on stdout: scripts wait for it.
    const std::string url = "http://" + server_options.host + ":" + std::to_string(server.port());
    std::printf("splitseg serve: listening on %s (data in %s, jobs in %s)\n", url.c_str(),
                data_dir.c_str(), jobs_spec.rfind("sqlite:", 0) == 0 ? "SQLite" : "PostgreSQL");
    std::fflush(stdout);
    log_json({{"event", "listening"}, {"url", url}, {"data_dir", data_dir}});
    server.wait();
    log_json({{"event", "stopping"},
              {"message",
               "finishing the encode in progress; queued "
               "encodes stay queued for the next start"}});
    if (worker) {
        worker->stop();
        worker_thread.join();
    }
    log_json({{"event", "stopped"}});
    return 0;
}

}  // namespace splitseg::cli
