#!/usr/bin/env bash
# Builds a local stand-in for docker.io/library/python:3.11-slim, for machines that can reach Debian's
# package mirror but no container registry (see ../shared/TOOLS.md). Debian 12 ships Python 3.11, so a
# minimal bookworm root filesystem with python3, venv and pip is close enough to the real image for the
# Dockerfile to build and run unchanged: both have `python`, `python -m venv`, useradd and coreutils.
#
# Usage: deploy/container/standin-base.sh   (as root; ~2 minutes; a no-op when the image exists)
set -euo pipefail

IMAGE=docker.io/library/python:3.11-slim

if podman image exists "$IMAGE"; then
    echo "stand-in base: $IMAGE already present"
    exit 0
fi

# The machine's own Debian mirror, as apt uses it (deb822 sources first, then the one-line format).
mirror=""
for sources in /etc/apt/sources.list.d/*.sources; do
    [[ -f $sources ]] || continue
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")
    [[ -n $mirror ]] && break
done
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
        /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /var/tmp/seqserve-standin.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "stand-in base: debootstrap bookworm from $mirror (about 2 minutes)"
start=$SECONDS
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -40 "$rootfs.log"; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# Like the official image: pip may install into the system Python, and no apt caches are kept.
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
rm -rf "$rootfs"
echo "stand-in base: $IMAGE built in $((SECONDS - start)) s"
