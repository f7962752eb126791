// Interactive sessions: one image, the prompts so far and the last low-resolution mask, so each
// click refines the previous answer. The table is bounded (idle TTL, a count and a byte cap, both
// evicting the least recently used, and a per-tenant count that refuses new sessions) and
// thread-safe: a global mutex guards the table, each session has its own mutex for its state.
// Lock order: a session's mutex, then the table's.
#pragma once

#include <array>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"
#include "runtime/segmenter.h"
#include "store/job_queue.h"

namespace splitseg {

// One accepted prompt and what it produced.
struct SessionStep {
    std::vector<Click> points;                // every point so far
    std::optional<std::array<float, 4>> box;  // the latest box
    Tensor best_low_res;                      // [1, 256, 256] logits of the best mask
    std::string result;                       // the response body that answered this step
    std::vector<std::string> frames;          // its binary mask frames ("output": "binary")

    size_t bytes() const;  // what the step holds, for the store's byte cap
};

struct Session {
    std::string id, tenant, image_id;
    std::mutex mutex;  // guards steps
    std::vector<SessionStep> steps;
    size_t bytes() const;  // the steps' bytes; needs mutex
};

struct SessionStoreOptions {
    Millis ttl = 5 * 60'000;  // idle time after which a session is dropped
    size_t max_sessions = 1000;
    Clock clock = system_clock_millis;
    size_t max_bytes = size_t(2) << 30;  // bytes held by all sessions' steps
    size_t max_per_tenant = 1000;        // sessions one tenant may hold; more are refused
};

// create() on a tenant that already holds max_per_tenant sessions.
struct TooManySessions : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class SessionStore {
  public:
    explicit SessionStore(SessionStoreOptions options = {});

    // A new session with a random id; evicts the least recently used one when full. Throws
    // TooManySessions when the tenant is at its cap.
    std::shared_ptr<Session> create(const std::string& tenant, const std::string& image_id);
    // The session if it exists, has not expired and belongs to `tenant`; marks it used.
    std::shared_ptr<Session> get(const std::string& tenant, const std::string& id);
    bool remove(const std::string& tenant, const std::string& id);
    size_t size();
    // Records what `session` holds now (call after changing its steps, holding its mutex) and
    // evicts the least recently used other sessions while all of them hold more than
    // max_bytes. A session no longer in the table (evicted meanwhile) is ignored.
    void set_bytes(const Session& session, size_t bytes);
    size_t bytes();  // held by the sessions in the table

  private:
    struct Entry {
        std::shared_ptr<Session> session;
        Millis last_used = 0;
        size_t bytes = 0;
        std::list<std::string>::iterator lru;  // position in lru_ (front = most recent)
    };
    void drop_expired(Millis now);      // needs mutex_
    void erase(const std::string& id);  // needs mutex_

    SessionStoreOptions options_;
    std::mutex mutex_;
    std::unordered_map<std::string, Entry> sessions_;
    std::list<std::string> lru_;
    std::unordered_map<std::string, size_t> per_tenant_;
    size_t bytes_ = 0;
};

// A random 128-bit identifier, 32 hex digits.
std::string random_id();

}  // namespace splitseg
