// Interactive sessions: one image, the prompts so far and the last low-resolution mask, so each
// click refines the previous answer. The table is bounded (idle TTL and a cap, evicting the least
// recently used) and thread-safe: a global mutex guards the table, each session has its own mutex
// for its state.
#pragma once

#include <array>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
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
    nlohmann::json result;                    // the response that answered this step
};

struct Session {
    std::string id, tenant, image_id;
    std::mutex mutex;  // guards steps
    std::vector<SessionStep> steps;
};

struct SessionStoreOptions {
    Millis ttl = 5 * 60'000;  // idle time after which a session is dropped
    size_t max_sessions = 1000;
    Clock clock = system_clock_millis;
};

class SessionStore {
  public:
    explicit SessionStore(SessionStoreOptions options = {});

    // A new session with a random id; evicts the least recently used one when full.
    std::shared_ptr<Session> create(const std::string& tenant, const std::string& image_id);
    // The session if it exists, has not expired and belongs to `tenant`; marks it used.
    std::shared_ptr<Session> get(const std::string& tenant, const std::string& id);
    bool remove(const std::string& tenant, const std::string& id);
    size_t size();

  private:
    struct Entry {
        std::shared_ptr<Session> session;
        Millis last_used = 0;
        std::list<std::string>::iterator lru;  // position in lru_ (front = most recent)
    };
    void drop_expired(Millis now);      // needs mutex_
    void erase(const std::string& id);  // needs mutex_

    SessionStoreOptions options_;
    std::mutex mutex_;
    std::unordered_map<std::string, Entry> sessions_;
    std::list<std::string> lru_;
};

// A random 128-bit identifier, 32 hex digits.
std::string random_id();

}  // namespace splitseg
