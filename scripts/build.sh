#!/usr/bin/env bash
# Configures and builds splitseg into build/ (the CLI lands at build/splitseg).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
