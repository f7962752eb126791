#!/bin/bash
# Interleaved A/B of the prompt decoder: the working tree against BASE_REV, in one process.
#   bench/ab/decoder_ab.sh BASE_REV MODEL [THREADS=2] [ROUNDS=40] [BF16=1] [PAIRS=0]
# PAIRS=1 times two decodes at once, one thread each (a loaded server's case), instead of one.
# MODEL: any checkpoint with a SAM decoder (build/splitseg models synth --arch mobilesam).
# Builds both engines (the base one from a temporary git worktree) under build/decoder_ab.
set -euo pipefail
cd "$(dirname "$0")/../.."
base_rev=$1 model=$2 threads=${3:-2} rounds=${4:-40} bf16=${5:-1} pairs=${6:-0}
out=build/decoder_ab
mkdir -p "$out/base" "$out/new"
tree="$out/base-tree"
rm -rf "$tree" && git worktree prune
git worktree add --detach "$tree" "$base_rev" > /dev/null
trap 'git worktree remove --force "$tree"' EXIT
flags="-O3 -march=native -std=c++20 -fopenmp -fno-math-errno -DNDEBUG -w"  # as CMake builds the engine
compile_engine() {  # src_dir obj_dir extra_flags
    for f in $(cd "$1" && ls engine/*.cpp engine/models/*.cpp engine/weights/*.cpp); do
        g++ $flags -I"$1" $3 -c "$1/$f" -o "$2/$(echo "$f" | tr / _).o" &
        while [ "$(jobs -r | wc -l)" -ge "$(nproc)" ]; do sleep 0.2; done
    done
    wait
}
compile_engine "$tree/src" "$out/base" "-Dsplitseg=splitseg_base"
compile_engine src "$out/new" ""
g++ $flags -I"$tree/src" -Dsplitseg=splitseg_base -DSIDE=base -c bench/ab/decoder_side.cpp -o "$out/side_base.o"
g++ $flags -Isrc -DSIDE=new -c bench/ab/decoder_side.cpp -o "$out/side_new.o"
g++ $flags bench/ab/decoder_ab.cpp "$out"/side_*.o "$out"/base/*.o "$out"/new/*.o -ldnnl -lxxhash \
    -o "$out/decoder_ab"
"$out/decoder_ab" "$model" "$threads" "$rounds" "$bf16" "$pairs"
