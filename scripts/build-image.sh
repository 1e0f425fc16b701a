#!/usr/bin/env bash
# Builds Dockerfile.runpod with the first container builder that can run here (scripts/container-builder.sh:
# docker, podman, buildah). `make image` calls it with its variables in the environment:
#   IMAGE        the tag (default f5tts-runpod:dev)
#   BASE_IMAGE, FLASH_ATTN, FLASH_ATTN_SHA256, WEIGHTS, WEIGHTS_DTYPE, WITH_WHISPER
#                the Dockerfile's build arguments of the same names, passed only when set (docs/image.md)
#   PIP_CONFIG_FILE, PIP_CERT
#                a pip configuration file and a CA bundle for the package index, passed as the build secrets
#                pip-conf and pip-cert (never written into the image)
#   IMAGE_BUILD_FLAGS
#                more flags for the builder, e.g. CI's --push and --cache-from/--cache-to
# buildah and podman build the docker image format (OCI images drop SHELL, and with it pipefail) and isolate RUN
# steps with chroot unless BUILDAH_ISOLATION says otherwise (no container runtime or cgroups needed for a build).
set -euo pipefail
cd "$(dirname "$0")/.."
builder="$(bash scripts/container-builder.sh)"
args=(-f Dockerfile.runpod -t "${IMAGE:-f5tts-runpod:dev}")
for name in BASE_IMAGE FLASH_ATTN FLASH_ATTN_SHA256 WEIGHTS WEIGHTS_DTYPE WITH_WHISPER; do
  if [ -n "${!name:-}" ]; then args+=(--build-arg "$name=${!name}"); fi
done
if [ -n "${PIP_CONFIG_FILE:-}" ]; then args+=(--secret "id=pip-conf,src=$PIP_CONFIG_FILE"); fi
if [ -n "${PIP_CERT:-}" ]; then args+=(--secret "id=pip-cert,src=$PIP_CERT"); fi
read -ra extra <<<"${IMAGE_BUILD_FLAGS:-}"
case "$builder" in
  docker)
    # buildx where it is installed (CI's --push and registry cache need it); else the classic CLI on BuildKit.
    if docker buildx version >/dev/null 2>&1; then build=(docker buildx build); else build=(docker build); fi
    export DOCKER_BUILDKIT=1; set -x; exec "${build[@]}" "${args[@]}" "${extra[@]}" . ;;
  podman) export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"; set -x; exec podman build --format docker "${args[@]}" "${extra[@]}" . ;;
  buildah) export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"; set -x; exec buildah bud --layers --format docker "${args[@]}" "${extra[@]}" . ;;
esac
