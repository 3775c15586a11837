#!/usr/bin/env bash
# Builds the kvs image: static release binaries, a tiny build context, then
# `docker build`. Tags IMAGE:latest and IMAGE:<crate version>.
#
#   bash docker/build.sh            # kvs:latest, kvs:0.1.0
#   KVS_IMAGE=name bash docker/build.sh
#
# Environment:
#   KVS_IMAGE          image name (default: kvs)
#   KVS_DOCKER_CONTEXT build context directory (default: target/docker-context);
#                      it is emptied and refilled on every run
#   KVS_SKIP_CARGO=1   reuse the binaries already built
#   CARGO_TARGET_DIR   honoured, as cargo does (default: target)
#
# Prints the version tag it built on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${KVS_IMAGE:-kvs}
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}
bin_dir=$target_dir/$triple/release
context=${KVS_DOCKER_CONTEXT:-$target_dir/docker-context}

# glibc linked statically: no musl target needed, and the binaries run on an
# empty base image. Only for the explicit target, so build scripts and proc
# macros stay dynamic; the output lands in target/$triple/, apart from the
# ordinary target/release/ (under CARGO_TARGET_DIR when it is set).
if [ "${KVS_SKIP_CARGO:-0}" != 1 ]; then
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --target "$triple" --bins >&2
fi

bins=(kvs-server kvs-client)
# kvs-bench joins the image as soon as its source exists.
if [ -f src/bin/kvs-bench.rs ]; then
    bins+=(kvs-bench)
fi

# Static means no program interpreter. ldd words it by glibc version and
# link mode: "not a dynamic executable" (static, or static-pie with older
# glibc) or "statically linked" (static-pie, glibc 2.36 here).
# (Output is captured first: under pipefail, `cmd | grep -q` fails when grep
# exits early and cmd dies of SIGPIPE.)
is_static() {
    local linkage headers
    linkage=$(ldd "$1" 2>&1 || true)
    headers=$(readelf -l "$1")
    [[ "$linkage" =~ not\ a\ dynamic\ executable|statically\ linked ]] &&
        [[ "$headers" != *INTERP* ]]
}

rm -rf "$context"
mkdir -p "$context/bin" "$context/data"
for b in "${bins[@]}"; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "build.sh: $bin_dir/$b is missing" >&2
        exit 1
    fi
    # An empty base has no loader: anything dynamic would fail at exec.
    if ! is_static "$bin_dir/$b"; then
        echo "build.sh: $bin_dir/$b is dynamically linked:" >&2
        ldd "$bin_dir/$b" >&2 || true
        exit 1
    fi
    # The release profile keeps line tables for backtraces on the host; the
    # image gets stripped copies.
    strip --strip-all -o "$context/bin/$b" "$bin_dir/$b"
done

version=$("$bin_dir/kvs-server" --version | awk '{print $2}')
revision=$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

docker build \
    --file docker/Dockerfile \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    --tag "$image:latest" \
    --tag "$image:$version" \
    "$context" >&2

size=$(docker image inspect --format '{{.Size}}' "$image:$version")
echo "build.sh: built $image:latest and $image:$version ($((size / 1024)) KiB; ${bins[*]})" >&2
echo "$version"
