"""`make image`'s builder detection, the build arguments it passes, and how the size bench finds the built image
(the build itself: test_image.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO_ROOT


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_no_builder_found_says_what_to_install(tmp_path: Path) -> None:
    found = _run(["/bin/bash", "scripts/container-builder.sh"], PATH=str(tmp_path))  # no docker, podman, buildah
    assert found.returncode == 1 and found.stdout == ""
    assert "no container builder can run here: install docker" in found.stderr
    chosen = _run(["/bin/bash", "scripts/container-builder.sh"], PATH=str(tmp_path), BUILDER="kaniko")
    assert chosen.returncode == 1 and "BUILDER=kaniko cannot build here" in chosen.stderr


def test_make_image_passes_its_variables_as_build_arguments_and_secrets(tmp_path: Path) -> None:
    """A stand-in `buildah` records the command line `make image` gives it."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "buildah"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >>{calls}\n')
    fake.chmod(0o755)
    cert = tmp_path / "ca.pem"
    cert.write_text("not a real bundle")
    path = f"{fake.parent}:{os.environ['PATH']}"
    variables = ["IMAGE=f5tts:x", "BASE_IMAGE=local/base", "FLASH_ATTN=none", "WEIGHTS=tiny"]
    made = _run(
        ["make", "--no-print-directory", "image", *variables],
        PATH=path,
        BUILDER="buildah",
        PIP_CERT=str(cert),
    )
    assert made.returncode == 0, made.stderr
    build = calls.read_text().splitlines()[-1].split()
    assert build[:4] == ["bud", "--layers", "--format", "docker"]  # docker format: SHELL and HEALTHCHECK kept
    assert build[4:8] == ["-f", "Dockerfile.runpod", "-t", "f5tts:x"] and build[-1] == "."
    args = [build[i + 1] for i, flag in enumerate(build) if flag == "--build-arg"]
    assert args == ["BASE_IMAGE=local/base", "FLASH_ATTN=none", "WEIGHTS=tiny"]  # unset ones keep their defaults
    secrets = [build[i + 1] for i, flag in enumerate(build) if flag == "--secret"]
    assert secrets == [f"id=pip-cert,src={cert}"]  # a file the build reads, never its content in an argument


def test_the_size_bench_reads_a_podman_image_without_buildah(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With podman and no buildah, bench.image_size mounts the image with podman itself. A stand-in `podman` (the
    only container CLI on PATH) answers as podman does and records its calls; the root file system it mounts is a
    folder here, holding an image settings file."""
    from bench import image_size
    from worker.model_facts import IMAGE_SETTINGS_FILE

    root = tmp_path / "rootfs"
    settings = root / str(IMAGE_SETTINGS_FILE).lstrip("/")
    settings.parent.mkdir(parents=True)
    settings.write_text("F5TTS_ATTN_BACKEND=torch\n")
    (root / "payload").write_bytes(b"x" * 100_000)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "du"):  # what the bench runs besides the container CLI
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    calls = tmp_path / "calls"
    podman = bin_dir / "podman"
    podman.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >>{calls}\n'
        'case "$1" in\n'
        "  image) echo 123456789 ;;\n"
        "  create) echo 0123abcd ;;\n"
        f"  mount) echo {root} ;;\n"
        "esac\n"
    )
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("BUILDER", raising=False)

    found = image_size.built_image("localhost/f5tts-runpod:x")
    assert found is not None
    builder, reported, unpacked, image_settings = found
    assert (builder, reported, image_settings) == ("podman", 123456789.0, {"F5TTS_ATTN_BACKEND": "torch"})
    assert unpacked >= 100_000
    assert calls.read_text().splitlines() == [
        "info",
        "image inspect --format {{.Size}} localhost/f5tts-runpod:x",
        "create localhost/f5tts-runpod:x",
        "mount 0123abcd",
        "umount 0123abcd",
        "rm 0123abcd",
    ]
