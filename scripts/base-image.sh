#!/usr/bin/env bash
# Prints the base image for Dockerfile.runpod's BASE_IMAGE: the real python:3.11-slim-bookworm when it is here or
# can be pulled, else a stand-in made with debootstrap (Debian bookworm, Debian's Python 3.11 and pip at the
# paths the slim image has them: /usr/local/bin/python3.11, python3, python, pip), built once and then reused.
#   scripts/base-image.sh               # `make base-image`; progress on stderr, the image's name on stdout
# STAND_IN_BASE names the stand-in (default localhost/f5tts-stand-in-base:3.11-bookworm); DEBIAN_MIRROR picks
# debootstrap's mirror. The stand-in is larger than the slim base (0.20 GB against ~0.13 GB: Debian's Python
# ships its whole standard library and pip's dependencies), so an image built on it is measured a little large.
set -euo pipefail
REAL_BASE="${REAL_BASE:-docker.io/library/python:3.11-slim-bookworm}"
STAND_IN="${STAND_IN_BASE:-localhost/f5tts-stand-in-base:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
builder="$(bash "$(dirname "$0")/container-builder.sh")"

exists() { "$builder" image inspect "$1" >/dev/null 2>&1; }
if [ "$builder" = buildah ]; then exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }; fi

for image in "$REAL_BASE" "$STAND_IN"; do
  if exists "$image"; then echo "$image"; exit 0; fi
done
if timeout 120 "$builder" pull -q "$REAL_BASE" >/dev/null 2>&1; then echo "$REAL_BASE"; exit 0; fi
echo "base-image: $REAL_BASE cannot be pulled; making the stand-in $STAND_IN with debootstrap" >&2

command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
work="$(mktemp -d /var/tmp/f5tts-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
debootstrap --variant=minbase --include=python3.11,python3-pip,ca-certificates bookworm "$rootfs" "$MIRROR" >&2
# What python:3.11-slim-bookworm has and debootstrap does not: Python under /usr/local/bin, pip allowed to install
# into the system Python (no PEP 668 marker), the updates and security suites, no package lists or caches.
for name in python3.11 python3 python; do ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/$name"; done
ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -cf "$work/rootfs.tar" .

env_path="PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
case "$builder" in
  docker | podman)
    "$builder" import --change "ENV $env_path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
      "$work/rootfs.tar" "$STAND_IN" >&2 ;;
  buildah)
    container="$(buildah from scratch)"
    buildah add "$container" "$work/rootfs.tar" / >&2
    buildah config --env "$env_path" --env LANG=C.UTF-8 --cmd python3 "$container"
    buildah commit --rm "$container" "$STAND_IN" >&2 ;;
esac
echo "$STAND_IN"
