// The job queue written once in SQL that SQLite and PostgreSQL both run; a backend supplies the
// connection and the few places where the two dialects differ.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "store/job_queue.h"

namespace splitseg {

using SqlValue = std::variant<std::monostate, int64_t, std::string>;  // monostate: NULL

struct SqlRow {
    std::vector<SqlValue> values;
    bool is_null(size_t col) const;
    int64_t integer(size_t col) const;  // parses text (PostgreSQL returns text)
    std::string text(size_t col) const;
};

// One database connection; used by one thread at a time.
class SqlConnection {
  public:
    virtual ~SqlConnection() = default;
    // Starts a transaction that will write. SQLite takes the write lock at once (BEGIN
    // IMMEDIATE), so a read-then-write cannot lose to another writer halfway.
    virtual void begin() = 0;
    virtual void commit() = 0;
    virtual void rollback() noexcept = 0;
    // Runs one statement whose parameters are $1, $2, ... (params[0] is $1).
    virtual std::vector<SqlRow> query(const std::string& sql,
                                      const std::vector<SqlValue>& params) = 0;

    // Dialect.
    virtual std::string id_column() const = 0;  // an auto-increment primary key never reused
    // Appended to a SELECT of rows to update: PostgreSQL skips rows other leases hold.
    virtual std::string skip_locked() const = 0;
    // A subquery listing the integers of a JSON array held in parameter `param`.
    virtual std::string integers_of_json(const std::string& param) const = 0;
    // Called in the transaction that creates the schema: serialises concurrent creators.
    virtual void lock_schema() = 0;
};

class SqlJobQueue final : public JobQueue {
  public:
    // Creates the tables when missing.
    SqlJobQueue(std::unique_ptr<SqlConnection> db, JobQueueOptions options);

    EnqueueResult enqueue(const EnqueueRequest& request) override;
    std::optional<Job> lease(const std::string& worker_id, Millis lease_duration) override;
    bool heartbeat(JobId id, const std::string& worker_id, Millis lease_duration) override;
    bool complete(JobId id, const std::string& worker_id) override;
    bool fail(JobId id, const std::string& worker_id, const std::string& error,
              bool permanent) override;
    std::optional<Job> get(JobId id) override;
    std::optional<Job> find(const std::string& tenant, const std::string& image_id,
                            const std::string& model_hash) override;
    std::vector<Job> get_many(const std::vector<JobId>& ids) override;
    bool remove(JobId id) override;
    Batch create_batch(const BatchRequest& request) override;
    std::optional<BatchProgress> batch_progress(int64_t batch_id) override;
    QueueStats stats() override;

  private:
    void create_schema();
    EnqueueResult enqueue_in_transaction(const EnqueueRequest& request, Millis now,
                                         std::optional<int64_t> batch_id);
    std::optional<Job> latest_job(const std::string& tenant, const std::string& image_id,
                                  const std::string& model_hash);
    Millis retry_at(Millis now, int attempts) const;

    std::mutex mutex_;  // the connection serves one call at a time
    std::unique_ptr<SqlConnection> db_;
    JobQueueOptions options_;
};

}  // namespace splitseg
