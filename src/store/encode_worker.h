// EncodeWorker: the loop that turns queued jobs into encodes. It leases a job, runs the caller's
// encode function on it, and completes or fails the job. It starts no threads: the caller runs
// run() on a thread it owns and calls stop() from any other to end it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>

#include "store/job_queue.h"

namespace splitseg {

// Thrown by an encode function for input that can never encode (an undecodable image): the job
// fails at once. Any other exception is retried with backoff while attempts remain.
struct PermanentJobError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct EncodeWorkerOptions {
    std::string worker_id;  // empty: "<host>:<pid>:<n>", unique per worker
    Millis lease_duration = 120'000;
    // How long run() waits before polling again when the queue is empty or unreachable.
    Millis idle_wait = 1'000;
    Clock clock = system_clock_millis;  // for lease renewal; the queue's clock in tests
    // run() first raises its thread's nice value by this much (at most to 19; Linux keeps one
    // per thread, and the threads it then starts, OpenMP's included, inherit it), so that
    // encodes yield the cores to the interactive decodes of the same process. 0: unchanged.
    int nice_increment = 0;
};

// The leased job as the encode function sees it.
class JobLease {
  public:
    JobLease(JobQueue& queue, Job job, const EncodeWorkerOptions& options);
    const Job& job() const { return job_; }
    // Renews the lease once a third of it has passed; cheap enough to call between encoder
    // stages. False once another worker holds the job: stop, the result would be thrown away.
    bool keep_alive();

  private:
    JobQueue& queue_;
    Job job_;
    const EncodeWorkerOptions& options_;
    Millis renewed_at_;
    bool held_ = true;
};

using EncodeFunction = std::function<void(JobLease&)>;

struct EncodeWorkerCounts {
    int64_t completed = 0;
    int64_t failed = 0;  // encode attempts that threw
    int64_t lost = 0;    // finished after another worker took the job over
    int64_t queue_errors = 0;
};

class EncodeWorker {
  public:
    EncodeWorker(JobQueue& queue, EncodeFunction encode, EncodeWorkerOptions options = {});
    EncodeWorker(const EncodeWorker&) = delete;
    EncodeWorker& operator=(const EncodeWorker&) = delete;

    const std::string& id() const { return options_.worker_id; }

    // Leases one job and runs it to the end; false when no job was runnable. Queue errors
    // propagate as JobQueueError.
    bool run_once();
    // Runs jobs until stop(): waits up to idle_wait whenever the queue is empty, and after a queue
    // error (counted) before trying again. Returns after the job in progress when stopped. See
    // nice_increment for its thread's priority.
    void run();
    // Safe from any thread, before or during run().
    void stop();

    EncodeWorkerCounts counts() const;

  private:
    JobQueue& queue_;
    EncodeFunction encode_;
    EncodeWorkerOptions options_;
    mutable std::mutex mutex_;  // guards counts_ and the idle wait
    std::condition_variable wake_;
    std::atomic<bool> stopping_{false};
    EncodeWorkerCounts counts_;
};

}  // namespace splitseg
