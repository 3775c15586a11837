#!/usr/bin/env bash
# kvs-bench against redis-benchmark, same redis-server, same workload, one
# run: GET and SET at pipeline 16, 50 connections, 100 B values, 100000
# keys, N requests, each tool twice, taking turns; prints the best run of
# each and the difference (target: within 15%).
#
#   scripts/agree.sh            # N=1000000
#   N=300000 scripts/agree.sh
#
# Writes its raw output to a directory outside the work tree (printed).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
KEYS=100000
RESULTS=${KVS_RESULTS:-${TMPDIR:-/tmp}/kvs-agree-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"

if [ -z "${KVS_BENCH:-}" ]; then
    cargo build --release --quiet --bin kvs-bench
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    KVS_BENCH=$target/release/kvs-bench
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --daemonize no --logfile "$RESULTS/redis.log" &
redis=$!
cleanup() {
    kill -TERM "$redis" 2>/dev/null || true
    wait "$redis" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
done

"$KVS_BENCH" --protocol resp --addr "127.0.0.1:$port" --preload -r "$KEYS" -d 100 -n 1 \
    --ratio 1:0 >/dev/null

for test in get set; do
    ratio=1:0
    [ "$test" = set ] && ratio=0:1
    for r in 1 2; do
        redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$N" -r "$KEYS" -d 100 -P 16 \
            -t "$test" --csv >"$RESULTS/redis-benchmark-$test-$r.csv"
        "$KVS_BENCH" --protocol resp --addr "127.0.0.1:$port" -c 50 -P 16 -n "$N" -r "$KEYS" \
            -d 100 --ratio "$ratio" --csv >"$RESULTS/kvs-bench-$test-$r.csv"
    done
done

python3 - "$RESULTS" <<'PY'
import csv, glob, os, sys
res = sys.argv[1]
print("| test | redis-benchmark req/s | kvs-bench req/s | difference | within 15% |")
print("|---|---:|---:|---:|:---:|")
for test in ["get", "set"]:
    rb = []
    for f in glob.glob(os.path.join(res, f"redis-benchmark-{test}-*.csv")):
        rows = list(csv.reader(open(f)))
        rb.append(float(rows[1][1]))
    kb = []
    for f in glob.glob(os.path.join(res, f"kvs-bench-{test}-*.csv")):
        for row in csv.DictReader(open(f)):
            if row["op"] == "ALL":
                kb.append(float(row["rps"]))
    a, b = max(rb), max(kb)
    d = (b - a) / a * 100
    print(f"| {test.upper()} | {a:,.0f} | {b:,.0f} | {d:+.1f}% | {'yes' if abs(d) <= 15 else 'NO'} |")
PY
echo "agree.sh: raw output in $RESULTS" >&2
