#!/usr/bin/env bash
# splitseg against ONNX Runtime on full-size random weights: makes them (models synth), exports
# them to ONNX (tools/onnx/export.py) and runs bench.mjs (alternating rounds, same threads).
#   bench/onnx/run.sh [ARCH...]      ARCH: as `splitseg models synth --arch`: vit_b (default),
#                                    vit_l, vit_h, mobilesam, sam2.1_hiera_t|s|b+|l
# Env: SPLITSEG (binary, build/splitseg), THREADS (2), ROUNDS (3), CLICKS (30), WORK (build/onnx-bench),
# PRECISION (splitseg's, f32).
# Weights and graphs in WORK are reused: delete them after changing tools/onnx/export.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
splitseg="${SPLITSEG:-$root/build/splitseg}"
work="${WORK:-$root/build/onnx-bench}"
python=/usr/bin/python3  # Debian's, with python3-onnx
[ -d "$root/bench/onnx/node_modules/onnxruntime-node" ] ||
    (cd "$root/bench/onnx" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
[ $# -gt 0 ] || set -- vit_b
for arch in "$@"; do
    dir="$work/$arch"
    mkdir -p "$dir"
    weights="$dir/weights.safetensors"
    [ -f "$weights" ] || "$splitseg" models synth --arch "$arch" --out "$weights"
    [ -f "$dir/encoder.onnx" ] ||
        "$python" "$root/tools/onnx/export.py" --model "$weights" --part encoder --out "$dir/encoder.onnx"
    for masks in multimask best; do
        [ -f "$dir/decoder-$masks.onnx" ] ||
            "$python" "$root/tools/onnx/export.py" --model "$weights" --part decoder \
                --masks "$masks" --orig-size 1024x1024 --out "$dir/decoder-$masks.onnx"
    done
    echo "== $arch"
    node "$root/bench/onnx/bench.mjs" --splitseg "$splitseg" --model "$weights" --onnx-dir "$dir" \
        --threads "${THREADS:-2}" --rounds "${ROUNDS:-3}" --clicks "${CLICKS:-30}" \
        --precision "${PRECISION:-f32}"
done
