// The scale-out job queue: PostgreSQL through libpq. Workers on many machines lease with
// SELECT ... FOR UPDATE SKIP LOCKED, so they never wait on each other's jobs. Time comes from the
// queue's clock (the workers' clocks), not the server's; keep the machines' clocks in sync.
#pragma once

#include <memory>
#include <string>

#include "store/job_queue.h"

namespace splitseg {

// `conninfo` is a libpq connection string ("host=... port=... dbname=... user=..." or a
// postgresql:// URI). Creates the tables when missing. Each queue object holds one connection;
// it reconnects when the connection drops between calls. Connecting gives up after 10 s and a
// statement after 30 s.
std::unique_ptr<JobQueue> open_postgres_job_queue(const std::string& conninfo,
                                                  JobQueueOptions options = {});

}  // namespace splitseg
