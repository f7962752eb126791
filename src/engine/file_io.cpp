#include "engine/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

namespace splitseg {

// what(): "<path>: <what>: <strerror>".
[[noreturn]] static void throw_errno(const std::string& path, const std::string& what) {
    throw std::system_error(errno, std::generic_category(), path + ": " + what);
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno(path, "cannot open");
    std::vector<uint8_t> bytes;
    uint8_t buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            errno = err;
            throw_errno(path, "cannot read");
        }
        if (n == 0) break;
        bytes.insert(bytes.end(), buf, buf + n);
    }
    ::close(fd);
    return bytes;
}

static void fsync_directory(const std::string& path) {
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno(path, "cannot open its directory");
    const int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) throw_errno(path, "cannot sync its directory");
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp.XXXXXX") {
    fd_ = ::mkstemp(tmp_.data());
    if (fd_ < 0) throw_errno(path_, "cannot create a temporary file");
    ::fchmod(fd_, 0644);  // mkstemp makes it 0600; these files are not secrets
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
        const ssize_t w = ::write(fd_, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw_errno(path_, "cannot write");
        p += w;
        n -= static_cast<size_t>(w);
    }
}

void AtomicFile::commit() {
    if (::fsync(fd_) != 0) throw_errno(path_, "cannot sync");
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) throw_errno(path_, "cannot close");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
        throw_errno(path_, "cannot rename the temporary file");
    committed_ = true;
    fsync_directory(path_);
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    AtomicFile file(path);
    file.write(bytes.data(), bytes.size());
    file.commit();
}

}  // namespace splitseg
