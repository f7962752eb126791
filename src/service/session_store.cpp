#include "service/session_store.h"

#include <random>
#include <stdexcept>

namespace splitseg {

std::string random_id() {
    thread_local std::random_device device;
    static const char kHex[] = "0123456789abcdef";
    std::string id;
    for (int i = 0; i < 4; ++i) {
        uint32_t word = device();
        for (int j = 0; j < 8; ++j, word >>= 4) id.push_back(kHex[word & 15]);
    }
    return id;
}

SessionStore::SessionStore(SessionStoreOptions options) : options_(std::move(options)) {
    if (!options_.clock) throw std::invalid_argument("session store clock is empty");
    if (options_.max_sessions == 0 || options_.ttl <= 0) {
        throw std::invalid_argument("session store needs max_sessions > 0 and ttl > 0");
    }
}

std::shared_ptr<Session> SessionStore::create(const std::string& tenant,
                                              const std::string& image_id) {
    auto session = std::make_shared<Session>();
    session->id = random_id();
    session->tenant = tenant;
    session->image_id = image_id;
    const Millis now = options_.clock();
    std::lock_guard lock(mutex_);
    drop_expired(now);
    while (sessions_.size() >= options_.max_sessions) erase(lru_.back());
    lru_.push_front(session->id);
    sessions_[session->id] = Entry{session, now, lru_.begin()};
    return session;
}

std::shared_ptr<Session> SessionStore::get(const std::string& tenant, const std::string& id) {
    const Millis now = options_.clock();
    std::lock_guard lock(mutex_);
    drop_expired(now);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.session->tenant != tenant) return nullptr;
    it->second.last_used = now;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.session;
}

bool SessionStore::remove(const std::string& tenant, const std::string& id) {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.session->tenant != tenant) return false;
    erase(id);
    return true;
}

size_t SessionStore::size() {
    const Millis now = options_.clock();
    std::lock_guard lock(mutex_);
    drop_expired(now);
    return sessions_.size();
}

void SessionStore::drop_expired(Millis now) {
    // The least recently used sessions sit at the back; stop at the first one still alive.
    while (!lru_.empty() && now - sessions_.at(lru_.back()).last_used >= options_.ttl) {
        erase(lru_.back());
    }
}

void SessionStore::erase(const std::string& id) {
    auto it = sessions_.find(id);
    lru_.erase(it->second.lru);
    sessions_.erase(it);
}

}  // namespace splitseg
