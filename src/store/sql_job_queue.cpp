#include "store/sql_job_queue.h"

#include <algorithm>
#include <charconv>
#include <unordered_map>

namespace splitseg {

bool SqlRow::is_null(size_t col) const {
    return std::holds_alternative<std::monostate>(values.at(col));
}

int64_t SqlRow::integer(size_t col) const {
    const SqlValue& v = values.at(col);
    if (const auto* i = std::get_if<int64_t>(&v)) return *i;
    if (const auto* s = std::get_if<std::string>(&v)) {
        int64_t out = 0;
        const auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
        if (ec == std::errc() && end == s->data() + s->size()) return out;
    }
    throw JobQueueError("column " + std::to_string(col) + " is not an integer");
}

std::string SqlRow::text(size_t col) const {
    const SqlValue& v = values.at(col);
    if (const auto* s = std::get_if<std::string>(&v)) return *s;
    throw JobQueueError("column " + std::to_string(col) + " is not text");
}

namespace {

constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxErrorBytes = 4096;
constexpr Millis kMaxLeaseDuration = 24 * 3600 * 1000;
constexpr int kMaxAttempts = 100;
constexpr size_t kMaxBatchImages = 100'000;
// Concurrent enqueues of one image can make our insert lose to theirs; we then return theirs.
constexpr int kEnqueueTries = 3;

// Rolls back unless committed, so an exception never leaves a transaction open.
class Transaction {
  public:
    explicit Transaction(SqlConnection& db) : db_(db) { db_.begin(); }
    ~Transaction() {
        if (!committed_) db_.rollback();
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit() {
        db_.commit();
        committed_ = true;
    }

  private:
    SqlConnection& db_;
    bool committed_ = false;
};

// Identifiers are stored and compared as given: printable ASCII keeps them safe in any log,
// URL or database encoding.
void check_name(const char* what, const std::string& value) {
    if (value.empty()) throw std::invalid_argument(std::string(what) + " is empty");
    if (value.size() > kMaxNameBytes) {
        throw std::invalid_argument(std::string(what) + " is longer than " +
                                    std::to_string(kMaxNameBytes) + " bytes");
    }
    for (char c : value) {
        if (c < 0x20 || c > 0x7e) {
            throw std::invalid_argument(std::string(what) + " '" + value +
                                        "' has a character outside printable ASCII");
        }
    }
}

void check_lease_duration(Millis d) {
    if (d <= 0 || d > kMaxLeaseDuration) {
        throw std::invalid_argument("lease duration " + std::to_string(d) +
                                    " ms is outside (0, 24 h]");
    }
}

int resolve_max_attempts(int requested, int fallback) {
    const int n = requested == 0 ? fallback : requested;
    if (n < 1 || n > kMaxAttempts) {
        throw std::invalid_argument("max_attempts " + std::to_string(n) + " is outside [1, " +
                                    std::to_string(kMaxAttempts) + "]");
    }
    return n;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
size_t utf8_sequence_length(const std::string& s, size_t i) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b = byte(i);
    if (b >= 0x01 && b < 0x80) return 1;
    size_t n = 0;
    unsigned char min_second = 0x80, max_second = 0xbf;  // excludes overlongs and surrogates
    if (b >= 0xc2 && b <= 0xdf) {
        n = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 3;
        if (b == 0xe0) min_second = 0xa0;
        if (b == 0xed) max_second = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4;
        if (b == 0xf0) min_second = 0x90;
        if (b == 0xf4) max_second = 0x8f;
    } else {
        return 0;
    }
    if (i + n > s.size() || byte(i + 1) < min_second || byte(i + 1) > max_second) return 0;
    for (size_t k = 2; k < n; ++k) {
        if ((byte(i + k) & 0xc0) != 0x80) return 0;
    }
    return n;
}

// Error text comes from exceptions and may hold anything; the databases want UTF-8 without NUL.
std::string clean_error_text(const std::string& error) {
    std::string out;
    for (size_t i = 0; i < error.size();) {
        const size_t n = utf8_sequence_length(error, i);
        if (out.size() + std::max<size_t>(n, 1) > kMaxErrorBytes) break;
        if (n == 0) {
            out += '?';
            ++i;
        } else {
            out.append(error, i, n);
            i += n;
        }
    }
    return out;
}

const char* const kJobColumns =
    "id, tenant, image_id, model_hash, status, error, attempts, max_attempts, created_at, "
    "updated_at, started_at, finished_at, lease_owner, due_at, batch_id";

std::optional<int64_t> optional_integer(const SqlRow& row, size_t col) {
    if (row.is_null(col)) return std::nullopt;
    return row.integer(col);
}

Job decode_job(const SqlRow& row) {
    Job job;
    job.id = row.integer(0);
    job.tenant = row.text(1);
    job.image_id = row.text(2);
    job.model_hash = row.text(3);
    job.status = job_status_from_name(row.text(4));
    job.error = row.text(5);
    job.attempts = static_cast<int>(row.integer(6));
    job.max_attempts = static_cast<int>(row.integer(7));
    job.created_at = row.integer(8);
    job.updated_at = row.integer(9);
    job.started_at = optional_integer(row, 10);
    job.finished_at = optional_integer(row, 11);
    job.lease_owner = row.text(12);
    // due_at is a pending job's next attempt and a processing job's lease expiry.
    const std::optional<Millis> due = optional_integer(row, 13);
    if (job.status == JobStatus::Pending) job.next_attempt_at = due;
    if (job.status == JobStatus::Processing) job.lease_expires_at = due;
    job.batch_id = optional_integer(row, 14);
    return job;
}

std::optional<Job> first_job(const std::vector<SqlRow>& rows) {
    if (rows.empty()) return std::nullopt;
    return decode_job(rows.front());
}

SqlValue null_or(const std::optional<int64_t>& v) {
    if (v) return *v;
    return std::monostate{};
}

void add_count(StatusCounts& counts, JobStatus status, int64_t n) {
    switch (status) {
        case JobStatus::Pending:
            counts.pending += n;
            break;
        case JobStatus::Processing:
            counts.processing += n;
            break;
        case JobStatus::Completed:
            counts.completed += n;
            break;
        case JobStatus::Failed:
            counts.failed += n;
            break;
    }
}

// Rows of (status, count).
StatusCounts count_by_status(const std::vector<SqlRow>& rows) {
    StatusCounts counts;
    for (const SqlRow& row : rows)
        add_count(counts, job_status_from_name(row.text(0)), row.integer(1));
    return counts;
}

// A job that makes a new enqueue of its image unnecessary.
bool reusable(const Job& job, bool force) {
    switch (job.status) {
        case JobStatus::Pending:
        case JobStatus::Processing:
            return true;
        case JobStatus::Completed:
            return !force;
        case JobStatus::Failed:
            return false;
    }
    return false;
}

}  // namespace

SqlJobQueue::SqlJobQueue(std::unique_ptr<SqlConnection> db, JobQueueOptions options)
    : db_(std::move(db)), options_(std::move(options)) {
    if (!options_.clock) throw std::invalid_argument("job queue clock is empty");
    resolve_max_attempts(options_.default_max_attempts, 0);
    if (options_.backoff_base <= 0 || options_.backoff_max < options_.backoff_base) {
        throw std::invalid_argument("job queue backoff needs 0 < backoff_base <= backoff_max");
    }
    create_schema();
}

// due_at: a pending job's next attempt, a processing job's lease expiry, NULL once finished; one
// index on it finds every runnable job. The partial unique index keeps one job in flight per
// image and model.
void SqlJobQueue::create_schema() {
    const std::string id = db_->id_column();
    const std::string statements[] = {
        "CREATE TABLE IF NOT EXISTS encode_batches (id " + id +
            ", tenant TEXT NOT NULL, model_hash TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS encode_jobs (id " + id +
            ", tenant TEXT NOT NULL, image_id TEXT NOT NULL, model_hash TEXT NOT NULL,"
            " status TEXT NOT NULL"
            " CHECK (status IN ('pending', 'processing', 'completed', 'failed')),"
            " error TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,"
            " max_attempts INTEGER NOT NULL, created_at BIGINT NOT NULL,"
            " updated_at BIGINT NOT NULL, started_at BIGINT, finished_at BIGINT,"
            " lease_owner TEXT NOT NULL DEFAULT '', due_at BIGINT,"
            " batch_id BIGINT REFERENCES encode_batches (id))",
        "CREATE UNIQUE INDEX IF NOT EXISTS encode_jobs_in_flight"
        " ON encode_jobs (tenant, image_id, model_hash)"
        " WHERE status IN ('pending', 'processing')",
        "CREATE INDEX IF NOT EXISTS encode_jobs_by_image"
        " ON encode_jobs (tenant, image_id, model_hash, id)",
        "CREATE INDEX IF NOT EXISTS encode_jobs_due ON encode_jobs (due_at, id)"
        " WHERE due_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS encode_jobs_by_status ON encode_jobs (status)",
        "CREATE TABLE IF NOT EXISTS encode_batch_jobs ("
        " batch_id BIGINT NOT NULL REFERENCES encode_batches (id) ON DELETE CASCADE,"
        " job_id BIGINT NOT NULL REFERENCES encode_jobs (id) ON DELETE CASCADE,"
        " PRIMARY KEY (batch_id, job_id))",
        "CREATE INDEX IF NOT EXISTS encode_batch_jobs_by_job ON encode_batch_jobs (job_id)",
    };
    Transaction tx(*db_);
    db_->lock_schema();
    for (const std::string& sql : statements) db_->query(sql, {});
    tx.commit();
}

Millis SqlJobQueue::retry_at(Millis now, int attempts) const {
    Millis delay = options_.backoff_base;
    for (int i = 1; i < attempts && delay < options_.backoff_max; ++i) delay *= 2;
    return now + std::min(delay, options_.backoff_max);
}

std::optional<Job> SqlJobQueue::latest_job(const std::string& tenant, const std::string& image_id,
                                           const std::string& model_hash) {
    return first_job(db_->query(std::string("SELECT ") + kJobColumns +
                                    " FROM encode_jobs WHERE tenant = $1 AND image_id = $2"
                                    " AND model_hash = $3 ORDER BY id DESC LIMIT 1",
                                {tenant, image_id, model_hash}));
}

EnqueueResult SqlJobQueue::enqueue_in_transaction(const EnqueueRequest& request, Millis now,
                                                  std::optional<int64_t> batch_id) {
    const std::string insert = std::string(
                                   "INSERT INTO encode_jobs (tenant, image_id, model_hash, status,"
                                   " max_attempts, created_at, updated_at, due_at, batch_id)"
                                   " VALUES ($1, $2, $3, 'pending', $4, $5, $5, $5, $6)"
                                   " ON CONFLICT (tenant, image_id, model_hash)"
                                   " WHERE status IN ('pending', 'processing') DO NOTHING"
                                   " RETURNING ") +
                               kJobColumns;
    for (int attempt = 0; attempt < kEnqueueTries; ++attempt) {
        std::optional<Job> latest =
            latest_job(request.tenant, request.image_id, request.model_hash);
        if (latest && reusable(*latest, request.force)) return {std::move(*latest), false};
        std::optional<Job> created =
            first_job(db_->query(insert, {request.tenant, request.image_id, request.model_hash,
                                          int64_t{request.max_attempts}, now, null_or(batch_id)}));
        if (created) return {std::move(*created), true};
    }
    throw JobQueueError("enqueue of image " + request.image_id +
                        " kept conflicting with concurrent enqueues");
}

EnqueueResult SqlJobQueue::enqueue(const EnqueueRequest& request) {
    check_name("tenant", request.tenant);
    check_name("image_id", request.image_id);
    check_name("model_hash", request.model_hash);
    EnqueueRequest checked = request;
    checked.max_attempts =
        resolve_max_attempts(request.max_attempts, options_.default_max_attempts);

    std::lock_guard lock(mutex_);
    Transaction tx(*db_);
    EnqueueResult result = enqueue_in_transaction(checked, options_.clock(), std::nullopt);
    tx.commit();
    return result;
}

std::optional<Job> SqlJobQueue::lease(const std::string& worker_id, Millis lease_duration) {
    check_name("worker_id", worker_id);
    check_lease_duration(lease_duration);

    std::lock_guard lock(mutex_);
    const Millis now = options_.clock();
    Transaction tx(*db_);
    // A job whose last allowed lease expired will not get another: it fails with the reason.
    db_->query(
        "UPDATE encode_jobs SET status = 'failed', finished_at = $1, updated_at = $1,"
        " due_at = NULL, lease_owner = '',"
        " error = 'lease expired on the last attempt: worker ' || lease_owner ||"
        " ' stopped renewing it'"
        " WHERE id IN (SELECT id FROM encode_jobs WHERE due_at <= $1"
        " AND status = 'processing' AND attempts >= max_attempts" +
            db_->skip_locked() + ")",
        {now});
    std::optional<Job> job = first_job(
        db_->query("UPDATE encode_jobs SET status = 'processing', lease_owner = $2, due_at = $3,"
                   " attempts = attempts + 1, started_at = $1, updated_at = $1"
                   " WHERE id = (SELECT id FROM encode_jobs WHERE due_at <= $1"
                   " AND attempts < max_attempts ORDER BY due_at, id LIMIT 1" +
                       db_->skip_locked() + ") RETURNING " + kJobColumns,
                   {now, worker_id, now + lease_duration}));
    tx.commit();
    return job;
}

bool SqlJobQueue::heartbeat(JobId id, const std::string& worker_id, Millis lease_duration) {
    check_name("worker_id", worker_id);
    check_lease_duration(lease_duration);

    std::lock_guard lock(mutex_);
    const Millis now = options_.clock();
    return !db_->query(
                   "UPDATE encode_jobs SET due_at = $3, updated_at = $4"
                   " WHERE id = $1 AND status = 'processing' AND lease_owner = $2"
                   " RETURNING id",
                   {id, worker_id, now + lease_duration, now})
                .empty();
}

bool SqlJobQueue::complete(JobId id, const std::string& worker_id) {
    check_name("worker_id", worker_id);

    std::lock_guard lock(mutex_);
    return !db_->query(
                   "UPDATE encode_jobs SET status = 'completed', error = '',"
                   " finished_at = $3, updated_at = $3, due_at = NULL, lease_owner = ''"
                   " WHERE id = $1 AND status = 'processing' AND lease_owner = $2"
                   " RETURNING id",
                   {id, worker_id, options_.clock()})
                .empty();
}

bool SqlJobQueue::fail(JobId id, const std::string& worker_id, const std::string& error,
                       bool permanent) {
    check_name("worker_id", worker_id);
    if (error.empty()) throw std::invalid_argument("failure error text is empty");

    std::lock_guard lock(mutex_);
    const Millis now = options_.clock();
    Transaction tx(*db_);
    const std::vector<SqlRow> held = db_->query(
        "SELECT attempts, max_attempts FROM encode_jobs"
        " WHERE id = $1 AND status = 'processing' AND lease_owner = $2",
        {id, worker_id});
    if (held.empty()) return false;
    const int attempts = static_cast<int>(held[0].integer(0));
    const bool final = permanent || attempts >= held[0].integer(1);
    const SqlValue no_time = std::monostate{};
    const bool updated =
        !db_->query(
                "UPDATE encode_jobs SET status = $3, error = $4, updated_at = $5,"
                " finished_at = $6, due_at = $7, lease_owner = ''"
                " WHERE id = $1 AND status = 'processing' AND lease_owner = $2"
                " RETURNING id",
                {id, worker_id, job_status_name(final ? JobStatus::Failed : JobStatus::Pending),
                 clean_error_text(error), now, final ? SqlValue(now) : no_time,
                 final ? no_time : SqlValue(retry_at(now, attempts))})
             .empty();
    tx.commit();
    return updated;
}

std::optional<Job> SqlJobQueue::get(JobId id) {
    std::lock_guard lock(mutex_);
    return first_job(
        db_->query(std::string("SELECT ") + kJobColumns + " FROM encode_jobs WHERE id = $1", {id}));
}

std::optional<Job> SqlJobQueue::find(const std::string& tenant, const std::string& image_id,
                                     const std::string& model_hash) {
    check_name("tenant", tenant);
    check_name("image_id", image_id);
    check_name("model_hash", model_hash);

    std::lock_guard lock(mutex_);
    return latest_job(tenant, image_id, model_hash);
}

std::vector<Job> SqlJobQueue::get_many(const std::vector<JobId>& ids) {
    if (ids.empty()) return {};
    std::string json = "[";
    for (JobId id : ids) {
        if (json.size() > 1) json += ',';
        json += std::to_string(id);
    }
    json += "]";

    std::vector<SqlRow> rows;
    {
        std::lock_guard lock(mutex_);
        rows = db_->query(std::string("SELECT ") + kJobColumns + " FROM encode_jobs WHERE id IN (" +
                              db_->integers_of_json("$1") + ")",
                          {json});
    }
    std::unordered_map<JobId, Job> by_id;
    for (const SqlRow& row : rows) {
        Job job = decode_job(row);
        by_id.emplace(job.id, std::move(job));
    }
    std::vector<Job> jobs;
    for (JobId id : ids) {
        if (auto it = by_id.find(id); it != by_id.end()) jobs.push_back(it->second);
    }
    return jobs;
}

bool SqlJobQueue::remove(JobId id) {
    std::lock_guard lock(mutex_);
    return !db_->query("DELETE FROM encode_jobs WHERE id = $1 RETURNING id", {id}).empty();
}

Batch SqlJobQueue::create_batch(const BatchRequest& request) {
    check_name("tenant", request.tenant);
    check_name("model_hash", request.model_hash);
    if (request.image_ids.empty()) throw std::invalid_argument("batch has no images");
    if (request.image_ids.size() > kMaxBatchImages) {
        throw std::invalid_argument("batch has more than " + std::to_string(kMaxBatchImages) +
                                    " images");
    }
    for (const std::string& image_id : request.image_ids) check_name("image_id", image_id);
    // Sorted, so concurrent batches over the same images take their locks in one order.
    std::vector<std::string> images = request.image_ids;
    std::sort(images.begin(), images.end());
    images.erase(std::unique(images.begin(), images.end()), images.end());
    EnqueueRequest job_request{
        request.tenant, "", request.model_hash, request.force,
        resolve_max_attempts(request.max_attempts, options_.default_max_attempts)};

    std::lock_guard lock(mutex_);
    Batch batch{0, request.tenant, request.model_hash, options_.clock(), {}};
    Transaction tx(*db_);
    batch.id = db_->query(
                      "INSERT INTO encode_batches (tenant, model_hash, created_at)"
                      " VALUES ($1, $2, $3) RETURNING id",
                      {batch.tenant, batch.model_hash, batch.created_at})
                   .at(0)
                   .integer(0);
    for (const std::string& image_id : images) {
        job_request.image_id = image_id;
        const JobId job = enqueue_in_transaction(job_request, batch.created_at, batch.id).job.id;
        db_->query("INSERT INTO encode_batch_jobs (batch_id, job_id) VALUES ($1, $2)",
                   {batch.id, job});
        batch.job_ids.push_back(job);
    }
    tx.commit();
    return batch;
}

std::optional<BatchProgress> SqlJobQueue::batch_progress(int64_t batch_id) {
    std::lock_guard lock(mutex_);
    const std::vector<SqlRow> batch =
        db_->query("SELECT tenant FROM encode_batches WHERE id = $1", {batch_id});
    if (batch.empty()) return std::nullopt;
    BatchProgress progress;
    progress.batch_id = batch_id;
    progress.tenant = batch[0].text(0);
    progress.counts =
        count_by_status(db_->query("SELECT j.status, COUNT(*) FROM encode_batch_jobs b"
                                   " JOIN encode_jobs j ON j.id = b.job_id WHERE b.batch_id = $1"
                                   " GROUP BY j.status",
                                   {batch_id}));
    return progress;
}

QueueStats SqlJobQueue::stats() {
    std::lock_guard lock(mutex_);
    const Millis now = options_.clock();
    QueueStats stats;
    stats.counts =
        count_by_status(db_->query("SELECT status, COUNT(*) FROM encode_jobs GROUP BY status", {}));
    const SqlRow due =
        db_->query("SELECT COUNT(*), MIN(due_at) FROM encode_jobs WHERE due_at <= $1", {now}).at(0);
    stats.runnable = due.integer(0);
    if (!due.is_null(1)) stats.oldest_runnable_age = now - due.integer(1);
    return stats;
}

}  // namespace splitseg
