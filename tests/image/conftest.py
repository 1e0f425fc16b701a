"""One image for the in-image tests: Dockerfile.runpod built once per session by `make image` (the tiny model, no
flash-attn, the local base of scripts/base-image.sh) and removed at the end. The tests of other build arguments
(test_flash_attn_input.py, test_weights_input.py) build on its layers with `make_image` and remove what they tag.

The build takes minutes and ~8 GB of disk, so it runs where it is asked for: on CI (`CI=true`, which GitHub sets)
or with F5TTS_IMAGE_TESTS=1. Elsewhere these tests are skipped with that reason; where no builder can run, they
are skipped with the builder's reason, and under CI=true that is a failure instead. F5TTS_TEST_IMAGE=<tag> tests an
image already built that way instead (and leaves it).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.containers import Containers, NoBuilder, find_builder
from tests.support import REPO_ROOT

BUILD_TIMEOUT_S = 3600  # a cold build on a 2-core machine: pip installs 6 GB of wheels


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    containers: Containers
    build_s: float
    log: Path
    base: str  # the BASE_IMAGE it was built on


def make_image(log: Path, tag: str, **build_args: str) -> subprocess.CompletedProcess[bytes]:
    """`make image IMAGE=tag KEY=VALUE...`, its output written to `log`."""
    with log.open("w") as out:
        return subprocess.run(
            ["make", "--no-print-directory", "image", f"IMAGE={tag}", *(f"{k}={v}" for k, v in build_args.items())],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    if not (_on_ci() or os.environ.get("F5TTS_IMAGE_TESTS") == "1"):
        pytest.skip("in-image tests build an ~8 GB image for minutes: CI=true or F5TTS_IMAGE_TESTS=1 runs them")
    try:
        containers = Containers(find_builder())
    except NoBuilder as exc:
        if _on_ci():
            pytest.fail(f"CI=true, but no container builder can run: {exc}")
        pytest.skip(f"no container builder can run here: {exc}")
    base = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/base-image.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    assert base.returncode == 0, f"no base image: {base.stderr[-3000:]}"
    if tag := os.environ.get("F5TTS_TEST_IMAGE"):
        yield BuiltImage(tag, containers, 0.0, Path(os.devnull), base.stdout.strip())
        return
    tag = f"localhost/f5tts-runpod:test-{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    built = make_image(log, tag, BASE_IMAGE=base.stdout.strip(), FLASH_ATTN="none", WEIGHTS="tiny")
    try:
        assert built.returncode == 0, f"make image failed:\n{log.read_text()[-6000:]}"
        yield BuiltImage(tag, containers, time.monotonic() - started, log, base.stdout.strip())
    finally:
        containers.remove_image(tag)
