#!/usr/bin/env bash
# Installs the system packages the worker and the tests need (FFmpeg's shared libraries for torchaudio /
# torchcodec and the ffmpeg CLI for mp3/ogg; Debian's chromium for the playground's browser tests, driven by
# playwright, whose own browser download is not used). Does nothing when they are already present.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libavcodec && command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ffmpeg or chromium is missing and this user cannot install them: run 'apt-get install ffmpeg chromium' as root" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends ffmpeg libsndfile1 chromium >/dev/null
