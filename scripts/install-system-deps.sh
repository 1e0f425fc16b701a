#!/usr/bin/env bash
# Installs the system packages the worker and the tests need (FFmpeg's shared libraries for torchaudio /
# torchcodec and the ffmpeg CLI for mp3/ogg; Debian's chromium for the playground's browser tests, driven by
# playwright, whose own browser download is not used), and, where the in-image tests are to run (CI=true or
# F5TTS_IMAGE_TESTS=1) and no Docker daemon answers, buildah and debootstrap to build the image (docs/image.md).
# Does nothing when they are already present.
set -euo pipefail
packages=()
if ! command -v ffmpeg >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q libavcodec; then
  packages+=(ffmpeg libsndfile1)
fi
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
# ip (iproute2): the playground's wildcard-bind test runs in a network namespace of its own with only loopback up.
PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || packages+=(iproute2)
if { [ "${CI:-}" = true ] || [ "${F5TTS_IMAGE_TESTS:-}" = 1 ]; } && ! docker info >/dev/null 2>&1; then
  command -v buildah >/dev/null 2>&1 || packages+=(buildah)
  command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
fi
if [ "${#packages[@]}" = 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "${packages[*]} missing and this user cannot install them: run 'apt-get install ${packages[*]}' as root" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
