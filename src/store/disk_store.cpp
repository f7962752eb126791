#include "store/disk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "engine/mapped_file.h"

namespace splitseg {

namespace {

constexpr const char* kTempPrefix = ".tmp-";

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

// Closes the descriptor when the scope ends.
struct FdGuard {
    int fd = -1;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

void write_all(int fd, std::span<const uint8_t> bytes, const std::string& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(errno, "cannot write " + path);
        done += static_cast<size_t>(n);
    }
}

bool is_temp_name(const char* name) {
    return std::string_view(name).starts_with(kTempPrefix);
}

struct Found {
    std::string key;
    uint64_t size;
    timespec mtime;
};

// The entries in the directory; temporary files are passed to on_temp instead.
template <typename OnTemp>
std::vector<Found> scan_dir(int dir_fd, const std::string& dir, OnTemp on_temp) {
    const int fd = ::dup(dir_fd);
    if (fd < 0) throw_errno(errno, "cannot read directory " + dir);
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        throw_errno(errno, "cannot read directory " + dir);
    }
    ::rewinddir(d);  // the duplicate shares the original's read position
    std::vector<Found> out;
    while (const dirent* e = ::readdir(d)) {
        if (is_temp_name(e->d_name)) {
            on_temp(e->d_name);
            continue;
        }
        struct stat st {};
        if (!is_valid_key(e->d_name) || ::fstatat(dir_fd, e->d_name, &st, 0) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        out.push_back({e->d_name, static_cast<uint64_t>(st.st_size), st.st_mtim});
    }
    ::closedir(d);
    return out;
}

// Removes a temporary file if its writer is gone (the writer holds an flock on it until the
// rename). The lock is held while unlinking, so a writer that opened the file but had not yet
// locked it finds it unlinked and starts over (see create_temp_file).
void remove_if_abandoned(int dir_fd, const char* name) {
    FdGuard f{::openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    if (f.fd < 0) return;
    if (::flock(f.fd, LOCK_EX | LOCK_NB) == 0) ::unlinkat(dir_fd, name, 0);
}

bool older(const timespec& a, const timespec& b) {
    return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

}  // namespace

DiskStore::DiskStore(std::string dir, uint64_t max_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes) {
    if (dir_.empty()) throw std::invalid_argument("disk store: empty directory path");
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) throw std::system_error(ec, "cannot create directory " + dir_);
    dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd_ < 0) throw_errno(errno, "cannot open directory " + dir_);
    try {
        open_index();
    } catch (...) {
        ::close(dir_fd_);
        throw;
    }
}

DiskStore::~DiskStore() {
    ::close(dir_fd_);
}

void DiskStore::open_index() {
    std::vector<Found> found =
        scan_dir(dir_fd_, dir_, [&](const char* name) { remove_if_abandoned(dir_fd_, name); });
    // Most recently used first: get() and put() leave the time of last use in mtime.
    std::sort(found.begin(), found.end(),
              [](const Found& a, const Found& b) { return older(b.mtime, a.mtime); });
    std::lock_guard lock(mu_);
    for (const Found& f : found) {
        order_.push_back(f.key);
        index_[f.key] = {f.size, std::prev(order_.end())};
        bytes_ += f.size;
    }
    if (max_bytes_ > 0) counters_.evictions += evict_locked(max_bytes_);
}

std::optional<Blob> DiskStore::get(const std::string& key) {
    check_key(key);
    std::shared_ptr<MappedFile> file;
    try {
        file = std::make_shared<MappedFile>(dir_ + "/" + key);
    } catch (const std::system_error& e) {
        if (e.code() != std::errc::no_such_file_or_directory) throw;
        // Another process may have evicted it. A put() may also have renamed it in since the
        // open failed (it renames under this lock): then the entry stays indexed.
        std::lock_guard lock(mu_);
        struct stat st {};
        if (::fstatat(dir_fd_, key.c_str(), &st, 0) != 0) erase_locked(key);
        counters_.count_lookup(false);
        return std::nullopt;
    }
    ::utimensat(dir_fd_, key.c_str(), nullptr, 0);  // records the use; best effort
    {
        // A remove() or eviction may have unlinked the file since it was mapped (the mapping
        // stays valid): count the entry only if it is still there, else the index would hold
        // bytes that are no longer on disk. remove() unlinks under this lock, so the check holds.
        std::lock_guard lock(mu_);
        struct stat st {};
        if (::fstatat(dir_fd_, key.c_str(), &st, 0) == 0)
            touch_locked(key, static_cast<uint64_t>(st.st_size));
    }
    counters_.count_lookup(true);
    const uint8_t* data = file->data();
    const size_t size = file->size();
    return Blob(std::move(file), data, size);
}

// Creates and locks a fresh temporary file; returns its descriptor and name.
int DiskStore::create_temp_file(std::string* name) {
    static std::atomic<uint64_t> counter{0};  // unique names across every store in the process
    for (int attempt = 0; attempt < 100; ++attempt) {
        *name = kTempPrefix + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        const int fd = ::openat(dir_fd_, name->c_str(),
                                O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno == EEXIST) continue;  // a process of the same pid in another namespace
        if (fd < 0) throw_errno(errno, "cannot create a temporary file in " + dir_);
        struct stat st {};
        if (::flock(fd, LOCK_EX) == 0 && ::fstat(fd, &st) == 0 && st.st_nlink > 0) return fd;
        ::close(fd);  // another store's cleanup removed it before we locked it: start over
    }
    throw std::runtime_error("cannot create a temporary file in " + dir_);
}

void DiskStore::put(const std::string& key, std::span<const uint8_t> bytes) {
    check_key(key);
    if (max_bytes_ > 0 && bytes.size() > max_bytes_) return;
    std::string temp;
    FdGuard f{create_temp_file(&temp)};  // closing it (after the rename) releases the lock
    try {
        write_all(f.fd, bytes, dir_ + "/" + temp);
        if (::fsync(f.fd) != 0) throw_errno(errno, "cannot flush " + dir_ + "/" + temp);
        std::lock_guard lock(mu_);
        if (::renameat(dir_fd_, temp.c_str(), dir_fd_, key.c_str()) != 0)
            throw_errno(errno, "cannot rename a temporary file to " + dir_ + "/" + key);
        touch_locked(key, bytes.size());
        if (max_bytes_ > 0) counters_.evictions += evict_locked(max_bytes_);
    } catch (...) {
        ::unlinkat(dir_fd_, temp.c_str(), 0);
        throw;
    }
    counters_.puts.fetch_add(1, std::memory_order_relaxed);
    // Makes the rename durable; if this fails the entry is complete anyway, only maybe not yet
    // on disk, which a cache can afford.
    ::fsync(dir_fd_);
}

void DiskStore::remove(const std::string& key) {
    check_key(key);
    std::lock_guard lock(mu_);
    erase_locked(key);
    if (::unlinkat(dir_fd_, key.c_str(), 0) != 0 && errno != ENOENT)
        throw_errno(errno, "cannot remove " + dir_ + "/" + key);
}

bool DiskStore::contains(const std::string& key) {
    check_key(key);
    struct stat st {};
    return ::fstatat(dir_fd_, key.c_str(), &st, 0) == 0 && S_ISREG(st.st_mode);
}

std::vector<BlobInfo> DiskStore::list() {
    std::vector<BlobInfo> out;
    for (Found& f : scan_dir(dir_fd_, dir_, [](const char*) {}))
        out.push_back({std::move(f.key), f.size});
    sort_by_key(out);
    return out;
}

StoreStats DiskStore::stats() {
    std::string tier = describe();
    std::lock_guard lock(mu_);
    return counters_.stats(std::move(tier), index_.size(), bytes_, max_bytes_);
}

std::optional<uint64_t> DiskStore::evict_to(uint64_t max_bytes) {
    std::lock_guard lock(mu_);
    const uint64_t n = evict_locked(max_bytes);
    counters_.evictions += n;
    return n;
}

// Makes key the most recently used entry, adding it if this process had not seen it.
void DiskStore::touch_locked(const std::string& key, uint64_t size) {
    auto it = index_.find(key);
    if (it == index_.end()) {
        order_.push_front(key);
        index_[key] = {size, order_.begin()};
        bytes_ += size;
        return;
    }
    order_.splice(order_.begin(), order_, it->second.pos);
    bytes_ = bytes_ - it->second.size + size;
    it->second.size = size;
}

void DiskStore::erase_locked(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    bytes_ -= it->second.size;
    order_.erase(it->second.pos);
    index_.erase(it);
}

uint64_t DiskStore::evict_locked(uint64_t max_bytes) {
    uint64_t evicted = 0;
    while (bytes_ > max_bytes && !order_.empty()) {
        const std::string key = order_.back();
        erase_locked(key);
        // ENOENT: another process removed it already. Any other failure leaves a file this
        // process no longer counts; the next open of the store sees it again.
        ::unlinkat(dir_fd_, key.c_str(), 0);
        ++evicted;
    }
    return evicted;
}

}  // namespace splitseg
