#!/usr/bin/env bash
# Prints the container builder to use: the first of docker, podman, buildah that can build here. Docker counts
# only when its daemon answers (a docker CLI without a daemon builds nothing); podman and buildah need none.
# BUILDER=<name> in the environment picks one instead. Exit status 1, and the reason on stderr, when none can.
#   scripts/container-builder.sh        # e.g. "podman"
set -euo pipefail
works() {
  case "$1" in
    docker) command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ;;
    podman) command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null 2>&1 && buildah version >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}
if [ -n "${BUILDER:-}" ]; then
  if works "$BUILDER"; then echo "$BUILDER"; exit 0; fi
  echo "BUILDER=$BUILDER cannot build here (not installed, or no daemon / storage it can use)" >&2
  exit 1
fi
for candidate in docker podman buildah; do
  if works "$candidate"; then echo "$candidate"; exit 0; fi
done
echo "no container builder can run here: install docker (with its daemon running), podman or buildah" \
  "(Debian: apt-get install buildah; scripts/install-system-deps.sh does under CI=true; it needs root or subuids)" >&2
exit 1
