#!/usr/bin/env bash
# End-to-end test of the kvs image against the local Docker engine: build,
# client traffic through a published loopback port, graceful `docker stop`,
# persistence across containers, health check, the compose load test, and
# the image's size and user. Run by .ci/run; prints SKIPPED and succeeds
# when no engine answers.
#
# Everything it creates carries a unique name (kvs-test-<pid>-<random>) and
# is removed on exit, pass or fail; the image is built under that name too,
# so a kvs:latest of the user's is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: no docker engine"
    exit 0
fi

id="kvs-test-$$-$RANDOM"
image="$id"
target_dir=${CARGO_TARGET_DIR:-target}
context="$target_dir/docker-context-$id"
volume="$id-data"
containers=()
projects=()
max_image_bytes=$((20 * 1000 * 1000))
client=$target_dir/x86_64-unknown-linux-gnu/release/kvs-client

# Compose front ends present here: docker-compose (v1 or v2) and the
# `docker compose` plugin; each one found runs the compose part.
composes=()
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 &&
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Like .ci/run's packages: a fresh machine has the engine but may lack
    # the compose tool; Debian packages it (1.29, Compose Specification).
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose
fi
if command -v docker-compose >/dev/null 2>&1; then
    composes+=("docker-compose")
fi
if docker compose version >/dev/null 2>&1; then
    composes+=("docker compose")
fi

log() { echo "docker/test.sh: $*"; }
fail() {
    echo "docker/test.sh: FAIL: $*" >&2
    exit 1
}

compose() { # compose FRONT_END PROJECT ARGS...
    local front=$1 project=$2
    shift 2
    # shellcheck disable=SC2086 # "docker compose" is two words
    $front -f docker/compose.yml -p "$project" "$@"
}

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ]; then
        for c in "${containers[@]}"; do
            echo "----- docker logs $c" >&2
            docker logs "$c" 2>&1 | tail -n 40 >&2
        done
    fi
    for c in "${containers[@]}"; do
        docker rm -f "$c" >/dev/null 2>&1
    done
    for p in "${projects[@]}"; do
        local front=${p%%|*} project=${p#*|}
        if [ "$rc" != 0 ]; then
            compose "$front" "$project" --profile bench logs --no-color 2>&1 | tail -n 60 >&2
        fi
        KVS_IMAGE=$image compose "$front" "$project" --profile bench \
            down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
    done
    docker volume rm -f "$volume" >/dev/null 2>&1
    for tag in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$image" 2>/dev/null); do
        docker image rm -f "$tag" >/dev/null 2>&1
    done
    rm -rf "$context"
    if [ "$rc" = 0 ]; then
        log "PASS"
    else
        echo "docker/test.sh: FAILED (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "no $what after ${seconds}s"
        fi
        sleep 0.2
    done
}

health_is() { # health_is CONTAINER STATUS
    [ "$(docker inspect --format '{{.State.Health.Status}}' "$1")" = "$2" ]
}

# loopback_port CONTAINER: the 127.0.0.1:PORT its port 4000 is published on.
loopback_port() {
    local line
    while read -r line; do
        if [[ "$line" == 127.0.0.1:* ]]; then
            echo "$line"
            return 0
        fi
    done <<<"$(docker port "$1" 4000/tcp)"
    fail "no loopback port published for $1"
}

# logs_have CONTAINER TEXT. Not `docker logs | grep -q`: under pipefail that
# fails when grep exits at the first match and docker logs gets SIGPIPE.
logs_have() {
    local logs
    logs=$(docker logs "$1" 2>&1)
    [[ "$logs" == *"$2"* ]]
}

expect_eq() { # expect_eq WHAT ACTUAL EXPECTED
    if [ "$2" != "$3" ]; then
        fail "$1: got '$2', expected '$3'"
    fi
}

# stop_gracefully CONTAINER: docker stop must end it by itself (exit 0, no
# SIGKILL) well inside the default 10 s grace period.
stop_gracefully() {
    local c=$1 start elapsed_ms code
    # Without `docker stop --time`, the engine waits 10 s before SIGKILL.
    start=$(date +%s%N)
    docker stop "$c" >/dev/null
    elapsed_ms=$((($(date +%s%N) - start) / 1000000))
    code=$(docker inspect --format '{{.State.ExitCode}}' "$c")
    log "docker stop $c: ${elapsed_ms} ms, exit code $code"
    expect_eq "exit code of $c after docker stop" "$code" 0
    [ "$elapsed_ms" -lt 10000 ] || fail "docker stop took ${elapsed_ms} ms"
}

# ---------------------------------------------------------------- the image
log "building the image as $image (static release build; takes minutes when cold)"
version=$(KVS_IMAGE=$image KVS_DOCKER_CONTEXT=$context bash docker/build.sh | tail -n 1)
tag="$image:$version"
docker image inspect "$image:latest" >/dev/null || fail "$image:latest was not tagged"

for b in "$context"/bin/*; do
    linkage=$(ldd "$b" 2>&1 || true)
    log "ldd $(basename "$b"):$linkage"
    [[ "$linkage" == *"not a dynamic executable"* || "$linkage" == *"statically linked"* ]] ||
        fail "$b is not static"
    [[ "$(readelf -l "$b")" != *INTERP* ]] || fail "$b has a program interpreter"
done

size=$(docker image inspect --format '{{.Size}}' "$tag")
log "image size: $size bytes ($((size / 1024)) KiB)"
[ "$size" -lt "$max_image_bytes" ] || fail "image is $size bytes, limit $max_image_bytes"

user=$(docker image inspect --format '{{.Config.User}}' "$tag")
[[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] || fail "image user '$user' is not numeric"
[ "${user%%:*}" != 0 ] || fail "image runs as root"
expect_eq "entrypoint" "$(docker image inspect --format '{{json .Config.Entrypoint}}' "$tag")" '["/kvs-server"]'
env_json=$(docker image inspect --format '{{json .Config.Env}}' "$tag")
for want in KVS_ADDR=0.0.0.0:4000 KVS_DIR=/data; do
    [[ "$env_json" == *"\"$want\""* ]] || fail "image env lacks $want: $env_json"
done
expect_eq "volumes" "$(docker image inspect --format '{{json .Config.Volumes}}' "$tag")" '{"/data":{}}'
expect_eq "exposed ports" "$(docker image inspect --format '{{json .Config.ExposedPorts}}' "$tag")" '{"4000/tcp":{}}'
[[ "$(docker image inspect --format '{{json .Config.Healthcheck.Test}}' "$tag")" == *kvs-client* ]] ||
    fail "no kvs-client health check"
expect_eq "version label" \
    "$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$tag")" "$version"
has_bench=0
if [ -f "$context/bin/kvs-bench" ]; then
    has_bench=1
fi
log "image checks passed: user $user, version $version"

# ------------------------------------------------- a container on a volume
docker volume create "$volume" >/dev/null
c1="$id-1"
containers+=("$c1")
# Docker picks a free loopback port; only 127.0.0.1 is published.
docker run -d --name "$c1" -v "$volume:/data" -p 127.0.0.1::4000 \
    --health-interval 1s --health-start-period 30s "$tag" >/dev/null
addr=$(loopback_port "$c1")
log "$c1 published on $addr"

wait_for 20 "answer from $c1 on $addr" "$client" --addr "$addr" --timeout 2 ping
"$client" --addr "$addr" set greeting hello
"$client" --addr "$addr" set doomed soon
"$client" --addr "$addr" set "spaced key" "a value with spaces"
expect_eq "get greeting" "$("$client" --addr "$addr" get greeting)" hello
"$client" --addr "$addr" rm doomed
expect_eq "get doomed after rm" "$("$client" --addr "$addr" get doomed)" "Key not found"
if "$client" --addr "$addr" rm doomed 2>/dev/null; then
    fail "rm of a missing key succeeded"
fi
expect_eq "ping inside the container" "$(docker exec "$c1" /kvs-client ping)" PONG
# Names resolve in the static image without NSS: localhost, and the
# container's own host name, which only Docker's /etc/hosts knows.
expect_eq "ping localhost:4000 inside the container" \
    "$(docker exec "$c1" /kvs-client --addr localhost:4000 ping)" PONG
c1_host=$(docker inspect --format '{{.Config.Hostname}}' "$c1")
expect_eq "ping $c1_host:4000 (from /etc/hosts) inside the container" \
    "$(docker exec "$c1" /kvs-client --addr "$c1_host:4000" ping)" PONG
wait_for 30 "healthy status of $c1" health_is "$c1" healthy
log "$c1 is healthy"
logs_have "$c1" "kvs-server listening on 0.0.0.0:4000" ||
    fail "no start line in docker logs $c1"

# The last acknowledged writes come right before the stop: the graceful
# shutdown must put them on disk.
for i in $(seq 1 50); do
    "$client" --addr "$addr" set "k$i" "v$i"
done
stop_gracefully "$c1"
for line in "SIGTERM received" "shutdown complete"; do
    logs_have "$c1" "$line" || fail "no '$line' in docker logs $c1"
done

# ------------------------------------- a new container on the same volume
# Hardened this time: read-only root, no capabilities; only /data is
# written. KVS_LOG_LEVEL=warn must silence the info lines.
c2="$id-2"
containers+=("$c2")
docker run -d --name "$c2" -v "$volume:/data" -p 127.0.0.1::4000 \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -e KVS_LOG_LEVEL=warn "$tag" >/dev/null
addr=$(loopback_port "$c2")
wait_for 20 "answer from $c2 on $addr" "$client" --addr "$addr" --timeout 2 ping
expect_eq "get greeting after restart" "$("$client" --addr "$addr" get greeting)" hello
expect_eq "get spaced key after restart" "$("$client" --addr "$addr" get "spaced key")" "a value with spaces"
expect_eq "get doomed after restart" "$("$client" --addr "$addr" get doomed)" "Key not found"
expect_eq "get k50 after restart" "$("$client" --addr "$addr" get k50)" v50
if logs_have "$c2" " INFO "; then
    fail "KVS_LOG_LEVEL=warn still logs info lines"
fi
stop_gracefully "$c2"
log "data survived a new container on $volume"

# --------------------------------------------------------------- compose
if [ "${#composes[@]}" = 0 ]; then
    fail "neither docker-compose nor the docker compose plugin is installed"
fi
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
n=0
for front in "${composes[@]}"; do
    n=$((n + 1))
    project="$id-c$n"
    projects+=("$front|$project")
    port=$(free_port) || fail "no free loopback port"
    export KVS_IMAGE=$image KVS_TAG=$version KVS_PORT=$port KVS_HEALTH_INTERVAL=1s
    log "$front $($front version --short 2>/dev/null || true): project $project, port $port"

    # The server alone, on the project's volume: healthy and reachable on
    # the published loopback port.
    compose "$front" "$project" up -d --no-color kvs >/dev/null 2>&1
    kvs=$(compose "$front" "$project" ps -q kvs)
    [ -n "$kvs" ] || fail "compose started no kvs container"
    wait_for 30 "healthy compose kvs" health_is "$kvs" healthy
    expect_eq "compose ping on 127.0.0.1:$port" "$("$client" --addr "127.0.0.1:$port" ping)" PONG

    if [ "$has_bench" = 1 ]; then
        # What a user runs next to that server: the bench reaches it as
        # kvs:4000 (compose DNS, resolved without NSS), its exit code (non-zero
        # on any error) is ours, and the server keeps running afterwards.
        out="$context/compose-$n.log"
        set +e
        # shellcheck disable=SC2086 # "docker compose" is two words
        timeout 300 $front -f docker/compose.yml -p "$project" --profile bench \
            run --rm -T bench >"$out" 2>&1
        rc=$?
        set -e
        sed 's/^/    bench: /' "$out" | grep -E 'requests in|error|WARN' || true
        if [ "$rc" != 0 ]; then
            sed 's/^/    /' "$out" | tail -n 60 >&2
            fail "compose bench exited with $rc"
        fi
        # kvs-bench exits non-zero on any failed request; also make sure it
        # ran at all and reported its total.
        grep -Eq '[0-9]+ requests in .* 0 errors' "$out" ||
            fail "no error-free total line from kvs-bench"
        expect_eq "compose kvs still running after the bench" \
            "$(docker inspect --format '{{.State.Running}}' "$kvs")" true
        expect_eq "compose kvs container after the bench" "$(compose "$front" "$project" ps -q kvs)" "$kvs"
        log "compose bench profile: load test by service name passed; the server kept running"
    else
        log "NOTE: no kvs-bench in the image yet; compose bench profile not run"
    fi

    bindings=$(docker inspect --format '{{json .HostConfig.PortBindings}}' "$kvs")
    [[ "$bindings" == *'"HostIp":"127.0.0.1"'* ]] || fail "compose publishes beyond loopback: $bindings"
    compose "$front" "$project" stop kvs >/dev/null 2>&1
    expect_eq "compose kvs exit code" "$(docker inspect --format '{{.State.ExitCode}}' "$kvs")" 0
    compose "$front" "$project" --profile bench down --volumes --remove-orphans >/dev/null 2>&1
    log "$front: kvs service healthy, reachable, stopped with exit code 0"
done
