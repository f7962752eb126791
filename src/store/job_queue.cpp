#include "store/job_queue.h"

#include <chrono>

namespace splitseg {

const char* job_status_name(JobStatus s) {
    switch (s) {
        case JobStatus::Pending:
            return "pending";
        case JobStatus::Processing:
            return "processing";
        case JobStatus::Completed:
            return "completed";
        case JobStatus::Failed:
            return "failed";
    }
    return "unknown";
}

JobStatus job_status_from_name(const std::string& name) {
    for (JobStatus s :
         {JobStatus::Pending, JobStatus::Processing, JobStatus::Completed, JobStatus::Failed}) {
        if (name == job_status_name(s)) return s;
    }
    throw JobQueueError("unknown job status '" + name + "' in the database");
}

double BatchProgress::done_fraction() const {
    const int64_t total = counts.total();
    if (total == 0) return 1.0;
    return static_cast<double>(counts.completed + counts.failed) / static_cast<double>(total);
}

Millis system_clock_millis() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace splitseg
