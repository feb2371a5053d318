#!/usr/bin/env bash
# Builds the service's Docker images and runs them for real, then removes what it started.
#
#   docker/verify.sh                      # as root when it has to install or start an engine
#
# Opt-in, never part of `make test`: it takes minutes and about 8 GB of disk (overlay2; about
# 25 GB on vfs, which copies every layer whole). What it does, failing at the first surprise:
#   1. a Docker engine: the one that answers, else dockerd started here (Debian's docker.io
#      installed when absent), overlay2 where the kernel allows it, else vfs;
#   2. a base image: SONA_VERIFY_BASE when given, else a Debian bookworm (Python 3.11) made
#      with debootstrap and imported once, then kept as a cache for the next run;
#   3. the CPU image (docker/Dockerfile.cpu) built, then built again after a one-line code
#      change: how long each took and how large the image is;
#   4. `docker run` with a random checkpoint mounted read-only and a named volume: waits for the
#      image's own HEALTHCHECK, ingests and searches through the published port, restarts the
#      container and finds the same gallery, checks that every process runs as the non-root
#      user and that the volume is all it can write, and that a checkpoint the user may not
#      read stops it with one line;
#   5. the same through docker compose's `cpu` profile (`docker compose`, else Debian's
#      docker-compose 1.29), then `down` and `up` again: a new container, the same gallery;
#   6. with SONA_VERIFY_CUDA=1, the CUDA image (docker/Dockerfile) built and run as in 4, on the
#      CPU where no GPU is present (its GPU path is not exercised then).
# It prints a summary of the figures at the end. The images it builds carry the names compose
# gives them (sona-reid:cpu, sona-reid:cuda) and are removed at the end like its containers,
# volumes and networks; the base stays, as a cache.
#
# Environment (defaults in brackets):
#   SONA_VERIFY_BASE          base image to build on [a local debootstrap of Debian bookworm]
#   SONA_VERIFY_TORCH_INDEX   where torch comes from [pip's default index: its CUDA build also
#                             runs on a CPU]
#   SONA_VERIFY_CA_BUNDLE     CA bundle put into the local base, for a TLS-intercepting proxy
#                             [/etc/ssl/certs/ca-certificates.crt when present]
#   SONA_VERIFY_DEBIAN_MIRROR Debian mirror for the local base [debootstrap's default]
#   SONA_VERIFY_PRESET        checkpoint size: tiny or paper (ResNet-50, 384 x 128) [tiny]
#   SONA_VERIFY_STORAGE       storage drivers to try when starting dockerd [overlay2 vfs]
#   SONA_VERIFY_KEEP_IMAGES   1 keeps the built images (a rerun then builds from cache) [0]
#   SONA_VERIFY_CUDA          1 also builds and runs the CUDA image [0]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

LOCAL_BASE=sona-local/python:3.11-bookworm
BASE=${SONA_VERIFY_BASE:-$LOCAL_BASE}
TORCH_INDEX=${SONA_VERIFY_TORCH_INDEX:-}
CA_BUNDLE=${SONA_VERIFY_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${SONA_VERIFY_DEBIAN_MIRROR:-}
PRESET=${SONA_VERIFY_PRESET:-tiny}
STORAGE=${SONA_VERIFY_STORAGE:-overlay2 vfs}
CPU_IMAGE=sona-reid:cpu   # the name docker-compose.yml gives it
CUDA_IMAGE=sona-reid:cuda
SERVICE_UID=10001         # the image's user `sona`

RUN_ID=sona-verify-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sona-verify.XXXXXX")
DOCKERD_PID=""
COMPOSE=()
CONTAINERS=()
VOLUMES=()
NETWORKS=()
IMAGES=()
SUMMARY=()
PASSED=0

say() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'verify.sh: FAILED: %s\n' "$*" >&2
    exit 1
}
note() { SUMMARY+=("$*"); }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local status=$?
    set +e
    say "cleaning up"
    if [ ${#COMPOSE[@]} -gt 0 ]; then
        compose down --volumes --remove-orphans >/dev/null 2>&1
    fi
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
    for v in "${VOLUMES[@]}"; do docker volume rm "$v" >/dev/null 2>&1; done
    for n in "${NETWORKS[@]}"; do docker network rm "$n" >/dev/null 2>&1; done
    if [ "${SONA_VERIFY_KEEP_IMAGES:-0}" != 1 ]; then
        for i in "${IMAGES[@]}"; do docker rmi "$i" >/dev/null 2>&1; done
    fi
    rm -rf "$WORK"
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [ "$status" -eq 0 ] && [ "$PASSED" = 1 ]; then
        say "summary"
        printf '%s\n' "${SUMMARY[@]}"
        echo "verify.sh: PASSED"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_root() {
    [ "$(id -u)" = 0 ] || fail "$1 needs root; run as root or start it yourself first"
}

apt_install() {
    need_root "installing $*"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- 1. the engine ------------------------------------------------------------------------
engine() {
    if docker info >/dev/null 2>&1; then
        say "using the running Docker engine ($(docker info -f '{{.Driver}}'))"
        return
    fi
    command -v dockerd >/dev/null || apt_install docker.io
    need_root "starting dockerd"
    local driver
    for driver in $STORAGE; do
        say "starting dockerd (storage driver $driver)"
        dockerd --storage-driver="$driver" --iptables=false --ip-forward=false --bridge=none \
            >"$WORK/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 60); do
            docker info >/dev/null 2>&1 && return
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null || true
        DOCKERD_PID=""
        tail -3 "$WORK/dockerd.log" >&2
    done
    fail "no Docker engine would start (tried: $STORAGE)"
}

free_gb() {
    df -P --block-size=1G "$(docker info -f '{{.DockerRootDir}}')" | awk 'NR == 2 { print $4 }'
}

# --- 2. the base image --------------------------------------------------------------------
base_image() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        say "base image $BASE is there"
        return
    fi
    [ "$BASE" = "$LOCAL_BASE" ] || docker pull "$BASE" || fail "base image $BASE: cannot pull"
    [ "$BASE" = "$LOCAL_BASE" ] || return 0
    say "making the base image $BASE (debootstrap of Debian bookworm, once)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    need_root "debootstrap"
    local rootfs=$WORK/rootfs started
    started=$(now)
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" ${MIRROR:+"$MIRROR"} >"$WORK/debootstrap.log" 2>&1 ||
        { tail -5 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    # the image's own Python: pip installs into /usr/local as in python:3.11-slim
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    local change=()
    if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then
        cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
        change=(--change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
    fi
    tar --numeric-owner -C "$rootfs" -c . |
        docker import "${change[@]}" --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    note "base image $BASE made in $(since "$started") s: $(image_size "$BASE")"
}

image_size() {
    docker image inspect -f '{{.Size}}' "$1" |
        python3 -c 'import sys; print(f"{int(sys.stdin.read()) / 1e9:.2f} GB")'
}

# --- 3. the build -------------------------------------------------------------------------
build() { # IMAGE DOCKERFILE CONTEXT
    local previous
    previous=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
    docker build --network host --force-rm -f "$2" -t "$1" \
        --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX" "$3" \
        >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; fail "docker build $1"; }
    IMAGES+=("$1")
    # an image of an earlier run that lost its name to this one: gone, unless still in use
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$1")" ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
    CACHED="$(grep -c 'Using cache' "$WORK/build.log" || true) of $(grep -c '^Step ' "$WORK/build.log")"
}

build_twice() { # IMAGE DOCKERFILE
    local image=$1 dockerfile=$2 started context=$WORK/context
    say "building $image from $dockerfile on $BASE, torch from ${TORCH_INDEX:-pip's default index}"
    started=$(now)
    build "$image" "$dockerfile" .
    note "$image: build $(since "$started") s ($CACHED steps from cache), $(image_size "$image")"
    note "$(docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image" |
        awk -F '\t' '$1 != "0B" { print "  " $0 }' | cut -c1-100)"

    say "building it again after a one-line code change"
    mkdir -p "$context/docker"
    # what .dockerignore admits, and the Dockerfile
    sed -n 's/^!//p' .dockerignore | xargs -I{} cp -a {} "$context/"
    cp .dockerignore "$context/"
    cp "$dockerfile" "$context/docker/"
    echo "# changed by docker/verify.sh" >>"$context/service/__init__.py"
    started=$(now)
    build "$image-rebuilt" "$context/$dockerfile" "$context"
    note "$image: rebuild after a code change $(since "$started") s ($CACHED steps from cache)"
    docker rmi "$image-rebuilt" >/dev/null
    rm -rf "$context"
}

# --- a checkpoint and crops, made by the image itself -------------------------------------
fixtures() {
    say "a random $PRESET checkpoint and synthetic crops"
    mkdir -p "$WORK/models" "$WORK/crops"
    docker run --rm --network none --user 0 -v "$WORK/models:/models" -v "$WORK/crops:/crops" \
        "$CPU_IMAGE" python -c '
import dataclasses, sys
from model import PRESETS, SONANet, save_checkpoint
from training.synthetic import make_dataset
config = dataclasses.replace(PRESETS[sys.argv[1]], num_classes=0)
save_checkpoint("/models/sona.pt", SONANet(config))
make_dataset("/crops/synth", identities=4, cameras=3, seed=0)
' "$PRESET" >"$WORK/fixtures.log" 2>&1 || { cat "$WORK/fixtures.log" >&2; fail "fixtures"; }
    mapfile -t CROPS < <(find "$WORK/crops/synth/bounding_box_test" -name '*.jpg' | sort | head -7)
    [ ${#CROPS[@]} -eq 7 ] || fail "the synthetic set has fewer than 7 crops"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- 4. run it ----------------------------------------------------------------------------
wait_healthy() { # CONTAINER LABEL STARTED URL
    local c=$1 state ready=""
    for _ in $(seq 400); do
        if [ -z "$ready" ] && curl -sf -o /dev/null -m 2 "$4/readyz"; then
            ready=$(since "$3")
        fi
        state=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$c")
        case $state in
            "running healthy")
                note "$2: /readyz answered ${ready:-?} s, healthy $(since "$3") s after start"
                return
                ;;
            *unhealthy | exited* | dead*)
                docker logs --tail 30 "$c" >&2
                fail "$2: $state"
                ;;
        esac
        sleep 0.5
    done
    docker logs --tail 30 "$c" >&2
    fail "$2: not healthy after 200 s ($state)"
}

ingest() { # URL: indexes six crops, writes their ids
    local args=() f
    for f in "${CROPS[@]:0:6}"; do args+=(-F "images=@$f;type=image/jpeg"); done
    curl -sS --fail-with-body "${args[@]}" -F camera_id=cam-a -F timestamp=2024-05-01T12:00:00Z \
        "$1/gallery?gallery=verify" >"$WORK/ingest.json" || fail "ingest: $(cat "$WORK/ingest.json")"
    python3 -c '
import json, sys
items = json.load(open(sys.argv[1]))["items"]
assert len(items) == 6, items
print("\n".join(sorted(i["item_id"] for i in items)))' "$WORK/ingest.json" >"$WORK/ids"
}

search() { # URL OUT: the seventh crop against the gallery, every item ranked
    curl -sS --fail-with-body -F "image=@${CROPS[6]};type=image/jpeg" \
        "$1/search?gallery=verify&k=50" >"$2" || fail "search: $(cat "$2")"
}

same_gallery() { # URL BEFORE: the gallery and a search answer as they did before
    local total
    total=$(curl -sS --fail-with-body "$1/gallery" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')
    [ "$total" = 6 ] || fail "the gallery holds $total items after the restart, not 6"
    search "$1" "$WORK/after.json"
    python3 -c '
import json, sys
ids = open(sys.argv[1]).read().split()
before, after = (
    {r["item_id"]: r["score"] for r in json.load(open(p))["results"]} for p in sys.argv[2:]
)
assert sorted(before) == ids, (sorted(before), ids)
assert sorted(after) == ids, (sorted(after), ids)
assert all(abs(before[i] - after[i]) < 1e-4 for i in ids), (before, after)' \
        "$WORK/ids" "$2" "$WORK/after.json" || fail "search after the restart differs"
    curl -sS --fail -o "$WORK/crop.jpg" "$1/gallery/$(head -1 "$WORK/ids")/image" ||
        fail "the crop of an item is gone after the restart"
    [ "$(head -c 2 "$WORK/crop.jpg" | od -An -tx1 | tr -d ' ')" = ffd8 ] ||
        fail "the crop of an item is not a JPEG after the restart"
}

confined() { # CONTAINER: runs as the image's user and can write the volume (and /tmp) only
    local c=$1 uids writable name
    name=$(docker inspect -f '{{.Name}}' "$c")
    uids=$(docker top "$c" -o pid,uid | awk 'NR > 1 { print $2 }' | sort -u | tr '\n' ' ')
    [ "$uids" = "$SERVICE_UID " ] || fail "$c: processes run as uids $uids, not $SERVICE_UID only"
    writable=$(docker exec "$c" sh -c \
        'find / \( -path /proc -o -path /sys -o -path /dev -o -path /tmp \) -prune \
         -o -writable -print 2>/dev/null' | grep -v -e '^/data$' -e '^/data/' || true)
    [ -z "$writable" ] || fail "$c can write outside its volume: $(echo "$writable" | head -5)"
    docker exec "$c" sh -c 'grep -q "^tmpfs /tmp " /proc/mounts' || fail "$c: /tmp is not tmpfs"
    docker exec "$c" sh -c 'touch /data/.verify && rm /data/.verify' || fail "$c: /data"
    docker exec "$c" sh -c 'touch /models/x' 2>/dev/null && fail "$c: /models is writable"
    note "${name#/}: every process runs as uid $SERVICE_UID; it writes /data and a tmpfs /tmp only"
}

unreadable_checkpoint() { # IMAGE: a checkpoint its user may not read stops it, one line
    local name=$RUN_ID-unreadable dir=$WORK/private status out
    mkdir -p "$dir"
    cp "$WORK/models/sona.pt" "$dir/sona.pt"
    chmod 600 "$dir/sona.pt"
    CONTAINERS+=("$name")
    docker run -d --name "$name" --network none --read-only --tmpfs /tmp \
        -v "$dir:/models:ro" "$1" >/dev/null
    status=$(timeout 120 docker wait "$name") || fail "$1 starts on a checkpoint it cannot read"
    out=$(docker logs "$name" 2>&1)
    docker rm "$name" >/dev/null
    rm -rf "$dir"
    if [ "$status" != 2 ] || [ "$(grep -c . <<<"$out")" != 1 ] ||
        ! grep -q "cannot read the checkpoint" <<<"$out"; then
        fail "$1 on an unreadable checkpoint: exit $status, $out"
    fi
    note "$1 on a checkpoint of mode 0600: exit 2 and one line: $out"
}

exercise_run() { # IMAGE LABEL [docker run options]
    local image=$1 label=$2 name=$RUN_ID-$2 port started
    shift 2
    port=$(free_port)
    docker network create "$name" >/dev/null && NETWORKS+=("$name")
    docker volume create "$name" >/dev/null && VOLUMES+=("$name")
    say "docker run $image (port $port)"
    started=$(now)
    CONTAINERS+=("$name")
    docker run -d --name "$name" --init --read-only --tmpfs /tmp --network "$name" \
        -p "127.0.0.1:$port:8000" -v "$name:/data" -v "$WORK/models:/models:ro" \
        "$@" "$image" >/dev/null 2>"$WORK/run.err" || { cat "$WORK/run.err" >&2; fail "docker run"; }
    local url=http://127.0.0.1:$port
    wait_healthy "$name" "$label (docker run)" "$started" "$url"
    ingest "$url"
    search "$url" "$WORK/before.json"
    confined "$name"
    say "docker restart"
    started=$(now)
    docker restart "$name" >/dev/null
    wait_healthy "$name" "$label (docker restart)" "$started" "$url"
    same_gallery "$url" "$WORK/before.json"
    docker rm -f "$name" >/dev/null
    docker volume rm "$name" >/dev/null
    docker network rm "$name" >/dev/null
    unreadable_checkpoint "$image"
}

# --- 5. compose ---------------------------------------------------------------------------
compose() {
    SONA_MODELS_DIR="$WORK/models" SONA_CPU_PORT="$COMPOSE_PORT" \
        "${COMPOSE[@]}" -p "$RUN_ID" --profile cpu "$@"
}

exercise_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        command -v docker-compose >/dev/null || apt_install docker-compose
        COMPOSE=(docker-compose)
    fi
    COMPOSE_PORT=$(free_port)
    say "${COMPOSE[*]} --profile cpu up (port $COMPOSE_PORT; $("${COMPOSE[@]}" version | head -1))"
    local started container url=http://127.0.0.1:$COMPOSE_PORT
    started=$(now)
    compose up -d --no-build sona-cpu >"$WORK/compose.log" 2>&1 ||
        { cat "$WORK/compose.log" >&2; fail "compose up"; }
    container=$(compose ps -q sona-cpu)
    wait_healthy "$container" "compose sona-cpu" "$started" "$url"
    ingest "$url"
    search "$url" "$WORK/before.json"
    confined "$container"
    say "compose down, up: a new container on the same volume"
    compose down >/dev/null 2>&1
    started=$(now)
    compose up -d --no-build sona-cpu >"$WORK/compose.log" 2>&1 ||
        { cat "$WORK/compose.log" >&2; fail "compose up again"; }
    local again
    again=$(compose ps -q sona-cpu)
    [ "$again" != "$container" ] || fail "compose kept the old container"
    wait_healthy "$again" "compose sona-cpu (down, up)" "$started" "$url"
    same_gallery "$url" "$WORK/before.json"
    compose down --volumes >/dev/null 2>&1
    COMPOSE=()
}

main() {
    command -v python3 >/dev/null || fail "python3 is needed (JSON and timing)"
    command -v curl >/dev/null || fail "curl is needed"
    engine
    local need=10 driver
    driver=$(docker info -f '{{.Driver}}')
    [ "$driver" = vfs ] && need=30
    [ "$(free_gb)" -ge "$need" ] ||
        fail "$need GB free needed beside Docker's data ($driver), $(free_gb) GB there"
    note "engine: Docker $(docker version -f '{{.Server.Version}}'), storage driver $driver"
    base_image
    build_twice "$CPU_IMAGE" docker/Dockerfile.cpu
    fixtures
    exercise_run "$CPU_IMAGE" cpu
    exercise_compose
    if [ "${SONA_VERIFY_CUDA:-0}" = 1 ]; then
        build_twice "$CUDA_IMAGE" docker/Dockerfile
        exercise_run "$CUDA_IMAGE" cuda
    fi
    PASSED=1
}

main "$@"; exit  # on one line: bash reads no further, even if this file changes meanwhile
