#!/usr/bin/env bash
# A local sharded cluster: N cache nodes on loopback ports and a twemproxy
# (`nutcracker`) in front of them, sharding with ketama consistent hashing
# and ejecting dead nodes. For trying kvs behind a proxy and for comparing
# it with the same cluster of redis-server nodes.
#
#   scripts/cluster.sh start N [BASEPORT] [--redis] [--engine kvs|memory] [--sync MODE]
#   scripts/cluster.sh status
#   scripts/cluster.sh stop
#
# Ports: the proxy listens on BASEPORT (default 22121), node i (1..N) on
# BASEPORT+i, nutcracker's stats on BASEPORT+N+1. Clients talk to the proxy:
#   redis-cli -p 22121 set a 1
#
# Nodes: release kvs-server (--engine kvs, the default, persists to a data
# dir per node with --sync every-sec; --engine memory keeps nothing), or
# redis-server with --redis (AOF everysec, or no persistence with
# --engine memory), so the two clusters are set up alike. KVS_SERVER=PATH
# picks a kvs-server binary instead of building the release one.
#
# State (PIDs, nutcracker.yml, data dirs, logs) lives in KVS_CLUSTER_DIR
# (default ${TMPDIR:-/tmp}/kvs-cluster-$USER). `stop` ends exactly the PIDs
# recorded there, after checking each still runs the program it started.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE=${KVS_CLUSTER_DIR:-${TMPDIR:-/tmp}/kvs-cluster-${USER:-$(id -un)}}
PIDS=$STATE/pids # one line per process: PID PROGRAM PORT

# Proxy settings written into nutcracker.yml (see README "More than one
# machine" for what each does). Short values so a dead node is ejected
# and retried within seconds on a laptop.
TIMEOUT_MS=${TIMEOUT_MS:-400}
FAILURE_LIMIT=${FAILURE_LIMIT:-2}
RETRY_MS=${RETRY_MS:-3000}

usage() {
    sed -n '7,9p' "$0" | sed 's/^#   //' >&2
    exit 2
}

log() { printf '[cluster] %s\n' "$*" >&2; }

# up PORT: 0 once something on 127.0.0.1:PORT answers a PING.
up() {
    local port=$1 line=
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf '*1\r\n$4\r\nPING\r\n' >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    [[ $line == +PONG* ]]
}

wait_up() { # wait_up PORT NAME
    for _ in $(seq 100); do
        up "$1" && return 0
        sleep 0.1
    done
    log "$2 did not answer on port $1; its log is in $STATE"
    return 1
}

# alive PID PROGRAM: the PID runs PROGRAM (not a recycled PID).
alive() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"$2"* ]]
}

stop_pid() { # stop_pid PID PROGRAM: SIGTERM, wait (bounded), then SIGKILL
    local pid=$1 prog=$2
    alive "$pid" "$prog" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        alive "$pid" "$prog" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    [ -f "$PIDS" ] || {
        log "nothing recorded in $PIDS"
        return 0
    }
    # The proxy first, so clients see it go rather than half a cluster.
    tac "$PIDS" | while read -r pid prog port; do
        log "stopping $prog (pid $pid, port $port)"
        stop_pid "$pid" "$prog"
    done
    rm -f "$PIDS"
}

cmd_status() {
    [ -f "$PIDS" ] || {
        log "not running (no $PIDS)"
        return 1
    }
    local bad=0
    while read -r pid prog port; do
        if alive "$pid" "$prog" && up "$port"; then
            echo "up   $prog pid $pid port $port"
        else
            echo "DOWN $prog pid $pid port $port"
            bad=1
        fi
    done <"$PIDS"
    return $bad
}

kvs_binary() {
    if [ -n "${KVS_SERVER:-}" ]; then
        echo "$KVS_SERVER"
        return
    fi
    cargo build --release --quiet --bin kvs-server >&2
    local dir
    dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    echo "$dir/release/kvs-server"
}

cmd_start() {
    local n= base=22121 redis=0 engine=kvs sync=every-sec
    while [ $# -gt 0 ]; do
        case $1 in
        --redis) redis=1 ;;
        --engine) engine=${2:?--engine needs kvs or memory}; shift ;;
        --sync) sync=${2:?--sync needs always, every-sec or never}; shift ;;
        [0-9]*) if [ -z "$n" ]; then n=$1; else base=$1; fi ;;
        *) usage ;;
        esac
        shift
    done
    [ -n "$n" ] && [ "$n" -ge 1 ] || usage
    case $engine in kvs | memory) ;; *) usage ;; esac
    command -v nutcracker >/dev/null || {
        log "nutcracker is not installed (Debian: apt-get install nutcracker)"
        exit 1
    }
    if [ -f "$PIDS" ]; then
        log "already started ($PIDS exists); run: scripts/cluster.sh stop"
        exit 1
    fi
    mkdir -p "$STATE"
    : >"$PIDS"
    # Anything that fails from here on leaves nothing running.
    trap 'log "start failed"; cmd_stop' ERR

    local server
    if [ $redis = 1 ]; then
        server=$(command -v redis-server) || {
            log "redis-server is not installed"
            exit 1
        }
    else
        server=$(kvs_binary)
    fi

    local servers= i port dir pid
    for i in $(seq "$n"); do
        port=$((base + i))
        dir=$STATE/node$i
        rm -rf "$dir"
        mkdir -p "$dir"
        if [ $redis = 1 ]; then
            local persist=(--appendonly no)
            [ "$engine" = kvs ] && persist=(--appendonly yes --appendfsync everysec)
            "$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
                --databases 1 "${persist[@]}" >"$dir/log" 2>&1 &
        else
            "$server" --addr "127.0.0.1:$port" --engine "$engine" --dir "$dir" \
                --sync "$sync" >"$dir/log" 2>&1 &
        fi
        pid=$!
        echo "$pid $(basename "$server") $port" >>"$PIDS"
        wait_up "$port" "node$i"
        # The name after the weight is what ketama hashes: keys keep
        # their node when a node moves to another address.
        servers+="    - 127.0.0.1:$port:1 node$i"$'\n'
    done

    cat >"$STATE/nutcracker.yml" <<EOF
kvs:
  listen: 127.0.0.1:$base
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  server_failure_limit: $FAILURE_LIMIT
  server_retry_timeout: $RETRY_MS
  timeout: $TIMEOUT_MS
  preconnect: true
  server_connections: 1
  servers:
$servers
EOF
    nutcracker -t -c "$STATE/nutcracker.yml" >/dev/null 2>&1 || {
        log "nutcracker refused $STATE/nutcracker.yml"
        false
    }
    nutcracker -c "$STATE/nutcracker.yml" -o "$STATE/nutcracker.log" \
        -a 127.0.0.1 -s $((base + n + 1)) -p "$STATE/nutcracker.pid" &
    pid=$!
    echo "$pid nutcracker $base" >>"$PIDS"
    wait_up "$base" nutcracker
    trap - ERR
    local kind=kvs-server
    [ $redis = 1 ] && kind=redis-server
    log "$n $kind nodes ($engine) on ports $((base + 1))-$((base + n)), nutcracker on $base (stats $((base + n + 1)))"
    log "state in $STATE; stop with: scripts/cluster.sh stop"
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) usage ;;
esac
