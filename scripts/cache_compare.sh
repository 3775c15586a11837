#!/usr/bin/env bash
# The cache measurements of BENCHMARKS.md ("Memory engine as a cache"), in
# one run on this machine: hit ratios per policy against redis-server,
# throughput of the bounded engine against the unbounded one (and Redis),
# RSS at the bound and memory per key against redis-server.
#
#   scripts/cache_compare.sh              # about 25 minutes on 2 cores
#   REQUESTS=100000 DURATION=3 scripts/cache_compare.sh   # quicker
#
# Loopback only; every server is a child of this script, killed by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-400000}   # cache_sim requests per trace
BOUND=${BOUND:-8mb}            # cache size for hit ratio and throughput
DURATION=${DURATION:-10}       # kvs-bench seconds per throughput run
PORT=${PORT:-47100}

cargo build --release --bins --example cache_sim

echo "## Hit ratio (same seeded trace, cache-aside)"
./target/release/examples/cache_sim --requests "$REQUESTS" --bound "$BOUND"

echo
echo "## Throughput: kvs-bench cache-aside, 50 connections, Zipf 0.99 over 300,000 keys, 100 B"
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

bench() { # name protocol port
    local out
    out=$(./target/release/kvs-bench --protocol "$2" --addr "127.0.0.1:$3" -c 50 \
        --duration "$DURATION" --warmup 1 --ratio 1:0 --key-dist zipf:0.99 -r 300000 \
        -d 100 --on-miss set --seed 7 2>&1)
    echo "### $1"
    echo "$out" | grep -E "req/s|GET hits" | head -3
}

wait_port() {
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

n=0
for conf in "unbounded" "lru" "sieve" "s3fifo"; do
    n=$((n + 1))
    port=$((PORT + n))
    mkdir -p "$DIR/$conf"
    if [ "$conf" = unbounded ]; then
        args=()
    else
        args=(--max-memory "$BOUND" --eviction "$conf")
    fi
    ./target/release/kvs-server --engine memory --addr "127.0.0.1:$port" --dir "$DIR/$conf" \
        --log-level warn "${args[@]}" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    bench "kvs-server --engine memory $conf" kvs "$port"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
if command -v redis-server >/dev/null; then
    for policy in allkeys-lru allkeys-lfu; do
        n=$((n + 1))
        port=$((PORT + n))
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --maxmemory "$BOUND" --maxmemory-policy "$policy" >/dev/null &
        pid=$!
        PIDS+=("$pid")
        wait_port "$port"
        bench "redis-server --maxmemory $BOUND $policy" resp "$port"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
else
    echo "SKIPPED: redis-server not installed"
fi

echo
echo "## RSS at the bound and memory per key (kvs-server and redis-server children)"
cargo test --release --test memory_server -- --ignored --nocapture --test-threads 1 2>&1 |
    grep -E "kvs-server|redis-server|kvs memory engine|SKIPPED"
echo
echo "## Per-entry overhead behind ENTRY_OVERHEAD (in-process)"
for p in s3fifo sieve lru noeviction; do
    KVS_EVICTION=$p cargo test --release --test memory_overhead -- --ignored --nocapture 2>&1 |
        grep "^policy"
done
