#!/usr/bin/env bash
# `make container-test`: build the Docker image and test it for real with podman, on a machine with
# no Docker engine and no registry (../shared/TOOLS.md). Run as root (it apt-get installs what is
# missing); needs .venv with the test extra (`make test` or `make setup-test` makes it).
#
#   1. installs podman, debootstrap and promtool if missing
#   2. writes the podman settings this machine needs (CONTAINERS_CONF)
#   3. builds the stand-in python:3.11-slim base once (cached as a local image)
#   4. builds the image from the Dockerfile and reports its size
#   5. runs tests/container (the image with a read-only root, then `podman kube play` of the dev
#      overlay's Deployment, both called from this host, both stopped with SIGTERM) and the
#      Prometheus checks of tests/test_deploy_observability.py (promtool check/test rules, check metrics)
#
# Environment: SEQSERVE_CONTAINER_IMAGE (default localhost/seqserve:test), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${SEQSERVE_CONTAINER_IMAGE:-localhost/seqserve:test}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${TMPDIR:-/tmp}/seqserve-container
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
started=$SECONDS
mark=$SECONDS

step() {
    printf '\n== %s (%d s so far)\n' "$*" $((SECONDS - started))
    mark=$SECONDS
}

[[ -x $PYTHON ]] || { echo "container-test: $PYTHON not found; run 'make setup-test' first" >&2; exit 2; }

step "tools"
packages=()
command -v podman >/dev/null || packages+=(podman buildah runc conmon catatonit fuse-overlayfs slirp4netns uidmap
    containernetworking-plugins golang-github-containers-common)
command -v debootstrap >/dev/null || packages+=(debootstrap)
command -v promtool >/dev/null || packages+=(prometheus)
if ((${#packages[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "container-test: missing ${packages[*]}; run as root or install them" >&2
        exit 2
    fi
    echo "installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
podman --version
promtool --version 2>&1 | head -1

# Open-file limits as the host allows them (podman's default asks for more than this machine
# grants), and runc (crun fails on this machine's hybrid cgroups).
mkdir -p "$WORK"
hard_nofile=$(ulimit -Hn)
cat >"$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$hard_nofile:$hard_nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$WORK/containers.conf

step "base image"
deploy/container/standin-base.sh

step "build $IMAGE"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build_args=(build --pull=never --format docker --tag "$IMAGE")
# pip inside RUN trusts the host's CA bundle, as pip on the host does.
[[ -f $CA_BUNDLE ]] && build_args+=(--volume "$CA_BUNDLE:$CA_BUNDLE:ro")
if ! podman "${build_args[@]}" . >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    echo "container-test: image build failed (full log: $WORK/build.log)" >&2
    exit 1
fi
current=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true  # the image this build replaced, if nothing uses it
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built in $((SECONDS - mark)) s: $IMAGE is $((size / 1000000)) MB ($(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12))"
podman history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" \
    | awk -F'\t' '$1 != "0 B" {sub(/^\/bin\/sh -c (#\(nop\) )?/, "", $2); print "  " $1 "\t" substr($2, 1, 100)}'

# pytest prints the last lines (CI reads its summary), so the timing so far is printed here.
step "tests against the running image (image $((size / 1000000)) MB)"
exec env SEQSERVE_CONTAINER_IMAGE="$IMAGE" OMP_NUM_THREADS=1 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/container tests/test_deploy_observability.py
