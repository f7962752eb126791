#!/usr/bin/env bash
# One click in headless Chromium: splitseg's WASM decoder against onnxruntime-web (WASM backend)
# on the same random full-size weights, embedding and click (bench.mjs says what each side times).
#   bench/web/run.sh [ARCH...]      ARCH: mobilesam (default), vit_b
# Needs build/splitseg (or SPLITSEG) and build-wasm/ (src/wasm/README.md).
# Env: THREADS (1; "1,2" for both: 2 runs the threaded module), ROUNDS (5), CLICKS (10),
#      IMAGE (assets/sample.png), BASELINE_WASM (another build-wasm dir, e.g. before a change,
#      timed in the same rounds),
#      WORK (build/web-bench: weights, bundle and graph, reused; delete after changing export.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
splitseg="${SPLITSEG:-$root/build/splitseg}"
work="${WORK:-$root/build/web-bench}"
image="${IMAGE:-$root/assets/sample.png}"
python=/usr/bin/python3  # Debian's, with python3-onnx
[ -d "$root/bench/web/node_modules/onnxruntime-web" ] ||
    (cd "$root/bench/web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
# The original size (HxW) the ONNX graph upscales to, from the PNG header.
size="$("$python" -c 'import struct,sys; b=open(sys.argv[1],"rb").read(24); w,h=struct.unpack(">II",b[16:24]); print(f"{h}x{w}")' "$image")"
[ $# -gt 0 ] || set -- mobilesam
for arch in "$@"; do
    dir="$work/$arch"
    mkdir -p "$dir"
    weights="$dir/weights.safetensors"
    [ -f "$weights" ] || "$splitseg" models synth --arch "$arch" --out "$weights"
    [ -f "$dir/decoder.safetensors" ] ||
        "$splitseg" models extract-decoder --model "$weights" --dtype f32 --out "$dir/decoder.safetensors"
    [ -f "$dir/bundle.safetensors" ] ||
        "$splitseg" encode --model "$weights" --image "$image" --dtype f32 --out "$dir/bundle.safetensors"
    [ -f "$dir/decoder-multimask.onnx" ] ||
        "$python" "$root/tools/onnx/export.py" --model "$weights" --part decoder --masks multimask \
            --orig-size "$size" --out "$dir/decoder-multimask.onnx"
    echo "== $arch"
    node "$root/bench/web/bench.mjs" --data "$dir" --threads "${THREADS:-1}" \
        --rounds "${ROUNDS:-5}" --clicks "${CLICKS:-10}" ${BASELINE_WASM:+--baseline-wasm "$BASELINE_WASM"}
done
