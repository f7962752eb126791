#!/usr/bin/env bash
# The encode -> segment walk-through: encodes an image once into an embedding bundle, then
# answers a click from the bundle alone.
#   SPLITSEG_MODEL  a SAM / MobileSAM / SAM 2.1 checkpoint (.pth or .safetensors); without one,
#                   full-size random MobileSAM weights are synthesised (masks are then meaningless)
#   SPLITSEG_IMAGE  the image (default assets/sample.png)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/splitseg
work=${SPLITSEG_DEMO_DIR:-build/demo}
mkdir -p "$work"
image=${SPLITSEG_IMAGE:-assets/sample.png}
model=${SPLITSEG_MODEL:-}
if [ -z "$model" ]; then
    model=$work/mobilesam-random.safetensors
    [ -f "$model" ] || $bin models synth --arch mobilesam --out "$model"
    echo "NOTE: no SPLITSEG_MODEL given: using RANDOM MobileSAM weights. The pipeline runs for"
    echo "      real, but masks from random weights are meaningless. Point SPLITSEG_MODEL at an"
    echo "      official checkpoint (e.g. mobile_sam.pt, sam_vit_b_01ec64.pth) for real masks."
fi
$bin models inspect --model "$model" --json
$bin encode --model "$model" --image "$image" --out "$work/image.bundle.safetensors" --json
$bin segment --model "$model" --bundle "$work/image.bundle.safetensors" \
    --point 220,250,1 --multimask --out "$work/masks.safetensors" \
    --mask-png "$work/mask.png" --json
echo "best mask written to $work/mask.png"
