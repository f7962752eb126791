// The built web client (web/dist) served by the API at "/": GET and HEAD of the files under one
// root, with content types browsers accept (application/wasm for streaming compilation). Paths
// without a file extension get index.html, so the client may use its own routes.
#pragma once

#include <optional>
#include <string>

#include "service/http_message.h"

namespace splitseg {

class StaticFiles {
  public:
    // `root` must be a directory; throws std::runtime_error otherwise.
    explicit StaticFiles(const std::string& root);

    const std::string& root() const { return root_; }

    // The file for a GET or HEAD of `request.target`, or nullopt when no file answers it (the
    // caller then gives its own 404). Never answers paths under /api/.
    std::optional<Response> serve(const Request& request) const;

  private:
    std::string root_;  // canonical, no trailing slash
};

// "application/wasm" for "x.wasm", "text/javascript; charset=utf-8" for "x.mjs", ...;
// "application/octet-stream" when the extension is unknown.
std::string content_type_for(const std::string& path);

}  // namespace splitseg
