#!/usr/bin/env bash
# Upload latency of a big photo: a 6000x4000 JPEG (24 MP, q90, about 8.5 MB, made here with numpy
# and libjpeg-turbo's cjpeg) posted N times to `splitseg serve` with one io thread. Prints, for the
# repeat uploads of the same image (after its encode, so no encode runs meanwhile), the request
# handler's time (the server's request log "ms": on the io thread before the disk threads, on a
# disk thread since) and curl's time for the whole request; then the latency of GET /healthz while
# that image is uploaded back to back (what a click waits behind an upload on the same io thread).
# Then the same for new images (the photo with a numbered comment segment: each is stored and
# fsynced, and queues an encode that runs meanwhile).
# DISK_LOAD_MB=M keeps the disk busy during the new images (M MB written and fsynced in a loop),
# as other processes' writes do: an fsync then waits longer.
#   bench/upload_latency.sh [SPLITSEG_BIN] [N]   (default build/splitseg, 10; needs cjpeg, curl,
#   python3-numpy and the golden sam-vit-tiny weights (SPLITSEG_GOLDEN_DIR) or SPLITSEG_MODEL=CKPT)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-build/splitseg}")
n=${2:-10}
model=${SPLITSEG_MODEL:-${SPLITSEG_GOLDEN_DIR:-../shared/golden}/sam-vit-tiny/weights.pth}
for tool in cjpeg curl; do
    command -v "$tool" >/dev/null || { echo "upload_latency: no $tool (apt-get install libjpeg-turbo-progs curl)"; exit 77; }
done
[ -f "$model" ] || { echo "upload_latency: no model at $model (set SPLITSEG_MODEL or SPLITSEG_GOLDEN_DIR)"; exit 77; }
model=$(realpath "$model")
work=$(mktemp -d)
pid=
uploader=
disk_load=
trap '[ -n "$disk_load" ] && kill "$disk_load"; [ -n "$uploader" ] && kill "$uploader"; [ -n "$pid" ] && kill "$pid" && wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# A gradient with noise: compresses like a photo, not like a flat test card.
/usr/bin/python3 - "$work/big.ppm" <<'EOF'
import sys
import numpy as np
h, w = 4000, 6000
y, x = np.mgrid[0:h, 0:w]
img = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.int16)
img += np.random.default_rng(1).integers(-20, 20, size=img.shape, dtype=np.int16)
with open(sys.argv[1], 'wb') as f:
    f.write(b'P6 %d %d 255\n' % (w, h) + np.clip(img, 0, 255).astype(np.uint8).tobytes())
EOF
cjpeg -quality 90 "$work/big.ppm" > "$work/big.jpg"
echo "image: 6000x4000 JPEG, $(stat -c %s "$work/big.jpg") bytes"

"$bin" serve --port 0 --data-dir "$work/data" --model "$model" --web none --threads 1 \
    > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.]*:[0-9]*' "$work/out" | head -1)/api/v1/images
post() { curl -s -o "$work/reply.json" -w '%{http_code} %{time_total}' --data-binary @"$work/big.jpg" \
    -H 'Content-Type: image/jpeg' "$url"; }
# The photo made new by a JPEG comment (COM, 10 bytes) holding the number $1, right after SOI.
post_new() {
    { printf '\xff\xd8\xff\xfe\x00\x0a%08d' "$1"; tail -c +3 "$work/big.jpg"; } |
        curl -s -o "$work/reply.json" -w '%{http_code} %{time_total}' --data-binary @- \
            -H 'Content-Type: image/jpeg' "$url"
}
echo "first upload (new image: stored, encode queued): $(post) s"
id=$(sed 's/.*"id":"\([0-9a-f]*\)".*/\1/' "$work/reply.json")
for _ in $(seq 600); do
    status=$(curl -s "$url/$id")
    case $status in *completed* | *failed*) break ;; esac
    sleep 0.2
done
echo "its encode: $status"
for _ in $(seq "$n"); do post | cut -d' ' -f2; done > "$work/curl_s"
summary() { sort -n | awk -v what="$1" -v scale="$2" '{a[NR] = $1 * scale}
    END {printf "%s, n=%d: median %.1f ms, p90 %.1f ms, min %.1f ms, max %.1f ms\n", what, NR,
        a[int((NR + 1) / 2)], a[int(NR * 0.9 + 0.5)], a[1], a[NR]}'; }
grep '"method":"POST"' "$work/log" | tail -n "$n" | sed 's/.*"ms":\([0-9.]*\).*/\1/' |
    summary "repeat uploads, handler time" 1
summary "repeat uploads, whole request (curl)" 1000 < "$work/curl_s"

while true; do post > /dev/null; done &
uploader=$!
sleep 1
healthz=${url%/images}
healthz=${healthz%/api/v1}/healthz
probe_healthz() {
    for _ in $(seq 40); do curl -s -o /dev/null -w '%{time_total}\n' "$healthz"; sleep 0.05; done
}
probe_healthz | summary "GET /healthz during back-to-back uploads" 1000
kill "$uploader" && wait "$uploader" 2>/dev/null || true
uploader=

if [ "${DISK_LOAD_MB:-0}" -gt 0 ]; then
    while true; do
        dd if=/dev/zero of="$work/disk_load" bs=1M count="$DISK_LOAD_MB" conv=fsync status=none
    done &
    disk_load=$!
    echo "disk load: $DISK_LOAD_MB MB written and fsynced in a loop from here on"
fi
for i in $(seq "$n"); do post_new "$i" | cut -d' ' -f2; done > "$work/curl_new_s"
grep '"method":"POST"' "$work/log" | grep '"status":201' | tail -n "$n" |
    sed 's/.*"ms":\([0-9.]*\).*/\1/' | summary "new uploads, handler time" 1
summary "new uploads, whole request (curl)" 1000 < "$work/curl_new_s"
(i=1000; while true; do i=$((i + 1)); post_new "$i" > /dev/null; done) &
uploader=$!
sleep 1
probe_healthz | summary "GET /healthz during back-to-back uploads of new images" 1000
