// The embedded job queue: one SQLite file in WAL mode that several threads and processes can
// share. Writers take the lock up front (BEGIN IMMEDIATE) and wait up to a busy timeout for it.
#pragma once

#include <memory>
#include <string>

#include "store/job_queue.h"

namespace splitseg {

// Opens (creating when missing) the queue in the database file at `path` (a real file: WAL mode
// needs one; ":memory:" is refused). Each queue object holds one connection; give each worker
// thread its own to let them work in parallel.
std::unique_ptr<JobQueue> open_sqlite_job_queue(const std::string& path,
                                                JobQueueOptions options = {});

}  // namespace splitseg
