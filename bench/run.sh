#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md: full-size random weights for every architecture, the
# encoder and click medians of `splitseg bench` (3 masks, low-res only, best mask only; RSS over
# the clicks), peak memory of `segment`, and bundle load times per cache tier. Usage: bench/run.sh [OUT_DIR]   (build first: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/bench}
threads=${SPLITSEG_BENCH_THREADS:-2}
mkdir -p "$out"
bin=build/splitseg
if [ -x build/bench_gemm ]; then
    echo "== matrix-product ceiling (OpenBLAS autodetected, then OPENBLAS_CORETYPE=Haswell)"
    env -u OPENBLAS_CORETYPE build/bench_gemm --threads "$threads"
    OPENBLAS_CORETYPE=Haswell build/bench_gemm --threads "$threads"
fi
for arch in ${SPLITSEG_BENCH_ARCHS:-vit_b mobilesam sam2.1_hiera_t sam2.1_hiera_l}; do
    model=$out/$arch.safetensors
    [ -f "$model" ] || $bin models synth --arch "$arch" --out "$model" >/dev/null
    # bf16 compute applies to the SAM and MobileSAM encoders and to every prompt decoder (SAM
    # 2.1's encoder stays f32).
    for precision in ${SPLITSEG_BENCH_PRECISIONS:-f32 bf16}; do
        echo "== $arch $precision"
        $bin bench --model "$model" --threads "$threads" --runs "${SPLITSEG_BENCH_RUNS:-3}" \
            --precision "$precision" --json
    done
done
if [ -f "$out/vit_b.safetensors" ]; then
    echo "== segment peak memory, vit_b (image -> masks, then bundle -> masks)"
    $bin encode --model "$out/vit_b.safetensors" --image assets/sample.png \
        --out "$out/sample.bundle.safetensors" --threads "$threads" --json
    $bin segment --model "$out/vit_b.safetensors" --image assets/sample.png --point 220,250,1 \
        --multimask --out "$out/masks.safetensors" --threads "$threads" --json
    $bin segment --model "$out/vit_b.safetensors" --bundle "$out/sample.bundle.safetensors" \
        --point 220,250,1 --multimask --out "$out/masks.safetensors" --threads "$threads" --json
fi
if [ -x build/bench_store ] && [ -d node_modules/.bin ]; then
    echo "== bundle load per tier"
    build/bench_store --runs 50
fi
