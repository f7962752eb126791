#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job: `splitseg serve` with the embedded
# defaults (SQLite job queue and a disk cache under ./splitseg-data), the web client at / (web/dist)
# decoding in the browser with the WASM decoder (build-wasm) and the model's decoder weights.
#   SPLITSEG_MODEL  a SAM / MobileSAM / SAM 2.1 checkpoint (.pth or .safetensors); without one,
#                   full-size random MobileSAM weights are synthesised (masks are then meaningless)
# Extra arguments go to `splitseg serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
NODE_PATH=/usr/share/nodejs emcmake cmake -S . -B build-wasm -DSPLITSEG_WASM=ON >/dev/null
NODE_PATH=/usr/share/nodejs cmake --build build-wasm -j"$(nproc)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build)
if [ -z "${SPLITSEG_MODEL:-}" ]; then
    export SPLITSEG_MODEL=splitseg-data/mobilesam-random.safetensors
    mkdir -p splitseg-data
    [ -f "$SPLITSEG_MODEL" ] || build/splitseg models synth --arch mobilesam --out "$SPLITSEG_MODEL"
    echo "NOTE: no SPLITSEG_MODEL given: serving RANDOM MobileSAM weights. Everything runs for real,"
    echo "      but masks from random weights are meaningless. Point SPLITSEG_MODEL at an official"
    echo "      checkpoint (e.g. mobile_sam.pt, sam_vit_b_01ec64.pth, sam2.1_hiera_tiny.pt)."
fi
# The browser's decoder weights, from the model being served (a second's work: always redone).
mkdir -p splitseg-data
decoder=splitseg-data/decoder.safetensors
build/splitseg models extract-decoder --model "$SPLITSEG_MODEL" --out "$decoder" >/dev/null
exec build/splitseg serve --data-dir splitseg-data --decoder "$decoder" "$@"
