#!/usr/bin/env bash
# The coordinated-omission check of issue 12: kvs-bench in open loop at
# RATE req/s for DURATION s against a kvs-server that is stopped (SIGSTOP)
# for STALL s from AT s into the run. About STALL/DURATION of the requests
# fall due during the stall, so an honest p90/p99 is hundreds of ms.
#
#   scripts/stall.sh                         # RATE=10000 DURATION=5 STALL=1 AT=2
#   KVS_BENCH=/path/to/old/kvs-bench scripts/stall.sh    # another build
#
# Results (the text report and JSON) go to a directory outside the work
# tree, printed at the end (KVS_RESULTS to choose it).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-10000}
DURATION=${DURATION:-5}
STALL=${STALL:-1}
AT=${AT:-2}
RESULTS=${KVS_RESULTS:-${TMPDIR:-/tmp}/kvs-stall-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"

if [ -z "${KVS_BENCH:-}" ] || [ -z "${KVS_SERVER:-}" ]; then
    cargo build --release --quiet --bin kvs-server --bin kvs-bench
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    KVS_BENCH=${KVS_BENCH:-$target/release/kvs-bench}
    KVS_SERVER=${KVS_SERVER:-$target/release/kvs-server}
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
"$KVS_SERVER" --addr "127.0.0.1:$port" --dir "$dir" --log-level warn &
server=$!
cleanup() {
    kill -CONT "$server" 2>/dev/null || true
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.05
done

json=()
if "$KVS_BENCH" --help | grep -q -- '--json'; then
    json=(--json "$RESULTS/report.json")
fi
"$KVS_BENCH" --addr "127.0.0.1:$port" --rate "$RATE" --duration "$DURATION" \
    --preload --keys 10000 "${json[@]}" >"$RESULTS/report.txt" 2>"$RESULTS/stderr.txt" &
bench=$!
sleep "$AT"
kill -STOP "$server"
sleep "$STALL"
kill -CONT "$server"
wait "$bench" || true
cat "$RESULTS/report.txt" "$RESULTS/stderr.txt"
echo "stall.sh: results in $RESULTS" >&2
