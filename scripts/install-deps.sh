#!/usr/bin/env bash
# Installs the Debian 12 packages splitseg builds and tests with (see README "Dependencies").
set -euo pipefail
packages=(
    build-essential cmake pkg-config clang libomp-dev
    libdnnl-dev                       # oneDNN: sgemm/matmul kernels (OpenMP threading)
    libpng-dev libjpeg62-turbo-dev libwebp-dev   # image decoding/encoding
    libjpeg-turbo-progs               # cjpeg: bench/upload_latency.sh makes its big JPEG
    nlohmann-json3-dev                # JSON (safetensors headers, CLI output)
    libxxhash-dev                     # content hashes and checksums
    libsqlite3-dev                    # embedded encode-job queue
    libpq-dev postgresql              # scale-out job queue (the server only for its tests)
    libcurl4-openssl-dev libssl-dev   # object-store tiers (HTTP, HMAC/SHA-256 signing)
    libboost-dev libboost-system-dev  # Beast/Asio: the HTTP + WebSocket service
    libgtest-dev                      # tests
    libopenblas-dev                   # bench_gemm only: OpenBLAS as the sgemm peer
    python3-onnx python3-numpy        # tools/onnx/export.py (ONNX export, onnx_parity test)
    emscripten node-acorn             # the WASM prompt decoder (build-wasm; acorn for its linker)
    chromium                          # the web client's end-to-end test (playwright-core drives it)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Node.js runs the Azurite / s3rver emulators of the object-store tests. A machine may already
# have a Node.js whose package bundles npm (and conflicts with Debian's npm): keep it.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
