#include "engine/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

namespace splitseg {

namespace {

// what(): "<path>: <what>: <strerror>".
[[noreturn]] void throw_errno(int err, const std::string& what, const std::string& path) {
    throw std::system_error(err, std::generic_category(), path + ": " + what);
}

// Closes the descriptor on every path out of the constructor; the mapping outlives it.
struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno(errno, "cannot open", path);
    FdGuard guard{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno(errno, "cannot stat", path);
    if (!S_ISREG(st.st_mode)) throw_errno(EINVAL, "not a regular file", path);
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;  // mmap of zero bytes is an error; an empty span is not
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) throw_errno(errno, "cannot map", path);
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
    if (this != &other) {
        unmap();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

MappedFile::~MappedFile() {
    unmap();
}

void MappedFile::unmap() noexcept {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
}

}  // namespace splitseg
