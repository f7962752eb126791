#!/usr/bin/env bash
# `splitseg serve --jobs postgres:...` end to end: run under scripts/with-postgres.sh (which
# exports SPLITSEG_TEST_PG); uploads an image, waits for its encode through the PostgreSQL queue,
# then clicks once. Skips (77) without the golden sam-vit-tiny weights.
#   scripts/with-postgres.sh tests/service/serve_postgres.sh build/splitseg
set -euo pipefail
splitseg=$1
golden=${SPLITSEG_GOLDEN_DIR:-$(dirname "$0")/../../../shared/golden}
model=$golden/sam-vit-tiny/weights.pth
[ -f "$model" ] || { echo "skip: no $model"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/serve-pg.XXXXXX")
"$splitseg" serve --port 0 --quiet --data-dir "$dir" --model "$model" \
    --jobs "postgres:$SPLITSEG_TEST_PG" >"$dir/out" 2>"$dir/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.1; done
grep -q "jobs in PostgreSQL" "$dir/out" || { cat "$dir/out" "$dir/err"; exit 1; }
url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out")
id=$(curl -sf --data-binary @"$golden/sam-vit-tiny/img0.png" "$url/api/v1/images" |
    sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$id" ] || { echo "upload failed"; cat "$dir/err"; exit 1; }
status=""
for _ in $(seq 600); do
    status=$(curl -sf "$url/api/v1/images/$id" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
    [ "$status" = completed ] || [ "$status" = failed ] && break
    sleep 0.1
done
[ "$status" = completed ] || { echo "encode ended $status"; cat "$dir/err"; exit 1; }
curl -sf "$url/readyz" | grep -q '"jobs":true'
curl -sf -d '{"points":[[10,10,1]]}' "$url/api/v1/images/$id/infer" | grep -q '"rle"'
echo "serve with the PostgreSQL job queue: upload, encode and infer passed"
