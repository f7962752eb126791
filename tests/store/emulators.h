// Object-storage emulators for tests and benchmarks: Azurite (Azure Blob) and s3rver (S3), the
// npm packages pinned in the repository's package.json (`npm ci --ignore-scripts`). Each runs as
// a child process on a free loopback port with its data in a temporary directory, and is stopped
// (its whole process group) when the Emulator goes out of scope. Nothing listens beyond 127.0.0.1.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace splitseg::test {

// The published development-storage key of Azurite's account devstoreaccount1.
inline constexpr const char* kAzuriteKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

// node_modules/.bin/<name>: under $SPLITSEG_NODE_BIN, else in the nearest node_modules above the
// working directory or the executable. "" when not installed.
inline std::string find_node_bin(const std::string& name) {
    namespace fs = std::filesystem;
    if (const char* dir = std::getenv("SPLITSEG_NODE_BIN"); dir && *dir) {
        const fs::path p = fs::path(dir) / name;
        return fs::exists(p) ? p.string() : "";
    }
    std::error_code ec;
    for (fs::path start :
         {fs::current_path(ec), fs::read_symlink("/proc/self/exe", ec).parent_path()}) {
        for (fs::path d = start; !d.empty(); d = d.parent_path()) {
            const fs::path p = d / "node_modules" / ".bin" / name;
            if (fs::exists(p, ec)) return p.string();
            if (d == d.root_path()) break;
        }
    }
    return "";
}

// A loopback port nobody listens on right now.
inline int free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0) ::close(fd);
    if (port < 0) throw std::runtime_error("no free loopback port");
    return port;
}

inline bool port_accepts(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

class Emulator {
  public:
    enum class Kind { Azurite, S3rver };
    static constexpr const char* kBucket = "splitseg-test";

    static const char* binary(Kind kind) {
        return kind == Kind::Azurite ? "azurite-blob" : "s3rver";
    }

    // Throws std::runtime_error (with the emulator's log) if it does not listen within 60 s.
    explicit Emulator(Kind kind) : kind_(kind), port_(free_loopback_port()) {
        const std::string bin = find_node_bin(binary(kind));
        if (bin.empty()) throw std::runtime_error(std::string(binary(kind)) + " is not installed");
        std::string templ =
            std::filesystem::temp_directory_path().string() + "/splitseg-emu-XXXXXX";
        if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
        dir_ = templ;
        const std::string port = std::to_string(port_), data = dir_ + "/data";
        std::filesystem::create_directory(data);
        std::vector<std::string> args;
        if (kind == Kind::Azurite)
            args = {bin,
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    port,
                    "--location",
                    data,
                    "--silent",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--disableProductStyleUrl"};
        else
            args = {bin,     "-d",      data, "-a", "127.0.0.1", "-p", port, "--configure-bucket",
                    kBucket, "--silent"};
        try {
            start(args);
            wait_until_listening();
        } catch (...) {
            stop();
            throw;
        }
    }
    ~Emulator() { stop(); }
    Emulator(const Emulator&) = delete;
    Emulator& operator=(const Emulator&) = delete;

    int port() const { return port_; }
    // A store spec for a container/bucket of this emulator.
    std::string spec(const std::string& container = kBucket) const {
        const std::string host = "127.0.0.1:" + std::to_string(port_);
        if (kind_ == Kind::Azurite)
            return "azure://" + host + "/devstoreaccount1/" + container + "?key=" + kAzuriteKey;
        return "s3://" + host + "/" + container + "?access=S3RVER&secret=S3RVER";
    }

  private:
    void start(const std::vector<std::string>& args) {
        const std::string log = dir_ + "/log";
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::setpgid(0, 0);  // its own process group: stop() ends node and anything it spawned
            ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // and if the test process dies first, it does too
            const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
            }
            std::vector<char*> argv;
            for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::setpgid(pid_, pid_);  // also from the parent, so stop() cannot race the child's call
    }

    void wait_until_listening() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error(std::string(binary(kind_)) + " exited: " + read_log());
            }
            if (port_accepts(port_)) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error(std::string(binary(kind_)) + " did not listen within 60 s");
    }

    std::string read_log() const {
        std::ifstream f(dir_ + "/log");
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }

    void stop() {
        if (pid_ > 0) {
            ::kill(-pid_, SIGTERM);
            int status = 0;
            bool exited = false;
            for (int i = 0; i < 100 && !exited; ++i) {  // 5 s, then no more patience
                exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
                if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            ::kill(-pid_, SIGKILL);  // also any straggler of the group
            if (!exited) ::waitpid(pid_, &status, 0);
            pid_ = -1;
        }
        if (!dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
            dir_.clear();
        }
    }

    Kind kind_;
    int port_;
    pid_t pid_ = -1;
    std::string dir_;
};

}  // namespace splitseg::test
