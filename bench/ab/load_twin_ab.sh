#!/bin/bash
# Two servers under load at the same time: BIN_A and BIN_B each serve half of the load test's
# clients (ViT-B, bf16, think 220 ms), and each round prints both servers' CPU a message.
#   bench/ab/load_twin_ab.sh BIN_A BIN_B MODEL [ROUNDS=6] [CLIENTS_EACH=16]
# Why: on this shared VM one binary's server CPU a message moves 10-14 ms from one minute to the
# next, so runs one after the other cannot separate builds a few per cent apart. Two servers
# loaded together share every minute: the pair's ratio can. Rounds alternate which starts first.
# The figure compared is CPU a message under two servers' contention, not the load test's own
# latency (run build/bench_load for that).
set -euo pipefail
a=$(realpath "$1") b=$(realpath "$2") model=$(realpath "$3") rounds=${4:-6} clients=${5:-16}
cd "$(dirname "$0")/../.."
out=$(mktemp -d "${TMPDIR:-/tmp}/splitseg-twin.XXXXXX")
trap 'rm -rf "$out"' EXIT
run() {  # label binary
    build/bench_load --server "$2" --model "$model" --image assets/sample.png --synth-images 2 \
        --image-size 1024x768 --clients "$clients" --duration 20 --idle-sessions 20 \
        --data-dir "$out/data-$1" --server-precision bf16 --think-ms 220 \
        > "$out/$1-$round.json" 2> "$out/$1-$round.log"
}
declare -A bin=([A]=$a [B]=$b)
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then first=A second=B; else first=B second=A; fi
    run $first "${bin[$first]}" &
    sleep 1
    run $second "${bin[$second]}" &
    wait
done
python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
ratios = []
for r in range(1, rounds + 1):
    row = {}
    for side in "AB":
        load = json.load(open(f"{out}/{side}-{r}.json"))["load"]
        row[side] = load
        print(f"round {r} {side}: {load['clicks_per_s']:.1f} clicks/s, click p50/p99 "
              f"{load['click_latency_ms']['p50']:.1f}/{load['click_latency_ms']['p99']:.1f} ms, "
              f"CPU {load['server_cpu_ms_per_message']:.2f} ms a message")
    ratios.append(row["A"]["server_cpu_ms_per_message"] / row["B"]["server_cpu_ms_per_message"])
print(f"CPU a message A/B: median {statistics.median(ratios):.3f}, "
      f"range {min(ratios):.3f}-{max(ratios):.3f}, B lower in {sum(x > 1 for x in ratios)} "
      f"of {rounds} rounds")
EOF
