#include "service/session_store.h"

#include <random>
#include <stdexcept>

namespace splitseg {

size_t SessionStep::bytes() const {
    size_t total = sizeof(SessionStep) + points.capacity() * sizeof(Click) +
                   static_cast<size_t>(best_low_res.numel()) * sizeof(float) + result.capacity();
    for (const std::string& f : frames) total += sizeof(std::string) + f.capacity();
    return total;
}

size_t Session::bytes() const {
    size_t total = sizeof(Session);
    for (const SessionStep& s : steps) total += s.bytes();
    return total;
}

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
    if (per_tenant_[tenant] >= options_.max_per_tenant) {
        throw TooManySessions("the tenant holds " + std::to_string(options_.max_per_tenant) +
                              " sessions, the most allowed: close some first");
    }
    while (sessions_.size() >= options_.max_sessions) erase(lru_.back());
    lru_.push_front(session->id);
    sessions_[session->id] = Entry{session, now, 0, lru_.begin()};
    ++per_tenant_[tenant];
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

void SessionStore::set_bytes(const Session& session, size_t bytes) {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(session.id);
    if (it == sessions_.end() || it->second.session.get() != &session) return;
    bytes_ = bytes_ - it->second.bytes + bytes;
    it->second.bytes = bytes;
    // The least recently used go first; never the session being answered.
    auto victim = lru_.end();
    while (bytes_ > options_.max_bytes && victim != lru_.begin()) {
        --victim;
        if (*victim == session.id) continue;
        const std::string id = *victim;
        victim = std::next(victim);  // erase() invalidates the victim's node only
        erase(id);
    }
}

size_t SessionStore::bytes() {
    std::lock_guard lock(mutex_);
    return bytes_;
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
    bytes_ -= it->second.bytes;
    if (--per_tenant_[it->second.session->tenant] == 0)
        per_tenant_.erase(it->second.session->tenant);
    sessions_.erase(it);
}

}  // namespace splitseg
