// Encode jobs: one job per (tenant, image, model) that moves pending -> processing ->
// completed | failed. A worker leases a job for a while; a worker that dies simply stops renewing
// its lease, and once the lease expires the job is runnable again (up to max_attempts leases).
// Failed encodes go back to pending with exponential backoff until their attempts run out.
//
// Backends: SQLite (embedded default, sqlite_job_queue.h) and PostgreSQL (scale-out,
// postgres_job_queue.h). Time comes from an injectable clock (milliseconds since the Unix epoch)
// so tests can expire leases and backoffs without sleeping.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace splitseg {

enum class JobStatus { Pending, Processing, Completed, Failed };
const char* job_status_name(JobStatus s);  // "pending", "processing", "completed", "failed"
// Throws JobQueueError for a name no backend writes (a corrupt row).
JobStatus job_status_from_name(const std::string& name);

// The database failed or holds something we did not write. Bad arguments throw
// std::invalid_argument instead.
struct JobQueueError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using JobId = int64_t;
using Millis = int64_t;  // milliseconds since the Unix epoch, or a duration in milliseconds

struct Job {
    JobId id = 0;
    std::string tenant;
    std::string image_id;    // content hash of the image bytes
    std::string model_hash;  // weight hash of the encoder
    JobStatus status = JobStatus::Pending;
    std::string error;  // the last failure's text; empty when none
    int attempts = 0;   // leases handed out so far
    int max_attempts = 0;
    Millis created_at = 0;
    Millis updated_at = 0;
    std::optional<Millis> started_at;        // the latest lease
    std::optional<Millis> finished_at;       // completed or failed
    std::string lease_owner;                 // worker id, while processing
    std::optional<Millis> lease_expires_at;  // while processing
    std::optional<Millis> next_attempt_at;   // while pending: not leased before this
    std::optional<JobId> batch_id;           // the batch that created this job
};

struct EnqueueRequest {
    std::string tenant;
    std::string image_id;
    std::string model_hash;
    // Re-encode even though a completed job exists. A pending or processing job is still returned:
    // its encode has not finished yet.
    bool force = false;
    int max_attempts = 0;  // 0: the queue's default
};

struct EnqueueResult {
    Job job;
    bool created = false;  // false: an existing job was returned
};

struct BatchRequest {
    std::string tenant;
    std::string model_hash;
    std::vector<std::string> image_ids;  // duplicates share one job
    bool force = false;
    int max_attempts = 0;
};

struct Batch {
    int64_t id = 0;
    std::string tenant;
    std::string model_hash;
    Millis created_at = 0;
    std::vector<JobId> job_ids;  // one per distinct image, in image id order
};

struct StatusCounts {
    int64_t pending = 0;
    int64_t processing = 0;
    int64_t completed = 0;
    int64_t failed = 0;
    int64_t total() const { return pending + processing + completed + failed; }
};

struct BatchProgress {
    int64_t batch_id = 0;
    std::string tenant;
    StatusCounts counts;
    // (completed + failed) / total; 1 for a batch whose jobs were all deleted.
    double done_fraction() const;
};

struct QueueStats {
    StatusCounts counts;
    int64_t runnable = 0;            // pending and due, or processing with an expired lease
    Millis oldest_runnable_age = 0;  // how long the oldest runnable job has waited; 0 when none
};

using Clock = std::function<Millis()>;
Millis system_clock_millis();

struct JobQueueOptions {
    Clock clock = system_clock_millis;
    int default_max_attempts = 3;
    // The n-th failure waits backoff_base * 2^(n-1), at most backoff_max.
    Millis backoff_base = 2'000;
    Millis backoff_max = 300'000;
};

// Thread-safe; every operation is one transaction. Worker ids must be unique among the workers
// running at the same time: the lease holder is recognised by its id. Bad arguments throw
// std::invalid_argument; database failures throw JobQueueError.
class JobQueue {
  public:
    virtual ~JobQueue() = default;

    // Idempotent per (tenant, image_id, model_hash): returns the job in flight or completed, and
    // makes a new one only when there is none, the last one failed, or `force` asks to re-encode
    // a completed image.
    virtual EnqueueResult enqueue(const EnqueueRequest& request) = 0;

    // The job that has waited longest among the runnable ones (pending and due, or processing
    // with an expired lease), now leased to `worker_id` until now + lease_duration; nullopt when
    // none is runnable. A job whose lease expired with no attempts left becomes failed instead.
    virtual std::optional<Job> lease(const std::string& worker_id, Millis lease_duration) = 0;
    // A worker holds a lease while the job is processing under its id: an expired lease is only
    // lost once another worker leases the job. False (and nothing changes) for anyone else.
    // Extends the lease to now + lease_duration.
    virtual bool heartbeat(JobId id, const std::string& worker_id, Millis lease_duration) = 0;
    virtual bool complete(JobId id, const std::string& worker_id) = 0;
    // Back to pending after a backoff while attempts remain, else failed; `permanent` fails at
    // once (the input can never encode). `error` is kept for the caller to read.
    virtual bool fail(JobId id, const std::string& worker_id, const std::string& error,
                      bool permanent = false) = 0;

    virtual std::optional<Job> get(JobId id) = 0;
    // The newest job for this image and model.
    virtual std::optional<Job> find(const std::string& tenant, const std::string& image_id,
                                    const std::string& model_hash) = 0;
    // The jobs that exist among `ids`, in the order of `ids`.
    virtual std::vector<Job> get_many(const std::vector<JobId>& ids) = 0;
    // False when there was no such job. A worker holding it then fails to complete.
    virtual bool remove(JobId id) = 0;

    // Enqueues every distinct image as enqueue() does and groups their jobs.
    virtual Batch create_batch(const BatchRequest& request) = 0;
    virtual std::optional<BatchProgress> batch_progress(int64_t batch_id) = 0;

    virtual QueueStats stats() = 0;
};

}  // namespace splitseg
