#include "service/static_files.h"

#include <filesystem>
#include <map>
#include <stdexcept>

#include "engine/file_io.h"

namespace splitseg {

namespace fs = std::filesystem;

namespace {

// A request path is served only when every segment is a plain name: no "..", no "." segments,
// no percent-escapes or backslashes that could spell them another way.
bool safe_relative_path(const std::string& path) {
    if (path.find('\\') != std::string::npos || path.find('%') != std::string::npos ||
        path.find('\0') != std::string::npos) {
        return false;
    }
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        const std::string segment = path.substr(start, end - start);
        if (segment == "." || segment == "..") return false;
        start = end + 1;
    }
    return true;
}

}  // namespace

std::string content_type_for(const std::string& path) {
    static const std::map<std::string, std::string> kTypes = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".wasm", "application/wasm"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".webp", "image/webp"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".safetensors", "application/octet-stream"},
    };
    auto it = kTypes.find(fs::path(path).extension().string());
    return it == kTypes.end() ? "application/octet-stream" : it->second;
}

StaticFiles::StaticFiles(const std::string& root) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(root, ec);
    if (ec || !fs::is_directory(canonical)) {
        throw std::runtime_error("the web client directory " + root + " does not exist");
    }
    root_ = canonical.string();
}

std::optional<Response> StaticFiles::serve(const Request& request) const {
    if (request.method != "GET" && request.method != "HEAD") return std::nullopt;
    std::string path = request.target.substr(0, request.target.find_first_of("?#"));
    if (path.empty() || path.front() != '/' || path.rfind("/api/", 0) == 0) return std::nullopt;
    if (!safe_relative_path(path)) return std::nullopt;
    if (path.back() == '/' || !fs::path(path).has_extension()) path = "/index.html";
    std::error_code ec;
    // Canonical, so that a symbolic link inside the root cannot lead out of it.
    const fs::path file = fs::canonical(fs::path(root_ + path), ec);
    if (ec || file.string().rfind(root_ + "/", 0) != 0) return std::nullopt;
    if (!fs::is_regular_file(file, ec)) return std::nullopt;

    Response r;
    const std::vector<uint8_t> bytes = read_file_bytes(file.string());
    r.body.assign(bytes.begin(), bytes.end());
    r.set_header("Content-Type", content_type_for(path));
    // Vite names the files under assets/ by their content hash; everything else (index.html,
    // the WASM decoder copied in beside it) may change in place.
    const bool hashed = path.rfind("/assets/", 0) == 0;
    r.set_header("Cache-Control", hashed ? "public, max-age=31536000, immutable" : "no-cache");
    r.set_header("X-Content-Type-Options", "nosniff");
    return r;
}

}  // namespace splitseg
