#!/usr/bin/env bash
# ctest onnx_parity: exports the golden models to ONNX (tools/onnx/export.py) and checks ONNX
# Runtime's outputs on them against the golden vectors (bench/onnx/parity.mjs).
#   tests/onnx/onnx_parity.sh SPLITSEG_BINARY
# Exits 77 (ctest: skipped) with the reason when a tool is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
splitseg="$1"
golden="${SPLITSEG_GOLDEN_DIR:-$root/../shared/golden}"
python=/usr/bin/python3  # Debian's, which has python3-onnx (a pyenv python on PATH may not)

skip() { echo "onnx_parity skipped: $*"; exit 77; }
"$python" -c 'import onnx, numpy' 2>/dev/null ||
    skip "no python3-onnx / python3-numpy (scripts/install-deps.sh installs them)"
[ -d "$root/bench/onnx/node_modules/onnxruntime-node" ] ||
    skip "no onnxruntime-node (run: cd bench/onnx && npm ci --ignore-scripts)"
command -v node >/dev/null || skip "no node"
[ -d "$golden" ] || skip "no golden vectors at $golden (set SPLITSEG_GOLDEN_DIR)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for model in sam-vit-tiny mobilesam sam2.1-hiera-mini; do
    echo "== $model"
    dir="$work/$model"
    mkdir -p "$dir"
    "$splitseg" models convert --model "$golden/$model/weights.pth" --out "$dir/weights.safetensors"
    "$python" "$root/tools/onnx/export.py" --model "$dir/weights.safetensors" --part encoder \
        --out "$dir/encoder.onnx"
    for masks in multimask single best; do
        "$python" "$root/tools/onnx/export.py" --model "$dir/weights.safetensors" --part decoder \
            --masks "$masks" --out "$dir/decoder-$masks.onnx"
    done
    for size in 480x640 1000x1500; do  # the golden images' sizes: fixed-size graphs
        "$python" "$root/tools/onnx/export.py" --model "$dir/weights.safetensors" --part decoder \
            --masks multimask --orig-size "$size" --out "$dir/decoder-multimask-$size.onnx"
    done
    node "$root/bench/onnx/parity.mjs" "$golden/$model" "$dir" --threads 1
done
