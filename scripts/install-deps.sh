#!/usr/bin/env bash
# Installs the Debian 12 packages splitseg builds and tests with (see README "Dependencies").
set -euo pipefail
packages=(
    build-essential cmake pkg-config clang libomp-dev
    libdnnl-dev                       # oneDNN: sgemm/matmul kernels (OpenMP threading)
    libpng-dev libjpeg62-turbo-dev libwebp-dev   # image decoding/encoding
    nlohmann-json3-dev                # JSON (safetensors headers, CLI output)
    libxxhash-dev                     # content hashes and checksums
    libsqlite3-dev                    # embedded encode-job queue
    libpq-dev postgresql              # scale-out job queue (the server only for its tests)
    libcurl4-openssl-dev libssl-dev   # object-store tiers (HTTP, HMAC/SHA-256 signing)
    nodejs npm                        # Azurite / s3rver emulators for the object-store tests
    libgtest-dev                      # tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
