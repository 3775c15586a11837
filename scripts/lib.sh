# Shared by the measurement scripts (source it; it defines functions only).
# Every process these functions signal is one the calling script started
# and passes by PID.

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL; reaps the child.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# free_port: a loopback port free at the time of the call.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until a TCP connection to 127.0.0.1:PORT succeeds
# (10 s at most); exits the script if PID dies first or nothing answers.
wait_port() {
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || { echo "server $2 exited at start" >&2; exit 1; }
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    exit 1
}

# cpu_ticks PID...: user + system CPU time of every thread of the PIDs,
# summed, in clock ticks (getconf CLK_TCK per second).
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        # Fields after the ")" that ends comm: utime and stime are the 12th and 13th.
        total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# release_dir NAME...: builds the release binaries and prints the target
# directory's release folder.
release_dir() {
    cargo build --release --quiet "${@/#/--bin=}"
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"] + "/release")'
}
