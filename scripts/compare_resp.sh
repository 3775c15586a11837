#!/usr/bin/env bash
# kvs-server against redis-server through Redis's own load generator,
# redis-benchmark, in one run: the same command line against each server,
# each pair back to back, at pipeline depth 1 and 16:
#
#   redis-benchmark -t TEST -c 50 -d 100 -r 100000 -n 200000 -P {1,16} --csv
#
# for TEST in ping, set, get, incr, mset (ping_mbulk through the proxy,
# which does not take inline commands), in three setups:
#   persist   kvs-server --engine kvs --sync every-sec   vs
#             redis-server --appendonly yes --appendfsync everysec --save ''
#   memory    kvs-server --engine memory                 vs
#             redis-server --appendonly no --save ''
#   proxy     3 of the `persist` nodes behind nutcracker (scripts/cluster.sh)
#             vs 3 redis-server nodes behind nutcracker
#
# Besides requests per second it records the CPU time each server process
# spent (utime+stime from /proc/PID/stat before and after), per request:
# steadier than throughput on a shared machine. In the proxy setup it also
# records nutcracker's and the nodes' CPU use (% of one core) during the
# run: the proxy at ~100% of a core while the nodes idle is what makes it
# the bottleneck.
#
#   scripts/compare_resp.sh            # results into a directory outside the work tree
#   scripts/compare_resp.sh --write    # and into BENCHMARKS.md (resp-compare markers)
#   N=50000 SETUPS="memory" scripts/compare_resp.sh   # quicker, one setup
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

WRITE=0
for arg in "$@"; do
    case $arg in
    --write) WRITE=1 ;;
    *)
        echo "usage: scripts/compare_resp.sh [--write]" >&2
        exit 2
        ;;
    esac
done

N=${N:-200000}
TESTS=${TESTS:-"ping set get incr mset"}
SETUPS=${SETUPS:-"persist memory proxy"}
PIPELINES=${PIPELINES:-"1 16"}
RESULTS=${KVS_RESULTS:-${TMPDIR:-/tmp}/kvs-compare-resp-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
CSV=$RESULTS/runs.csv
echo "setup,server,pipeline,test,rps,server_cpu_us_per_req,proxy_cpu_pct,nodes_cpu_pct,errors,load1" >"$CSV"
HZ=$(getconf CLK_TCK)

log() { printf '[compare_resp %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for tool in redis-server redis-benchmark nutcracker python3; do
    command -v $tool >/dev/null || {
        echo "$tool is not installed (Debian: redis-server redis-tools nutcracker python3)" >&2
        exit 1
    }
done

# KVS_SERVER=PATH runs that binary instead of building one (a copy is
# safe from another build replacing target/release/kvs-server mid-run).
if [ -z "${KVS_SERVER:-}" ]; then
    log "building the release kvs-server"
    KVS_SERVER=$(release_dir kvs-server)/kvs-server
fi
export KVS_SERVER

WORK=$(mktemp -d -t kvs-compare-resp.XXXXXX)
STARTED=() # PIDs this script started itself (the single-server setups)

# A base port with BASE..BASE+5 free, for a cluster.
free_base() {
    python3 - <<'EOF'
import socket
for base in range(31000, 60000, 10):
    socks = []
    try:
        for p in range(base, base + 6):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    if len(socks) == 6:
        print(base); break
EOF
}

wait_up() { # wait_up PORT
    for _ in $(seq 100); do
        redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}

stop_started() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STARTED=()
}

cleanup() {
    stop_started
    for c in "$WORK"/cluster-*; do
        [ -d "$c" ] && KVS_CLUSTER_DIR=$c scripts/cluster.sh stop 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# bench SETUP SERVER PORT "SERVER_PIDS" "PROXY_PID" P TEST
bench() {
    local setup=$1 server=$2 port=$3 pids=$4 proxy=$5 p=$6 test=$7
    local out=$RESULTS/$setup-$server-P$p-$test run=$test
    # nutcracker speaks only multibulk: no inline PING through it.
    [ "$setup" = proxy ] && [ "$test" = ping ] && run=ping_mbulk
    local s0 p0 t0 s1 p1 t1 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    s0=$(cpu_ticks $pids)
    p0=0
    [ -n "$proxy" ] && p0=$(cpu_ticks "$proxy")
    t0=$(date +%s%N)
    redis-benchmark -p "$port" -t "$run" -c 50 -d 100 -r 100000 -n "$N" -P "$p" --csv \
        >"$out.csv" 2>"$out.err" || true
    t1=$(date +%s%N)
    s1=$(cpu_ticks $pids)
    p1=0
    [ -n "$proxy" ] && p1=$(cpu_ticks "$proxy")
    python3 - "$setup" "$server" "$p" "$test" "$out" $((s1 - s0)) $((p1 - p0)) \
        $((t1 - t0)) "$HZ" "$N" "$load" >>"$CSV" <<'EOF'
import csv, sys
setup, server, p, test, out, sticks, pticks, ns, hz, n, load = sys.argv[1:]
rows = [r for r in csv.reader(open(out + ".csv")) if r and r[0] != "test"]
errors = sum(1 for line in open(out + ".err") if "rror" in line and "CONFIG" not in line)
reqs = int(n) * max(len(rows), 1)
secs = int(ns) / 1e9
cpu_us = int(sticks) / int(hz) * 1e6 / reqs
proxy_pct = int(pticks) / int(hz) / secs * 100 if pticks != "0" else ""
nodes_pct = int(sticks) / int(hz) / secs * 100
# ping runs as PING_INLINE and PING_MBULK: report their mean rate.
rps = sum(float(r[1]) for r in rows) / max(len(rows), 1)
print(f"{setup},{server},{p},{test},{rps:.0f},{cpu_us:.2f},"
      f"{proxy_pct if proxy_pct == '' else round(proxy_pct)},{round(nodes_pct)},{errors},{load}")
EOF
    tail -1 "$CSV" >&2
}

start_single() { # start_single SETUP SERVER: sets SINGLE_PORT and SINGLE_PID
    local setup=$1 server=$2 port dir
    port=$(free_port)
    dir=$WORK/$setup-$server
    mkdir -p "$dir"
    case $server-$setup in
    kvs-persist) "$KVS_SERVER" --addr "127.0.0.1:$port" --engine kvs --sync every-sec \
        --dir "$dir" --log-level warn >"$dir/log" 2>&1 & ;;
    kvs-memory) "$KVS_SERVER" --addr "127.0.0.1:$port" --engine memory \
        --dir "$dir" --log-level warn >"$dir/log" 2>&1 & ;;
    redis-persist) redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
        --appendonly yes --appendfsync everysec >"$dir/log" 2>&1 & ;;
    redis-memory) redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
        --appendonly no >"$dir/log" 2>&1 & ;;
    esac
    SINGLE_PID=$!
    SINGLE_PORT=$port
    STARTED+=("$SINGLE_PID")
    wait_up "$port"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "results in $RESULTS; load: $LOAD_START"
for setup in $SETUPS; do
    declare -A PORT=() PIDS=() PROXY=()
    for server in kvs redis; do
        if [ "$setup" = proxy ]; then
            local_dir=$WORK/cluster-$server
            base=$(free_base)
            flag=()
            [ $server = redis ] && flag=(--redis)
            KVS_CLUSTER_DIR=$local_dir scripts/cluster.sh start 3 "$base" "${flag[@]}"
            PORT[$server]=$base
            PIDS[$server]=$(awk '$2 != "nutcracker" {print $1}' "$local_dir/pids" | tr '\n' ' ')
            PROXY[$server]=$(awk '$2 == "nutcracker" {print $1}' "$local_dir/pids")
        else
            start_single "$setup" "$server"
            PORT[$server]=$SINGLE_PORT
            PIDS[$server]=$SINGLE_PID
            PROXY[$server]=
        fi
    done
    for p in $PIPELINES; do
        for test in $TESTS; do
            for server in kvs redis; do
                bench "$setup" "$server" "${PORT[$server]}" "${PIDS[$server]}" \
                    "${PROXY[$server]}" "$p" "$test"
            done
        done
    done
    stop_started
    for server in kvs redis; do
        [ "$setup" = proxy ] && KVS_CLUSTER_DIR=$WORK/cluster-$server scripts/cluster.sh stop
    done
    unset PORT PIDS PROXY
done

{
    echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\` on $(nproc) cores" \
        "($(uname -r)), redis-server $(redis-server --version | cut -d' ' -f3 | sed 's/v=//'), $(nutcracker -V 2>&1 | head -1 | sed 's/.*nutcracker-/nutcracker /');" \
        "load average (1/5/15 min) $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
        "the load column is the 1-minute load when the kvs run started. Ratio = kvs/redis (req/s);" \
        "CPU redis/kvs above 1 means kvs spends less CPU per request."
    echo
} >"$RESULTS/table.md"
python3 - "$CSV" >>"$RESULTS/table.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {(r["setup"], r["pipeline"], r["test"], r["server"]): r for r in rows}
keys = sorted({(r["setup"], r["pipeline"], r["test"]) for r in rows},
              key=lambda k: (["persist", "memory", "proxy"].index(k[0]), int(k[1]),
                             ["ping", "set", "get", "incr", "mset"].index(k[2])))
print("| setup | P | test | kvs req/s | redis req/s | kvs/redis | kvs CPU µs/req | redis CPU µs/req | CPU redis/kvs | nutcracker CPU % (kvs / redis) | nodes CPU % (kvs / redis) | errors | load |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---|")
for k in keys:
    a, b = by.get(k + ("kvs",)), by.get(k + ("redis",))
    if not a or not b:
        continue
    ratio = float(a["rps"]) / float(b["rps"]) if float(b["rps"]) else 0
    cpu = float(b["server_cpu_us_per_req"]) / float(a["server_cpu_us_per_req"]) if float(a["server_cpu_us_per_req"]) else 0
    proxy = f'{a["proxy_cpu_pct"]} / {b["proxy_cpu_pct"]}' if a["proxy_cpu_pct"] else ""
    nodes = f'{a["nodes_cpu_pct"]} / {b["nodes_cpu_pct"]}' if a["proxy_cpu_pct"] else ""
    print(f'| {k[0]} | {k[1]} | {k[2].upper()} | {a["rps"]} | {b["rps"]} | **{ratio:.2f}×** | '
          f'{a["server_cpu_us_per_req"]} | {b["server_cpu_us_per_req"]} | {cpu:.2f}× | {proxy} | {nodes} | '
          f'{int(a["errors"]) + int(b["errors"])} | {a["load1"]} |')
EOF

cat "$RESULTS/table.md"
if [ $WRITE = 1 ]; then
    python3 - "$ROOT/BENCHMARKS.md" "$RESULTS/table.md" <<'EOF'
import sys
md, table = sys.argv[1], open(sys.argv[2]).read()
text = open(md).read()
start, end = "<!-- resp-compare:start -->", "<!-- resp-compare:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
open(md, "w").write(head + start + "\n" + table + end + tail)
EOF
    log "BENCHMARKS.md updated"
fi
log "done: $RESULTS"
