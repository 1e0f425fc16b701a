"""Image size: the runtime set as Dockerfile.runpod installs it, the baked weights and an estimated image total,
for the image before issue #12 (nvidia/cuda base, f5-tts's full dependency set) and today's, side by side.

    python -m bench.image_size                    # ~1 min, offline: installs both sets from uv's cache into a temp dir
    python -m bench.image_size --image f5tts-runpod:test   # also the image `make image` built (default: IMAGE,
                                                            # else f5tts-runpod:dev), when a builder has it

The estimate needs no container builder. Each figure says where it comes from:
- measured: installed here with `uv pip install --offline --target` from uv's wheel cache, bytecode compiled
  as pip compiles it in the image, pruned as the Dockerfile prunes it (scripts/prune-site-packages.sh); `du -sb`.
- apt: Debian's own package sizes (Installed-Size) for what the Dockerfile's apt-get installs, resolved by apt.
- published: sizes published by the image registry, the Hub or GitHub, written down here by hand.
- recorded: a figure measured earlier with the same command, used when this machine cannot measure it now
  (the old set's wheels are not in uv's cache on a fresh clone).
- built: the image itself, as its builder reports it and unpacked on disk (`du -sb` of its root file system). An
  image built with WEIGHTS=tiny or FLASH_ATTN=none lacks the weights or flash-attn: they are added (the published
  sizes, with the checkpoint as float16 as a default build bakes it; the flash-attn estimate) and the line says so.
The headline `image_size_gb` is today's estimated image (uncompressed, GB = 1e9 bytes); the target is <= 9;
`built_image_size_gb` is the built image's unpacked size with whatever it lacks added.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import REPO_ROOT
from worker.model_facts import IMAGE_SETTINGS_FILE

GB = 1e9
# The last commit with the old image (nvidia/cuda base, f5-tts installed with all its declared dependencies).
OLD_COMMIT = "cbb41a2f910682b590b348373c1ab825ad8a5d0c"
UV = Path(sys.executable).parent / "uv"

# Recorded on the 2-core dev VM with measure_set() (same command), for when uv's cache lacks the wheels.
RECORDED_SETS = {"old": (7.94e9, 0.40e9), "new": (6.28e9, 0.15e9)}  # (pruned set without bytecode, bytecode)
RECORDED_APT_FFMPEG = 0.48e9  # `apt-get -s` closure of ffmpeg ca-certificates curl on bookworm, minus the base

# Published sizes (uncompressed on disk, linux/amd64), written down by hand: check them when a tag changes.
PUBLISHED = {
    # Docker Hub library/python: ~45 MB compressed; ~0.13 GB unpacked (Debian bookworm slim + CPython 3.11).
    "python:3.11-slim-bookworm": 0.13e9,
    # SWivid/F5-TTS F5TTS_v1_Base/model_1250000.safetensors (1.35 GB, float32) + vocab.txt; charactr/vocos-mel-24khz
    # pytorch_model.bin (54 MB) + config.yaml: file sizes listed on the Hugging Face Hub.
    "checkpoint": 1.35e9,
    "vocoder": 0.054e9,
    # openai/whisper-large-v3-turbo model.safetensors (1.62 GB) + tokenizer files, only with WITH_WHISPER=true.
    "whisper weights": 1.62e9 + 0.005e9,
    # flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311 from GitHub releases (~0.26 GB wheel): unreachable here,
    # so its unpacked size is an estimate (~2x the wheel). The same in both images.
    "flash-attn": 0.5e9,
}
# The weights as the image bakes them (WEIGHTS_DTYPE=float16, the default): the checkpoint's float32 tensors as
# float16, half its published size (worker.prefetch --float16); the vocoder as published.
BAKED_WEIGHTS = PUBLISHED["checkpoint"] / 2 + PUBLISHED["vocoder"]
# The word aligner the image bakes (worker.prefetch: torchaudio's WAV2VEC2_ASR_BASE_960H as float32 safetensors):
# wav2vec 2.0 base with a 29-letter head, 94.4 M parameters x 4 bytes (torchaudio.models.wav2vec2_base).
ALIGNER_BYTES = 94.4e6 * 4
# nvidia/cuda:12.8.1-runtime-ubuntu22.04 is Ubuntu 22.04 plus CUDA's runtime libraries. Its CUDA libraries that
# torch's nvidia-* wheels also ship are measured from the wheels (CUDA_OVERLAP); the rest (NPP, nvJPEG, Ubuntu,
# the deadsnakes Python 3.11 the old Dockerfile added) is this estimate.
CUDA_BASE_REST = 0.45e9
# Debian packages python:3.11-slim-bookworm already holds (debian:bookworm-slim plus the Python image's runtime
# libraries), written down from its package list: apt resolves as on an empty system, so these are not counted.
IN_SLIM_BASE = {
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libssl3",
    "ca-certificates",
    "libsqlite3-0",
    "tzdata",
    "netbase",
    "libgnutls30",
    "libsystemd0",
    "libudev1",
    "libzstd1",
    "liblzma5",
    "libbz2-1.0",
    "libcrypt1",
    "libgmp10",
    "libffi8",
    "libidn2-0",
    "libp11-kit0",
    "libtasn1-6",
    "libunistring2",
    "libnettle8",
    "libhogweed6",
    "libseccomp2",
    "libselinux1",
    "libpcre2-8-0",
    "libcap2",
    "libacl1",
    "libattr1",
    "libdb5.3",
    "libgcrypt20",
    "libgpg-error0",
    "liblz4-1",
    "libxxhash0",
    "libaudit1",
    "libaudit-common",
    "libcap-ng0",
    "libmd0",
    "libtinfo6",
    "libncursesw6",
    "libreadline8",
    "readline-common",
    "libuuid1",
    "libblkid1",
    "libmount1",
    "libsmartcols1",
    "debconf",
    "perl-base",
    "libgdbm6",
    "libexpat1",
    "openssl",
}
CUDA_OVERLAP = ("cublas", "cufft", "curand", "cusparse", "cusolver", "cuda_nvrtc", "nvjitlink", "cuda_runtime", "nccl")


@dataclass
class SetSize:
    total: float  # bytes as installed in the image (bytecode included)
    bytecode: float
    cuda_overlap: float  # bytes of nvidia/<lib> that a CUDA base image holds again
    source: str


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def measure_set(pins: str, *, prune: bool) -> SetSize | None:
    """Install `pins` (hash-pinned requirements text) into a temp dir from uv's cache; None when not cached."""
    workdir = Path(tempfile.mkdtemp(prefix="f5tts-image-size-"))
    try:
        (workdir / "pins.txt").write_text(pins)
        site = workdir / "site"
        install = [str(UV), "pip", "install", "-q", "--offline", "--compile-bytecode", "--target", str(site)]
        install += ["--python", sys.executable, "--require-hashes", "--no-deps", "-r", str(workdir / "pins.txt")]
        if subprocess.run(install, check=False, capture_output=True, text=True).returncode != 0:
            return None
        if prune:
            subprocess.run(["bash", str(REPO_ROOT / "scripts/prune-site-packages.sh"), str(site)], check=True)
        bytecode = sum(p.stat().st_size for p in site.rglob("*.pyc"))
        overlap = sum(_du(site / "nvidia" / lib) for lib in CUDA_OVERLAP if (site / "nvidia" / lib).is_dir())
        how = "measured (uv --target, bytecode, pruned)" if prune else "measured (uv --target, bytecode)"
        return SetSize(_du(site), bytecode, overlap, how)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def apt_size(packages: list[str]) -> tuple[float, str]:
    """Installed-Size of what `apt-get install --no-install-recommends packages` installs on an empty system."""
    try:
        simulated = subprocess.run(
            ["apt-get", "-s", "-o", "Dir::State::status=/dev/null", "install", "--no-install-recommends", *packages],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        names = [line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")]
        names = [name for name in names if name.split(":")[0] not in IN_SLIM_BASE]
        shown = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", *names], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return RECORDED_APT_FFMPEG, "recorded (apt closure on Debian bookworm)"
    kib = sum(int(line.split()[1]) for line in shown.splitlines() if line.startswith("Installed-Size:"))
    return kib * 1024, f"apt ({len(names)} packages not in the slim base, Installed-Size; FFmpeg's CLI pulls Mesa/LLVM)"


def old_pins() -> str | None:
    done = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:requirements/worker.txt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def _builder() -> str | None:
    found = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/container-builder.sh")], capture_output=True, text=True, check=False
    )
    return found.stdout.strip() if found.returncode == 0 else None


def _cli(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=600).stdout


def built_image(tag: str) -> tuple[str, float | None, float, dict[str, str]] | None:
    """(builder, size the builder reports, unpacked size, the image's settings file) of `tag`; None if absent."""
    builder = _builder()
    if builder is None:
        return None
    if builder == "docker":
        try:
            reported: float | None = float(_cli("docker", "image", "inspect", "--format", "{{.Size}}", tag))
        except subprocess.CalledProcessError:
            return None
        container = _cli("docker", "create", tag).strip()
        try:
            unpacked = 0.0  # the bytes of its file system as a tar stream (headers are a rounding error)
            with subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE) as exported:
                assert exported.stdout is not None
                while block := exported.stdout.read(1 << 20):
                    unpacked += len(block)
            settings = _cli("docker", "run", "--rm", tag, "sh", "-c", f"cat {IMAGE_SETTINGS_FILE} || true")
        finally:
            _cli("docker", "rm", "--force", container)
        return builder, reported, unpacked, _settings(settings)
    # podman and buildah share their storage: podman reports the size; the root file system is mounted by buildah
    # where it is installed, else by podman itself (`podman mount`, as root).
    mounter = "buildah" if shutil.which("buildah") else "podman"
    try:
        reported = (
            float(_cli("podman", "image", "inspect", "--format", "{{.Size}}", tag)) if shutil.which("podman") else None
        )
        if mounter == "buildah":
            container = _cli("buildah", "from", "--quiet", tag).strip()
        else:
            container = _cli("podman", "create", tag).strip().splitlines()[-1]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    try:
        root = Path(_cli(mounter, "mount", container).strip())
        settings_file = root / str(IMAGE_SETTINGS_FILE).lstrip("/")
        settings = settings_file.read_text() if settings_file.is_file() else ""
        return builder, reported, float(_du(root)), _settings(settings)
    finally:
        subprocess.run([mounter, "umount", container], check=False, capture_output=True)
        subprocess.run([mounter, "rm", container], check=False, capture_output=True)


def _settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def print_built(tag: str, estimate: float) -> None:
    found = built_image(tag)
    print(f"== the built image {tag} ==")
    if found is None:
        print("  not here (no container builder, or no such image: `make image` builds it)")
        return
    builder, reported, unpacked, settings = found
    if reported is not None:
        print(f"  {'reported by ' + builder:34} {reported / GB:7.2f}")
    print(f"  {'unpacked on disk':34} {unpacked / GB:7.2f}  du -sb of its root file system")
    total = unpacked
    if settings.get("F5TTS_MODEL") == "F5TTS_tiny":
        total += BAKED_WEIGHTS + ALIGNER_BYTES
        print(
            f"  {'+ baked weights and aligner':34} {(BAKED_WEIGHTS + ALIGNER_BYTES) / GB:7.2f}  "
            "built with WEIGHTS=tiny: as a default build bakes them added (float16 checkpoint; the tiny model's "
            "2 MB left in)"
        )
    if settings.get("F5TTS_ATTN_BACKEND") == "torch":
        total += PUBLISHED["flash-attn"]
        print(
            f"  {'+ flash-attn':34} {PUBLISHED['flash-attn'] / GB:7.2f}  built with FLASH_ATTN=none: the estimate added"
        )
    print(f"  {'= with real weights and flash-attn':34} {total / GB:7.2f}  against the estimate {estimate / GB:.2f}")
    print(f"built_image_size_gb {total / GB:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("IMAGE") or "f5tts-runpod:dev", help="the built image's tag")
    args = parser.parse_args(argv)
    pins = (REPO_ROOT / "requirements" / "worker.txt").read_text()
    new = measure_set(pins, prune=True)
    if new is None:
        total, pyc = RECORDED_SETS["new"]
        new = SetSize(total + pyc, pyc, 2.83e9, "recorded (wheels not in uv's cache: run `make setup`)")
    old_text = old_pins()
    old = measure_set(old_text, prune=False) if old_text else None
    if old is None:
        total, pyc = RECORDED_SETS["old"]
        old = SetSize(total + pyc, pyc, new.cuda_overlap, "recorded (old wheels not in uv's cache)")
    ffmpeg, ffmpeg_source = apt_size(["ffmpeg", "ca-certificates", "curl"])
    old_base = new.cuda_overlap + CUDA_BASE_REST

    rows = [
        (
            "base image",
            old_base,
            PUBLISHED["python:3.11-slim-bookworm"],
            (
                "before: nvidia/cuda:12.8.1-runtime-ubuntu22.04 = its CUDA libs also in the nvidia-* wheels (measured) "
                f"+ {CUDA_BASE_REST / GB:.2f} GB NPP/nvJPEG/Ubuntu/Python (estimate); after: python:3.11-slim-bookworm "
                "(published)"
            ),
        ),
        ("FFmpeg (apt)", ffmpeg, ffmpeg, ffmpeg_source),
        (
            "runtime set, no bytecode",
            old.total - old.bytecode,
            new.total - new.bytecode,
            f"before: {old.source}; after: {new.source}",
        ),
        ("  + bytecode pip compiles", old.bytecode, new.bytecode, "measured (*.pyc of the install above)"),
        ("flash-attn", PUBLISHED["flash-attn"], PUBLISHED["flash-attn"], "estimate (GitHub wheel ~0.26 GB, unpacked)"),
        (
            "weights (F5TTS_v1_Base, Vocos)",
            PUBLISHED["checkpoint"] + PUBLISHED["vocoder"],
            BAKED_WEIGHTS,
            "published (Hub file sizes); after: the checkpoint baked in float16 (WEIGHTS_DTYPE), half its float32 size",
        ),
        ("word aligner (wav2vec 2.0 base)", 0.0, ALIGNER_BYTES, "float32 weights of its 94.4 M parameters"),
    ]
    before = sum(row[1] for row in rows)
    after = sum(row[2] for row in rows)
    print("== image size (uncompressed; GB = 1e9 bytes) ==")
    print(f"  {'':34} {'before':>7} {'after':>7}  source")
    for label, old_value, new_value, source in rows:
        print(f"  {label:34} {old_value / GB:7.2f} {new_value / GB:7.2f}  {source}")
    print(f"  {'estimated image':34} {before / GB:7.2f} {after / GB:7.2f}  sum of the rows")
    print(
        f"  CUDA libraries held twice before: {new.cuda_overlap / GB:.2f} GB (in the base and in the nvidia-* wheels)"
    )
    print(f"  WITH_WHISPER=true adds ~{(PUBLISHED['whisper weights'] + 0.07e9) / GB:.2f} GB (transformers + weights)")
    print(f"  target: runtime set <= 6.4 GB (was 7.9): {(new.total - new.bytecode) / GB:.2f} GB; image <= 9 GB")
    print_built(args.image, after)
    print(f"image_size_gb {after / GB:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
