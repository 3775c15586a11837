#!/usr/bin/env bash
# Server CPU time per request: kvs-server against redis-server under the
# same load, same machine, one run. For each workload the script reads the
# loaded server's utime+stime (/proc/PID/stat) and its
# total_commands_processed (INFO, which both servers answer) before and
# after a fixed number of requests, and prints CPU-µs per request and
# req/s side by side with the ratio kvs / redis.
#
#   scripts/cpu_per_request.sh            # both pairings, ~4 minutes on 2 cores
#   scripts/cpu_per_request.sh --write    # the same, then update BENCHMARKS.md
#   PAIRS=memory N1=50000 N16=200000 scripts/cpu_per_request.sh   # quicker
#
# Pairings (PAIRS, default "kvs memory"):
#   kvs:    kvs-server --engine kvs --sync every-sec  vs
#           redis-server --appendonly yes --appendfsync everysec --save ''
#   memory: kvs-server --engine memory                vs
#           redis-server --appendonly no --save ''
# Load (50 connections, 100 B values, KEYS keys preloaded; GET, SET and a
# 9:1 mix; pipeline 1 and 16):
#   native rows: kvs-bench --protocol kvs against kvs, and the same
#                kvs-bench with --protocol resp against redis;
#   resp rows:   redis-benchmark -t get|set against both; the 9:1 mix (which
#                redis-benchmark cannot make) with kvs-bench --protocol resp.
# Each row runs REPEAT times per server, the servers taking turns; the
# lowest CPU-µs/request and the highest req/s of each server are kept (the
# runs least disturbed by other load on a shared machine). Only one server
# is under load at a time. The load average is recorded with each row.
#
# Results go to a directory outside the work tree (KVS_RESULTS, printed at
# the end); --write also replaces the section between the
# cpu-per-request markers in BENCHMARKS.md. Only the PIDs this script
# started are ever signalled.
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
        echo "usage: scripts/cpu_per_request.sh [--write]" >&2
        exit 2
        ;;
    esac
done

PAIRS=${PAIRS:-kvs memory}
N1=${N1:-100000}          # requests per run at pipeline 1
N16=${N16:-400000}        # requests per run at pipeline 16
KEYS=${KEYS:-100000}
REPEAT=${REPEAT:-2}
CONNECTIONS=50
SIZE=100
RESULTS=${KVS_RESULTS:-${TMPDIR:-/tmp}/kvs-cpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"

log() { printf '[cpu %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool missing (apt-get install redis-server redis-tools python3)" >&2
        exit 1
    }
done

log "building release binaries"
RELEASE=$(release_dir kvs-server kvs-bench)
KVS_SERVER=${KVS_SERVER:-$RELEASE/kvs-server}
KVS_BENCH=${KVS_BENCH:-$RELEASE/kvs-bench}
COMMIT=$(git rev-parse --short HEAD)

WORK=$(mktemp -d -t kvs-cpu.XXXXXX)
KVS_PID=
REDIS_PID=

stop_servers() {
    stop_pid "$KVS_PID"
    stop_pid "$REDIS_PID"
    KVS_PID=
    REDIS_PID=
}

cleanup() {
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT

start_servers() { # start_servers PAIR
    local pair=$1
    mkdir -p "$WORK/kvs-$pair" "$WORK/redis-$pair"
    KVS_PORT=$(free_port)
    if [ "$pair" = kvs ]; then
        "$KVS_SERVER" --addr "127.0.0.1:$KVS_PORT" --engine kvs --sync every-sec \
            --dir "$WORK/kvs-$pair" --log-level warn 2>"$WORK/kvs-$pair.log" &
    else
        "$KVS_SERVER" --addr "127.0.0.1:$KVS_PORT" --engine memory \
            --dir "$WORK/kvs-$pair" --log-level warn 2>"$WORK/kvs-$pair.log" &
    fi
    KVS_PID=$!
    wait_port "$KVS_PORT" "$KVS_PID"
    REDIS_PORT=$(free_port)
    local persist=(--appendonly no)
    [ "$pair" = kvs ] && persist=(--appendonly yes --appendfsync everysec)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis-$pair" \
        "${persist[@]}" --save '' --daemonize no --logfile "$WORK/redis-$pair.log" &
    REDIS_PID=$!
    wait_port "$REDIS_PORT" "$REDIS_PID"
}

commands() { # total_commands_processed of the server on PORT
    redis-cli -p "$1" info stats | tr -d '\r' | awk -F: '$1 == "total_commands_processed" { print $2 }'
}

HZ=$(getconf CLK_TCK)

# measure SERVER(kvs|redis) CLIENT(native|kvs-bench-resp|redis-benchmark) OP(get|set|mix) P
# Appends one line to $RAW: pair server client op P commands cpu_us wall_s load1
measure() {
    local server=$1 client=$2 op=$3 p=$4
    local pid=$KVS_PID port=$KVS_PORT
    if [ "$server" = redis ]; then pid=$REDIS_PID port=$REDIS_PORT; fi
    local n=$N1
    [ "$p" = 16 ] && n=$N16
    local ratio=1:0
    [ "$op" = set ] && ratio=0:1
    [ "$op" = mix ] && ratio=9:1
    local load c0 t0 s0 c1 t1 s1
    load=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(commands "$port")
    t0=$(cpu_ticks "$pid")
    s0=$(date +%s.%N)
    case $client in
    native | kvs-bench-resp)
        local proto=kvs
        [ "$client" = kvs-bench-resp ] && proto=resp
        timeout 300 "$KVS_BENCH" --protocol "$proto" --addr "127.0.0.1:$port" \
            -c "$CONNECTIONS" -P "$p" -n "$n" --ratio "$ratio" --keys "$KEYS" \
            --value-size "$SIZE" >>"$WORK/client.log" 2>&1
        ;;
    redis-benchmark)
        timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -n "$n" \
            -r "$KEYS" -d "$SIZE" -P "$p" -t "$op" -q >>"$WORK/client.log" 2>&1
        ;;
    esac
    s1=$(date +%s.%N)
    t1=$(cpu_ticks "$pid")
    c1=$(commands "$port")
    # The INFO call itself is one command: leave it out.
    echo "$PAIR $server $client $op $p $((c1 - c0 - 1)) $(((t1 - t0) * 1000000 / HZ))" \
        "$(python3 -c "print(f'{$s1 - $s0:.3f}')") $load" >>"$RAW"
}

RAW=$RESULTS/raw.txt
: >"$RAW"
uptime >"$RESULTS/uptime-start.txt"
run=0
for PAIR in $PAIRS; do
    log "pairing $PAIR: fresh servers, preloading $KEYS keys"
    start_servers "$PAIR"
    for port in "$KVS_PORT" "$REDIS_PORT"; do
        proto=kvs
        [ "$port" = "$REDIS_PORT" ] && proto=resp
        "$KVS_BENCH" --protocol "$proto" --addr "127.0.0.1:$port" --preload --keys "$KEYS" \
            --value-size "$SIZE" --ratio 1:0 --requests 1 -c "$CONNECTIONS" >>"$WORK/client.log" 2>&1
    done
    for row in native:get native:set native:mix resp:get resp:set resp:mix; do
        family=${row%%:*}
        op=${row#*:}
        for p in 1 16; do
            log "$PAIR $family $op P$p ($(cut -d' ' -f1-3 /proc/loadavg))"
            for _ in $(seq "$REPEAT"); do
                order="kvs redis"
                [ $((run % 2)) -eq 1 ] && order="redis kvs"
                run=$((run + 1))
                for server in $order; do
                    if [ "$family" = native ]; then
                        client=native
                        [ "$server" = redis ] && client=kvs-bench-resp
                    elif [ "$op" = mix ]; then
                        client=kvs-bench-resp
                    else
                        client=redis-benchmark
                    fi
                    measure "$server" "$client" "$op" "$p"
                done
            done
        done
    done
    stop_servers
done
uptime >"$RESULTS/uptime-end.txt"

# --- report -------------------------------------------------------------------
REPORT=$RESULTS/report.md
python3 - "$RAW" "$REPORT" "$COMMIT" "$(cat "$RESULTS/uptime-start.txt")" \
    "$(cat "$RESULTS/uptime-end.txt")" "$N1" "$N16" "$KEYS" "$REPEAT" \
    "$(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/')" <<'EOF'
import sys
from collections import defaultdict
raw, out, commit, up0, up1, n1, n16, keys, repeat, redis_version = sys.argv[1:]
runs = defaultdict(list)
for line in open(raw):
    pair, server, client, op, p, cmds, cpu_us, wall, load = line.split()
    cmds, cpu_us, wall = int(cmds), int(cpu_us), float(wall)
    runs[(pair, server, client, op, p)].append((cpu_us / max(cmds, 1), cmds / wall, float(load)))

def best(key):
    r = runs.get(key)
    if not r:
        return None
    return min(x[0] for x in r), max(x[1] for x in r), sum(x[2] for x in r) / len(r)

names = {"get": "GET", "set": "SET", "mix": "9:1 GET:SET"}
lines = []
lines.append(f"Measured {__import__('datetime').datetime.utcnow():%Y-%m-%d %H:%M} UTC at commit `{commit}`, "
             f"redis-server {redis_version}; `scripts/cpu_per_request.sh` wrote this section.")
lines.append("")
lines.append(f"50 connections, 100 B values, {int(keys):,} keys preloaded; {int(n1):,} requests per run at "
             f"pipeline 1 and {int(n16):,} at pipeline 16; {repeat} runs per server and row, taking turns, "
             "lowest CPU and highest req/s kept. CPU = the server process's utime+stime "
             "(`/proc/PID/stat`, all threads) over the run, divided by the commands it processed "
             "(`INFO` `total_commands_processed`). Ratio = kvs / redis: for CPU below 1 kvs spends less.")
lines.append("")
lines.append(f"Load average: `{up0.split('load average:')[-1].strip()}` at the start, "
             f"`{up1.split('load average:')[-1].strip()}` at the end (2 cores, shared with other builds).")
goals = []
for pair, title in (("kvs", "kvs engine `--sync every-sec` vs redis AOF everysec"),
                    ("memory", "memory engine vs redis without persistence")):
    if not any(k[0] == pair for k in runs):
        continue
    lines.append("")
    lines.append(f"#### {title}")
    lines.append("")
    lines.append("| protocol (client) | workload | P | kvs CPU µs/req | redis CPU µs/req | CPU ratio | kvs req/s | redis req/s | req/s ratio | load |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for family in ("native", "resp"):
        for op in ("get", "set", "mix"):
            for p in ("1", "16"):
                if family == "native":
                    kk, rk = (pair, "kvs", "native", op, p), (pair, "redis", "kvs-bench-resp", op, p)
                    label = "native (kvs-bench) vs RESP (kvs-bench)"
                else:
                    client = "kvs-bench-resp" if op == "mix" else "redis-benchmark"
                    kk, rk = (pair, "kvs", client, op, p), (pair, "redis", client, op, p)
                    label = f"RESP ({'kvs-bench' if op == 'mix' else 'redis-benchmark'})"
                k, r = best(kk), best(rk)
                if not k or not r:
                    continue
                cpu_ratio, rps_ratio = k[0] / r[0], k[1] / r[1]
                lines.append(f"| {label} | {names[op]} | {p} | {k[0]:.2f} | {r[0]:.2f} | **{cpu_ratio:.2f}x** | "
                             f"{k[1]:,.0f} | {r[1]:,.0f} | **{rps_ratio:.2f}x** | {(k[2] + r[2]) / 2:.1f} |")
                if op != "mix":
                    goals.append((pair, family, op, p, cpu_ratio, rps_ratio))
lines.append("")
lines.append("Goals (issue 11): CPU ratio ≤ 1.0 for GET and SET at P1 and P16 on both protocols; "
             "req/s ratio GET ≥ 1.05 and SET ≥ 1.0 at P1, ≥ 1.0 at P16.")
lines.append("")
lines.append("| pairing | protocol | workload | P | CPU ≤ 1.0 | req/s goal |")
lines.append("|---|---|---|---:|:---:|:---:|")
for pair, family, op, p, c, t in goals:
    want = 1.05 if (op == "get" and p == "1") else 1.0
    lines.append(f"| {pair} | {family} | {names[op]} | {p} | {'met' if c <= 1.0 else 'not met'} ({c:.2f}x) | "
                 f"{'met' if t >= want else 'not met'} ({t:.2f}x ≥ {want}) |")
open(out, "w").write("\n".join(lines) + "\n")
EOF
cat "$REPORT"

if [ "$WRITE" = 1 ]; then
    python3 - "$ROOT/BENCHMARKS.md" "$REPORT" <<'EOF'
import sys
md_path, report = sys.argv[1], open(sys.argv[2]).read()
md = open(md_path).read()
start, end = "<!-- cpu-per-request:start -->", "<!-- cpu-per-request:end -->"
if start not in md or end not in md:
    sys.exit(f"{md_path} has no {start} ... {end} section")
head, rest = md.split(start, 1)
_, tail = rest.split(end, 1)
open(md_path, "w").write(head + start + "\n" + report + end + tail)
EOF
    log "BENCHMARKS.md updated"
fi
log "done: results in $RESULTS"
