#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test tier:
#   1. Release build: unit, golden (../shared/golden or SPLITSEG_GOLDEN_DIR), CLI tests and the
#      WASM decoder's parity with the native one (build-wasm, emscripten)
#   2. unit tests again under AddressSanitizer + UBSan
#   3. a short libFuzzer run of every parser's fuzz target (clang)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The WASM decoder first: the web client's build copies it (ctest wasm_parity tests it).
NODE_PATH=/usr/share/nodejs emcmake cmake -S . -B build-wasm -DSPLITSEG_WASM=ON >/dev/null
NODE_PATH=/usr/share/nodejs cmake --build build-wasm -j"$(nproc)"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error  # Azurite, s3rver (store tests)
(cd bench/onnx && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)  # onnxruntime-node
jobs=$(nproc)

echo "== web client (web/dist, with the WASM decoder of build-wasm when built; ctest web_e2e)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build)

echo "== release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure)

echo "== unit tests under ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSPLITSEG_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs" --target unit_tests
(cd build-asan && ctest --output-on-failure -R '^unit$')

echo "== fuzz targets (libFuzzer, ${SPLITSEG_FUZZ_SECONDS:-15} s each)"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DSPLITSEG_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_all
(cd build-fuzz && ctest --output-on-failure -L fuzz)
