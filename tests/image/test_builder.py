"""`make image`'s builder detection and the build arguments it passes (the build itself: test_image.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.image.containers import ROOT


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


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
