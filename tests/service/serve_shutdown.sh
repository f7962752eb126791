#!/usr/bin/env bash
# Graceful shutdown of `splitseg serve` end to end: upload a burst of images, SIGTERM at once,
# check that serve exits promptly and cleanly with encodes still queued, then start it again on
# the same data dir and check that exactly the queued encodes run there (none lost, none redone).
# Also checks that serve's stderr is structured: every line a JSON object with a "ts".
# Skips (77) without the golden sam-vit-tiny weights.
#   tests/service/serve_shutdown.sh build/splitseg
set -euo pipefail
splitseg=$1
golden=${SPLITSEG_GOLDEN_DIR:-$(dirname "$0")/../../../shared/golden}
model=$golden/sam-vit-tiny/weights.pth
[ -f "$model" ] || { echo "skip: no $model"; exit 77; }
n=${SERVE_SHUTDOWN_IMAGES:-6}
dir=$(mktemp -d "${TMPDIR:-/tmp}/serve-stop.XXXXXX")
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

start_serve() {  # $1: log name; sets pid and url
    "$splitseg" serve --port 0 --data-dir "$dir/data" --model "$model" --web none \
        >"$dir/$1.out" 2>"$dir/$1.err" &
    pid=$!
    for _ in $(seq 300); do grep -q listening "$dir/$1.out" && break; sleep 0.1; done
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/$1.out")
    [ -n "$url" ] || { echo "serve did not start"; cat "$dir/$1.err"; exit 1; }
}
encodes() { grep -c '"event":"encode"' "$dir/$1.err" || true; }

# Distinct uploads: the golden image with a different trailer after IEND each (decoders stop
# at IEND; the content hash, so the id, differs).
for i in $(seq "$n"); do
    { cat "$golden/sam-vit-tiny/img0.png"; printf 'copy %d' "$i"; } >"$dir/img$i.png"
done

start_serve first
ids=()
for i in $(seq "$n"); do
    id=$(curl -sf --data-binary @"$dir/img$i.png" "$url/api/v1/images" |
        sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
    [ -n "$id" ] || { echo "upload $i failed"; cat "$dir/first.err"; exit 1; }
    ids+=("$id")
done
stop_start=$(date +%s%N)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
stop_ms=$(( ($(date +%s%N) - stop_start) / 1000000 ))
[ "$rc" = 0 ] || { echo "serve exited $rc on SIGTERM"; cat "$dir/first.err"; exit 1; }
grep -q '"event":"stopped"' "$dir/first.err" || { echo "no stopped event"; exit 1; }
done_first=$(encodes first)
echo "first run: $done_first of $n encodes done, stopped in $stop_ms ms"
[ "$stop_ms" -lt 30000 ] || { echo "stopping took $stop_ms ms"; exit 1; }
if [ "$done_first" -ge "$n" ]; then
    echo "skip: every encode finished before SIGTERM (raise SERVE_SHUTDOWN_IMAGES)"
    exit 77
fi

start_serve second
list=$(IFS=,; echo "${ids[*]}")
for _ in $(seq 1500); do
    statuses=$(curl -sf "$url/api/v1/images?ids=$list")
    if echo "$statuses" | grep -qE '"status":"(failed|missing|not_found)"'; then
        echo "an encode was lost or failed: $statuses"
        exit 1
    fi
    [ "$(echo "$statuses" | grep -o '"status":"completed"' | wc -l)" = "$n" ] && break
    sleep 0.1
done
[ "$(echo "$statuses" | grep -o '"status":"completed"' | wc -l)" = "$n" ] ||
    { echo "not all encodes completed: $statuses"; exit 1; }
done_second=$(encodes second)
[ "$done_second" = $((n - done_first)) ] ||
    { echo "second run encoded $done_second, expected $((n - done_first))"; exit 1; }
kill -TERM "$pid"
wait "$pid"
pid=""

# Structured logs: every stderr line of both runs is a JSON object that starts with "ts".
bad=$(cat "$dir/first.err" "$dir/second.err" | grep -vcE '^\{"ts":"[0-9T:.-]+Z",.*\}$' || true)
[ "$bad" = 0 ] || { echo "$bad log lines are not JSON:"; grep -vE '^\{"ts":' "$dir"/*.err; exit 1; }
echo "serve shutdown: $((n - done_first)) queued encodes kept over a restart and run once"
