#include "runtime/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace splitseg {

static std::runtime_error sys_error(const std::string& what, const std::string& path) {
    return std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

// Closes the descriptor when the scope ends.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (f.fd < 0) throw sys_error("cannot open", path);
    std::vector<uint8_t> bytes;
    uint8_t buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(f.fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw sys_error("cannot read", path);
        if (n == 0) break;
        bytes.insert(bytes.end(), buf, buf + n);
    }
    return bytes;
}

static void write_all(int fd, const std::vector<uint8_t>& bytes, const std::string& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw sys_error("cannot write", path);
        done += static_cast<size_t>(n);
    }
}

static std::string parent_dir(const std::string& path) {
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::string tmp = path + ".tmp.XXXXXX";
    Fd f{::mkstemp(tmp.data())};
    if (f.fd < 0) throw sys_error("cannot create a temporary file for", path);
    try {
        write_all(f.fd, bytes, tmp);
        if (::fchmod(f.fd, 0644) != 0) throw sys_error("cannot chmod", tmp);
        if (::fsync(f.fd) != 0) throw sys_error("cannot flush", tmp);
        const int fd = f.fd;
        f.fd = -1;
        if (::close(fd) != 0) throw sys_error("cannot close", tmp);
        if (std::rename(tmp.c_str(), path.c_str()) != 0) throw sys_error("cannot rename to", path);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    // Make the rename itself durable; failure here leaves a complete file, so it is not an error.
    Fd dir{::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (dir.fd >= 0) ::fsync(dir.fd);
}

}  // namespace splitseg
