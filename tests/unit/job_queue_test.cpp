// One suite, run against both job queue backends. The PostgreSQL run needs a server:
// scripts/with-postgres.sh starts a throwaway one and sets SPLITSEG_TEST_PG; without it the
// Postgres tests skip and say so.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <thread>

#include "store/encode_worker.h"
#include "store/postgres_job_queue.h"
#include "store/sqlite_job_queue.h"

namespace splitseg {
namespace {

constexpr Millis kStart = 1'700'000'000'000;  // any fixed instant
constexpr Millis kLease = 30'000;
constexpr Millis kBackoffBase = 1'000;
constexpr Millis kBackoffMax = 4'000;

// Time that moves only when a test says so; copies share the time.
class ManualClock {
  public:
    Millis operator()() const { return now_->load(); }
    void advance(Millis ms) { *now_ += ms; }

  private:
    std::shared_ptr<std::atomic<Millis>> now_ = std::make_shared<std::atomic<Millis>>(kStart);
};

class SqliteBackend {
  public:
    static constexpr const char* kName = "Sqlite";
    static std::string skip_reason() { return ""; }

    SqliteBackend() {
        static std::atomic<int> next{0};
        dir_ = std::filesystem::temp_directory_path() /
               ("splitseg-jobs-" + std::to_string(getpid()) + "-" + std::to_string(next++));
        std::filesystem::create_directories(dir_);
    }
    ~SqliteBackend() { std::filesystem::remove_all(dir_); }
    std::unique_ptr<JobQueue> open(JobQueueOptions options) const {
        return open_sqlite_job_queue((dir_ / "jobs.db").string(), std::move(options));
    }

  private:
    std::filesystem::path dir_;
};

class PostgresBackend {
  public:
    static constexpr const char* kName = "Postgres";
    static std::string skip_reason() {
        if (conninfo().empty()) {
            return "SPLITSEG_TEST_PG is not set; run under scripts/with-postgres.sh for the "
                   "PostgreSQL backend";
        }
        return "";
    }

    // Every test starts from an empty database.
    PostgresBackend() {
        if (conninfo().empty()) return;
        PGconn* conn = PQconnectdb(conninfo().c_str());
        PGresult* result = PQexec(conn,
                                  "SET client_min_messages = warning;"
                                  " DROP TABLE IF EXISTS encode_batch_jobs, encode_jobs,"
                                  " encode_batches CASCADE");
        const bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
        const std::string message = PQerrorMessage(conn);
        PQclear(result);
        PQfinish(conn);
        if (!ok) throw std::runtime_error("cannot reset the test database: " + message);
    }
    std::unique_ptr<JobQueue> open(JobQueueOptions options) const {
        return open_postgres_job_queue(conninfo(), std::move(options));
    }

  private:
    static std::string conninfo() {
        const char* env = std::getenv("SPLITSEG_TEST_PG");
        return env ? env : "";
    }
};

template <class Backend>
class JobQueueTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (const std::string reason = Backend::skip_reason(); !reason.empty()) {
            GTEST_SKIP() << reason;
        }
        backend_ = std::make_unique<Backend>();
        queue_ = open();
    }
    void TearDown() override {
        queue_.reset();
        backend_.reset();
    }

    // Another connection to the same database, as another process would have.
    std::unique_ptr<JobQueue> open() const {
        JobQueueOptions options;
        options.clock = clock_;
        options.backoff_base = kBackoffBase;
        options.backoff_max = kBackoffMax;
        return backend_->open(options);
    }

    EnqueueResult enqueue(const std::string& image, bool force = false, int max_attempts = 0) {
        return queue_->enqueue({"acme", image, "model-1", force, max_attempts});
    }
    Job get(JobId id) {
        std::optional<Job> job = queue_->get(id);
        if (!job) throw std::runtime_error("job " + std::to_string(id) + " is gone");
        return *job;
    }
    Job lease(const std::string& worker, Millis duration = kLease) {
        std::optional<Job> job = queue_->lease(worker, duration);
        if (!job) throw std::runtime_error("nothing to lease for " + worker);
        return *job;
    }

    ManualClock clock_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<JobQueue> queue_;
};

struct BackendName {
    template <class Backend>
    static std::string GetName(int) {
        return Backend::kName;
    }
};

using Backends = ::testing::Types<SqliteBackend, PostgresBackend>;
TYPED_TEST_SUITE(JobQueueTest, Backends, BackendName);

TYPED_TEST(JobQueueTest, JobMovesFromPendingThroughProcessingToCompleted) {
    const EnqueueResult queued = this->enqueue("img-a");
    EXPECT_TRUE(queued.created);
    const Job& pending = queued.job;
    EXPECT_EQ(pending.status, JobStatus::Pending);
    EXPECT_EQ(pending.tenant, "acme");
    EXPECT_EQ(pending.image_id, "img-a");
    EXPECT_EQ(pending.model_hash, "model-1");
    EXPECT_EQ(pending.attempts, 0);
    EXPECT_EQ(pending.max_attempts, 3);
    EXPECT_EQ(pending.created_at, kStart);
    EXPECT_EQ(pending.next_attempt_at, kStart);
    EXPECT_FALSE(pending.started_at);
    EXPECT_FALSE(pending.batch_id);

    this->clock_.advance(5);
    const Job leased = this->lease("w1");
    EXPECT_EQ(leased.id, pending.id);
    EXPECT_EQ(leased.status, JobStatus::Processing);
    EXPECT_EQ(leased.attempts, 1);
    EXPECT_EQ(leased.lease_owner, "w1");
    EXPECT_EQ(leased.lease_expires_at, kStart + 5 + kLease);
    EXPECT_EQ(leased.started_at, kStart + 5);
    EXPECT_FALSE(leased.next_attempt_at);
    EXPECT_FALSE(this->queue_->lease("w2", kLease)) << "the only job is taken";

    this->clock_.advance(7);
    ASSERT_TRUE(this->queue_->complete(leased.id, "w1"));
    const Job done = this->get(leased.id);
    EXPECT_EQ(done.status, JobStatus::Completed);
    EXPECT_EQ(done.finished_at, kStart + 12);
    EXPECT_EQ(done.updated_at, kStart + 12);
    EXPECT_EQ(done.lease_owner, "");
    EXPECT_FALSE(done.lease_expires_at);
    EXPECT_FALSE(this->queue_->complete(leased.id, "w1")) << "a finished job stays finished";
    EXPECT_FALSE(this->queue_->lease("w1", kLease));
}

TYPED_TEST(JobQueueTest, EnqueueReturnsTheJobInFlightOrCompleted) {
    const Job first = this->enqueue("img-a").job;
    EnqueueResult again = this->enqueue("img-a");
    EXPECT_FALSE(again.created);
    EXPECT_EQ(again.job.id, first.id);

    this->lease("w1");
    again = this->enqueue("img-a", /*force=*/true);
    EXPECT_FALSE(again.created) << "force does not start a second encode beside one running";
    EXPECT_EQ(again.job.status, JobStatus::Processing);

    ASSERT_TRUE(this->queue_->complete(first.id, "w1"));
    again = this->enqueue("img-a");
    EXPECT_FALSE(again.created);
    EXPECT_EQ(again.job.status, JobStatus::Completed);

    const EnqueueResult forced = this->enqueue("img-a", /*force=*/true);
    EXPECT_TRUE(forced.created);
    EXPECT_NE(forced.job.id, first.id);
    EXPECT_EQ(forced.job.status, JobStatus::Pending);
    EXPECT_EQ(this->queue_->find("acme", "img-a", "model-1")->id, forced.job.id);

    // The key is all three: another tenant or model is another job.
    EXPECT_TRUE(this->queue_->enqueue({"other", "img-a", "model-1"}).created);
    EXPECT_TRUE(this->queue_->enqueue({"acme", "img-a", "model-2"}).created);
    EXPECT_EQ(this->queue_->stats().counts.total(), 4);
}

TYPED_TEST(JobQueueTest, AFailedImageIsEnqueuedAfresh) {
    const Job first = this->enqueue("img-a", false, /*max_attempts=*/1).job;
    this->lease("w1");
    ASSERT_TRUE(this->queue_->fail(first.id, "w1", "out of memory"));
    ASSERT_EQ(this->get(first.id).status, JobStatus::Failed);

    const EnqueueResult again = this->enqueue("img-a");
    EXPECT_TRUE(again.created);
    EXPECT_NE(again.job.id, first.id);
    EXPECT_EQ(again.job.attempts, 0);
}

TYPED_TEST(JobQueueTest, LeasesTheJobThatHasWaitedLongest) {
    const JobId a = this->enqueue("img-a").job.id;
    this->clock_.advance(1);
    const JobId b = this->enqueue("img-b").job.id;
    this->clock_.advance(1);
    const JobId c = this->enqueue("img-c").job.id;
    EXPECT_EQ(this->lease("w1").id, a);
    EXPECT_EQ(this->lease("w2").id, b);
    EXPECT_EQ(this->lease("w3").id, c);
    EXPECT_FALSE(this->queue_->lease("w4", kLease));
}

// Every job goes to exactly one worker, whether the threads share a connection or each has its
// own (as separate processes would).
TYPED_TEST(JobQueueTest, ConcurrentWorkersLeaseEachJobOnce) {
    constexpr int kJobs = 60;
    constexpr int kThreads = 4;
    for (int i = 0; i < kJobs; ++i) this->enqueue("img-" + std::to_string(i));

    std::vector<std::vector<JobId>> leased(kThreads);
    std::vector<std::thread> threads;
    std::atomic<int> errors{0};
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            try {
                std::unique_ptr<JobQueue> own = t % 2 ? this->open() : nullptr;
                JobQueue& queue = own ? *own : *this->queue_;
                const std::string worker = "worker-" + std::to_string(t);
                while (std::optional<Job> job = queue.lease(worker, kLease)) {
                    leased[t].push_back(job->id);
                    if (!queue.complete(job->id, worker)) ++errors;
                }
            } catch (const std::exception& e) {
                ADD_FAILURE() << e.what();
            }
        });
    }
    for (std::thread& t : threads) t.join();

    EXPECT_EQ(errors.load(), 0);
    std::multiset<JobId> all;
    for (const auto& ids : leased) all.insert(ids.begin(), ids.end());
    EXPECT_EQ(all.size(), size_t{kJobs});
    EXPECT_EQ(std::set<JobId>(all.begin(), all.end()).size(), size_t{kJobs})
        << "a job leased twice";
    EXPECT_EQ(this->queue_->stats().counts.completed, kJobs);
}

// Reads one job id from the child, or nothing if it did not send one within 20 s.
std::optional<JobId> read_job_id(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20'000) != 1) return std::nullopt;
    JobId id = 0;
    if (read(fd, &id, sizeof(id)) != sizeof(id)) return std::nullopt;
    return id;
}

// The crash-safety promise, tested by killing: a worker process leases a job and dies with it.
TYPED_TEST(JobQueueTest, AJobWhoseWorkerWasKilledIsPickedUpAfterTheLeaseExpires) {
    const JobId id = this->enqueue("img-a").job.id;
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // The worker: its own connection, a lease, then "encoding" until killed. _exit, never
        // return: this copy of the test process must not run the parent's cleanup.
        close(pipe_fds[0]);
        try {
            std::unique_ptr<JobQueue> queue = this->open();
            const std::optional<Job> job = queue->lease("doomed", kLease);
            const JobId leased = job ? job->id : -1;
            if (write(pipe_fds[1], &leased, sizeof(leased)) != sizeof(leased)) _exit(1);
            for (;;) pause();
        } catch (...) {
            _exit(1);
        }
    }
    close(pipe_fds[1]);
    const std::optional<JobId> leased = read_job_id(pipe_fds[0]);
    close(pipe_fds[0]);
    kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the worker exited early";
    ASSERT_EQ(leased, id);

    const Job orphan = this->get(id);
    EXPECT_EQ(orphan.status, JobStatus::Processing);
    EXPECT_EQ(orphan.lease_owner, "doomed");
    EXPECT_FALSE(this->queue_->lease("rescuer", kLease)) << "the lease has not expired yet";

    this->clock_.advance(kLease);
    const Job rescued = this->lease("rescuer");
    EXPECT_EQ(rescued.id, id);
    EXPECT_EQ(rescued.attempts, 2);
    EXPECT_TRUE(this->queue_->complete(id, "rescuer"));
    EXPECT_EQ(this->get(id).status, JobStatus::Completed);
}

TYPED_TEST(JobQueueTest, AStaleWorkerCannotFinishAJobThatMovedOn) {
    const JobId id = this->enqueue("img-a").job.id;
    this->lease("slow");
    this->clock_.advance(kLease + 1);
    EXPECT_EQ(this->lease("fast").id, id);

    EXPECT_FALSE(this->queue_->complete(id, "slow"));
    EXPECT_FALSE(this->queue_->fail(id, "slow", "late failure"));
    EXPECT_FALSE(this->queue_->heartbeat(id, "slow", kLease));
    const Job job = this->get(id);
    EXPECT_EQ(job.status, JobStatus::Processing);
    EXPECT_EQ(job.lease_owner, "fast");
    EXPECT_EQ(job.error, "");
    EXPECT_TRUE(this->queue_->complete(id, "fast"));
}

TYPED_TEST(JobQueueTest, HeartbeatsKeepTheLease) {
    const JobId id = this->enqueue("img-a").job.id;
    this->lease("w1", 1'000);
    this->clock_.advance(800);
    ASSERT_TRUE(this->queue_->heartbeat(id, "w1", 1'000));
    EXPECT_EQ(this->get(id).lease_expires_at, kStart + 1'800);
    this->clock_.advance(999);
    EXPECT_FALSE(this->queue_->lease("w2", 1'000));
    this->clock_.advance(1);
    EXPECT_EQ(this->lease("w2").id, id);
    EXPECT_FALSE(this->queue_->heartbeat(id, "w1", 1'000));
}

TYPED_TEST(JobQueueTest, FailuresRetryWithGrowingBackoffThenFail) {
    const JobId id = this->enqueue("img-a", false, /*max_attempts=*/4).job.id;
    Millis expected_wait = kBackoffBase;
    for (int attempt = 1; attempt <= 3; ++attempt) {
        EXPECT_EQ(this->lease("w1").attempts, attempt);
        ASSERT_TRUE(this->queue_->fail(id, "w1", "boom " + std::to_string(attempt)));
        const Job waiting = this->get(id);
        EXPECT_EQ(waiting.status, JobStatus::Pending);
        EXPECT_EQ(waiting.error, "boom " + std::to_string(attempt));
        EXPECT_EQ(waiting.lease_owner, "");
        EXPECT_EQ(waiting.next_attempt_at, this->clock_() + expected_wait);
        this->clock_.advance(expected_wait - 1);
        EXPECT_FALSE(this->queue_->lease("w1", kLease)) << "retried before its backoff";
        this->clock_.advance(1);
        expected_wait = std::min(expected_wait * 2, kBackoffMax);
    }
    EXPECT_EQ(expected_wait, kBackoffMax) << "the backoff reached its cap";

    EXPECT_EQ(this->lease("w1").attempts, 4);
    ASSERT_TRUE(this->queue_->fail(id, "w1", "boom 4"));
    const Job failed = this->get(id);
    EXPECT_EQ(failed.status, JobStatus::Failed);
    EXPECT_EQ(failed.error, "boom 4");
    EXPECT_EQ(failed.finished_at, this->clock_());
    EXPECT_FALSE(failed.next_attempt_at);
    this->clock_.advance(kBackoffMax * 10);
    EXPECT_FALSE(this->queue_->lease("w1", kLease));
}

TYPED_TEST(JobQueueTest, APermanentFailureIsNotRetried) {
    const JobId id = this->enqueue("img-a").job.id;
    this->lease("w1");
    ASSERT_TRUE(this->queue_->fail(id, "w1", "not an image", /*permanent=*/true));
    const Job job = this->get(id);
    EXPECT_EQ(job.status, JobStatus::Failed);
    EXPECT_EQ(job.attempts, 1);
    EXPECT_EQ(job.error, "not an image");
}

TYPED_TEST(JobQueueTest, ALeaseThatExpiresOnTheLastAttemptFailsTheJob) {
    const JobId id = this->enqueue("img-a", false, /*max_attempts=*/1).job.id;
    this->lease("w1");
    this->clock_.advance(kLease);
    EXPECT_FALSE(this->queue_->lease("w2", kLease));
    const Job job = this->get(id);
    EXPECT_EQ(job.status, JobStatus::Failed);
    EXPECT_NE(job.error.find("lease expired"), std::string::npos) << job.error;
    EXPECT_NE(job.error.find("w1"), std::string::npos) << job.error;
    EXPECT_FALSE(this->queue_->complete(id, "w1"));
}

TYPED_TEST(JobQueueTest, ErrorTextIsStoredAsValidUtf8WithinALimit) {
    const JobId id = this->enqueue("img-a").job.id;
    this->lease("w1");
    const std::string error = std::string("bad \xff byte, NUL ") + '\0' + " and caf\xc3\xa9";
    ASSERT_TRUE(this->queue_->fail(id, "w1", error));
    EXPECT_EQ(this->get(id).error, "bad ? byte, NUL ? and caf\xc3\xa9");

    this->clock_.advance(kBackoffBase);
    this->lease("w1");
    ASSERT_TRUE(this->queue_->fail(id, "w1", std::string(10'000, 'x')));
    EXPECT_EQ(this->get(id).error.size(), 4096u);
}

TYPED_TEST(JobQueueTest, BatchProgressCountsItsJobs) {
    // img-b was encoded before the batch: the batch reuses that job.
    const JobId earlier = this->enqueue("img-b").job.id;
    this->lease("w1");
    ASSERT_TRUE(this->queue_->complete(earlier, "w1"));

    const Batch batch =
        this->queue_->create_batch({"acme", "model-1", {"img-c", "img-a", "img-b", "img-a"}});
    ASSERT_EQ(batch.job_ids.size(), 3u) << "one job per distinct image";
    const std::vector<Job> jobs = this->queue_->get_many(batch.job_ids);
    ASSERT_EQ(jobs.size(), 3u);
    EXPECT_EQ(jobs[0].image_id, "img-a");
    EXPECT_EQ(jobs[0].batch_id, batch.id);
    EXPECT_EQ(jobs[1].id, earlier);
    EXPECT_FALSE(jobs[1].batch_id);

    std::optional<BatchProgress> progress = this->queue_->batch_progress(batch.id);
    ASSERT_TRUE(progress);
    EXPECT_EQ(progress->tenant, "acme");
    EXPECT_EQ(progress->counts.pending, 2);
    EXPECT_EQ(progress->counts.completed, 1);
    EXPECT_NEAR(progress->done_fraction(), 1.0 / 3.0, 1e-9);

    const Job a = this->lease("w1");
    ASSERT_TRUE(this->queue_->complete(a.id, "w1"));
    const Job c = this->lease("w1");
    EXPECT_EQ(this->queue_->batch_progress(batch.id)->counts.processing, 1);
    ASSERT_TRUE(this->queue_->fail(c.id, "w1", "corrupt", /*permanent=*/true));
    progress = this->queue_->batch_progress(batch.id);
    EXPECT_EQ(progress->counts.completed, 2);
    EXPECT_EQ(progress->counts.failed, 1);
    EXPECT_EQ(progress->done_fraction(), 1.0);

    // A second batch over the same images is done at once: nothing re-encodes.
    const Batch again = this->queue_->create_batch({"acme", "model-1", {"img-a", "img-b"}});
    EXPECT_EQ(this->queue_->batch_progress(again.id)->done_fraction(), 1.0);
    EXPECT_FALSE(this->queue_->batch_progress(batch.id + again.id + 100));
}

TYPED_TEST(JobQueueTest, RemovedJobsLeaveStatusAndBatches) {
    const Batch batch = this->queue_->create_batch({"acme", "model-1", {"img-a", "img-b"}});
    const Job leased = this->lease("w1");
    ASSERT_TRUE(this->queue_->remove(leased.id));
    EXPECT_FALSE(this->queue_->get(leased.id));
    EXPECT_FALSE(this->queue_->find("acme", leased.image_id, "model-1"));
    EXPECT_FALSE(this->queue_->complete(leased.id, "w1")) << "its worker cannot resurrect it";
    EXPECT_FALSE(this->queue_->remove(leased.id));
    EXPECT_EQ(this->queue_->batch_progress(batch.id)->counts.total(), 1);
    EXPECT_TRUE(this->enqueue(leased.image_id).created);
}

TYPED_TEST(JobQueueTest, BulkStatusAndQueueStats) {
    const JobId a = this->enqueue("img-a").job.id;
    this->clock_.advance(100);
    const JobId b = this->enqueue("img-b").job.id;
    const JobId c = this->enqueue("img-c").job.id;
    this->lease("w1");  // img-a
    this->clock_.advance(50);

    const std::vector<Job> jobs = this->queue_->get_many({c, 999'999, a, c});
    ASSERT_EQ(jobs.size(), 3u);
    EXPECT_EQ(jobs[0].id, c);
    EXPECT_EQ(jobs[1].id, a);
    EXPECT_EQ(jobs[1].status, JobStatus::Processing);
    EXPECT_EQ(jobs[2].id, c);
    EXPECT_TRUE(this->queue_->get_many({}).empty());

    const QueueStats stats = this->queue_->stats();
    EXPECT_EQ(stats.counts.pending, 2);
    EXPECT_EQ(stats.counts.processing, 1);
    EXPECT_EQ(stats.counts.completed, 0);
    EXPECT_EQ(stats.runnable, 2);
    EXPECT_EQ(stats.oldest_runnable_age, 50) << "img-b waited since " << b;
}

TYPED_TEST(JobQueueTest, UnknownIdsAreNotFound) {
    EXPECT_FALSE(this->queue_->get(12345));
    EXPECT_FALSE(this->queue_->get(-1));
    EXPECT_FALSE(this->queue_->find("acme", "img-a", "model-1"));
    EXPECT_TRUE(this->queue_->get_many({1, 2, 3}).empty());
    EXPECT_FALSE(this->queue_->remove(12345));
    EXPECT_FALSE(this->queue_->complete(12345, "w1"));
    EXPECT_FALSE(this->queue_->fail(12345, "w1", "boom"));
    EXPECT_FALSE(this->queue_->heartbeat(12345, "w1", kLease));
    EXPECT_FALSE(this->queue_->batch_progress(12345));
    EXPECT_FALSE(this->queue_->lease("w1", kLease)) << "an empty queue";
}

TYPED_TEST(JobQueueTest, BadArgumentsAreRejected) {
    JobQueue& q = *this->queue_;
    EXPECT_THROW(q.enqueue({"", "img", "m"}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme", "", "m"}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme", "img", ""}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme\n", "img", "m"}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme", std::string(257, 'a'), "m"}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme", "img", "m", false, -1}), std::invalid_argument);
    EXPECT_THROW(q.enqueue({"acme", "img", "m", false, 101}), std::invalid_argument);
    EXPECT_THROW(q.lease("", kLease), std::invalid_argument);
    EXPECT_THROW(q.lease("w1", 0), std::invalid_argument);
    EXPECT_THROW(q.lease("w1", -5), std::invalid_argument);
    EXPECT_THROW(q.heartbeat(1, "w1", 0), std::invalid_argument);
    EXPECT_THROW(q.complete(1, ""), std::invalid_argument);
    EXPECT_THROW(q.fail(1, "w1", ""), std::invalid_argument);
    EXPECT_THROW(q.find("", "img", "m"), std::invalid_argument);
    EXPECT_THROW(q.create_batch({"acme", "m", {}}), std::invalid_argument);
    EXPECT_THROW(q.create_batch({"acme", "m", {"img", ""}}), std::invalid_argument);
    EXPECT_THROW(q.create_batch({"", "m", {"img"}}), std::invalid_argument);
    EXPECT_EQ(q.stats().counts.total(), 0) << "nothing half-made";

    JobQueueOptions bad;
    bad.default_max_attempts = 0;
    EXPECT_THROW(this->backend_->open(bad), std::invalid_argument);
    bad = {};
    bad.backoff_base = 0;
    EXPECT_THROW(this->backend_->open(bad), std::invalid_argument);
}

TYPED_TEST(JobQueueTest, WorkerCompletesRetriesAndRejects) {
    for (const char* image : {"good", "flaky", "broken"}) this->enqueue(image);
    EncodeWorkerOptions options;
    options.worker_id = "w1";
    options.clock = this->clock_;
    std::vector<std::string> seen;
    EncodeWorker worker(
        *this->queue_,
        [&](JobLease& lease) {
            const std::string& image = lease.job().image_id;
            seen.push_back(image);
            if (image == "flaky") throw std::runtime_error("GPU out of memory");
            if (image == "broken") throw PermanentJobError("cannot decode image");
        },
        options);
    EXPECT_EQ(worker.id(), "w1");
    while (worker.run_once()) {
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"good", "flaky", "broken"}));

    const EncodeWorkerCounts counts = worker.counts();
    EXPECT_EQ(counts.completed, 1);
    EXPECT_EQ(counts.failed, 2);
    EXPECT_EQ(counts.lost, 0);
    const Job flaky = *this->queue_->find("acme", "flaky", "model-1");
    EXPECT_EQ(flaky.status, JobStatus::Pending);
    EXPECT_EQ(flaky.error, "GPU out of memory");
    const Job broken = *this->queue_->find("acme", "broken", "model-1");
    EXPECT_EQ(broken.status, JobStatus::Failed);
    EXPECT_EQ(broken.error, "cannot decode image");
}

TYPED_TEST(JobQueueTest, WorkerKeepsItsLeaseAliveAndNoticesLosingIt) {
    const JobId id = this->enqueue("img-a").job.id;
    EncodeWorkerOptions options;
    options.worker_id = "w1";
    options.lease_duration = 900;
    options.clock = this->clock_;
    std::vector<bool> held;
    EncodeWorker worker(
        *this->queue_,
        [&](JobLease& lease) {
            this->clock_.advance(100);
            held.push_back(lease.keep_alive());  // too soon to renew
            this->clock_.advance(200);
            held.push_back(lease.keep_alive());  // renewed until now + 900
            this->clock_.advance(899);
            EXPECT_FALSE(this->queue_->lease("w2", kLease)) << "the renewed lease still holds";
            this->clock_.advance(1);
            EXPECT_EQ(this->lease("w2").id, id);
            held.push_back(lease.keep_alive());
        },
        options);
    EXPECT_TRUE(worker.run_once());
    EXPECT_EQ(held, (std::vector<bool>{true, true, false}));
    EXPECT_EQ(worker.counts().lost, 1);
    EXPECT_EQ(this->get(id).lease_owner, "w2");
}

TYPED_TEST(JobQueueTest, WorkerRunsOnTheCallersThreadUntilStopped) {
    constexpr int kJobs = 5;
    for (int i = 0; i < kJobs; ++i) this->enqueue("img-" + std::to_string(i));
    EncodeWorkerOptions options;
    options.idle_wait = 5;
    std::atomic<int> encoded{0};
    EncodeWorker worker(
        *this->queue_, [&](JobLease&) { ++encoded; }, options);
    EXPECT_NE(worker.id().find(std::to_string(getpid())), std::string::npos) << worker.id();

    std::thread thread([&] { worker.run(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (worker.counts().completed < kJobs && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    worker.stop();
    thread.join();
    EXPECT_EQ(encoded.load(), kJobs);
    EXPECT_EQ(worker.counts().completed, kJobs);
    EXPECT_EQ(worker.counts().queue_errors, 0);
    EXPECT_EQ(this->queue_->stats().counts.completed, kJobs);
}

// Encodes yield to interactive work: run() raises its thread's nice value first.
TYPED_TEST(JobQueueTest, WorkerLowersItsThreadsPriority) {
    this->enqueue("img-a");
    EncodeWorkerOptions options;
    options.idle_wait = 5;
    options.nice_increment = 3;
    auto nice_of_this_thread = [] {
        return getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
    };
    std::atomic<int> during{-100};
    EncodeWorker worker(
        *this->queue_, [&](JobLease&) { during = nice_of_this_thread(); }, options);
    int before = 0;
    std::thread thread([&] {
        before = nice_of_this_thread();
        worker.run();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (worker.counts().completed < 1 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    worker.stop();
    thread.join();
    EXPECT_EQ(during.load(), std::min(before + 3, 19));
    EXPECT_EQ(nice_of_this_thread(), before) << "the caller's own thread keeps its priority";
}

// Prints lease + complete throughput; run the Release build for figures worth quoting.
TYPED_TEST(JobQueueTest, LeaseAndCompleteThroughput) {
    constexpr int kJobs = 300;
    const Batch batch = [&] {
        std::vector<std::string> images;
        for (int i = 0; i < kJobs; ++i) images.push_back("img-" + std::to_string(i));
        return this->queue_->create_batch({"acme", "model-1", images});
    }();
    const auto start = std::chrono::steady_clock::now();
    while (std::optional<Job> job = this->queue_->lease("w1", kLease)) {
        ASSERT_TRUE(this->queue_->complete(job->id, "w1"));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(this->queue_->batch_progress(batch.id)->counts.completed, kJobs);
    std::cout << "[ throughput ] " << TypeParam::kName << ": " << kJobs / seconds
              << " jobs/s (lease + complete, one connection)\n";
}

TEST(SqliteJobQueue, AnUnopenableFileIsAQueueError) {
    EXPECT_THROW(open_sqlite_job_queue("/nonexistent-dir/jobs.db"), JobQueueError);
}

TEST(PostgresJobQueue, AnUnreachableServerIsAQueueError) {
    EXPECT_THROW(open_postgres_job_queue("host=127.0.0.1 port=1 dbname=x connect_timeout=2"),
                 JobQueueError);
}

}  // namespace
}  // namespace splitseg
