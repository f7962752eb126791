#include "store/encode_worker.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>

namespace splitseg {
namespace {

std::string default_worker_id() {
    static std::atomic<int> next{0};
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
    return std::string(host[0] ? host : "worker") + ":" + std::to_string(getpid()) + ":" +
           std::to_string(next++);
}

// The job keeps this text as the reason it failed, so it must not be empty.
std::string describe(const std::exception& e) {
    const std::string what = e.what();
    return what.empty() ? "encode failed without a message" : what;
}

// Best effort: a thread may always lower its own priority, and an encode at the old one is still
// correct.
void raise_thread_nice(int increment) {
    const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
    errno = 0;
    const int current = ::getpriority(PRIO_PROCESS, tid);
    if (errno == 0) ::setpriority(PRIO_PROCESS, tid, std::min(current + increment, 19));
}

}  // namespace

JobLease::JobLease(JobQueue& queue, Job job, const EncodeWorkerOptions& options)
    : queue_(queue), job_(std::move(job)), options_(options), renewed_at_(options.clock()) {}

bool JobLease::keep_alive() {
    if (!held_) return false;
    const Millis now = options_.clock();
    if (now - renewed_at_ < options_.lease_duration / 3) return true;
    held_ = queue_.heartbeat(job_.id, options_.worker_id, options_.lease_duration);
    renewed_at_ = now;
    return held_;
}

EncodeWorker::EncodeWorker(JobQueue& queue, EncodeFunction encode, EncodeWorkerOptions options)
    : queue_(queue), encode_(std::move(encode)), options_(std::move(options)) {
    if (!encode_) throw std::invalid_argument("encode worker needs an encode function");
    if (!options_.clock) throw std::invalid_argument("encode worker clock is empty");
    if (options_.lease_duration <= 0 || options_.idle_wait <= 0) {
        throw std::invalid_argument("encode worker lease_duration and idle_wait must be > 0");
    }
    if (options_.worker_id.empty()) options_.worker_id = default_worker_id();
}

bool EncodeWorker::run_once() {
    std::optional<Job> job = queue_.lease(options_.worker_id, options_.lease_duration);
    if (!job) return false;
    JobLease lease(queue_, std::move(*job), options_);
    const JobId id = lease.job().id;
    std::optional<std::string> error;
    bool permanent = false;
    try {
        encode_(lease);
    } catch (const PermanentJobError& e) {
        error = describe(e);
        permanent = true;
    } catch (const std::exception& e) {
        error = describe(e);
    } catch (...) {
        error = "encode threw something that is not a std::exception";
    }
    const bool held = error ? queue_.fail(id, options_.worker_id, *error, permanent)
                            : queue_.complete(id, options_.worker_id);
    std::lock_guard lock(mutex_);
    if (error) ++counts_.failed;
    if (!error && held) ++counts_.completed;
    if (!held) ++counts_.lost;
    return true;
}

void EncodeWorker::run() {
    if (options_.nice_increment > 0) raise_thread_nice(options_.nice_increment);
    while (!stopping_) {
        bool worked = false;
        try {
            worked = run_once();
        } catch (const std::exception&) {
            std::lock_guard lock(mutex_);
            ++counts_.queue_errors;
        }
        if (worked) continue;
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, std::chrono::milliseconds(options_.idle_wait),
                       [&] { return stopping_.load(); });
    }
}

void EncodeWorker::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
}

EncodeWorkerCounts EncodeWorker::counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
}

}  // namespace splitseg
