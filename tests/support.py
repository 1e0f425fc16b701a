"""Helpers shared by the test folders: the repository root, a Python child process, a worker child process's
environment and `python -m worker.handler --test_input`, a fake Hugging Face cache, FFmpeg's reading of any audio,
and the tiny model's environment (a session fixture, registered for every folder by tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from devstack.paths import REPO_ROOT as REPO_ROOT  # the tests' import of it; devstack/paths.py is its one home
from worker.model_facts import DEFAULT_MODEL, baked_files

# Settings a developer's shell may carry that would reach a worker child process.
WORKER_ENV_PREFIXES = ("F5TTS_", "BUCKET_", "RUNPOD_", "HF_")
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the revision every fake cache entry is filed under


@pytest.fixture(scope="session")
def tiny_model_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`F5TTS_*` variables selecting a tiny checkpoint built for this session (nothing is downloaded)."""
    from worker.tiny import build_tiny_checkpoint  # imports torch: only when a test needs the model

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


def worker_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a worker child process: this one's without a developer's worker, bucket, RunPod or
    Hugging Face settings, HOME and HF_HOME under `tmp_path`, this checkout importable; then `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(WORKER_ENV_PREFIXES)}
    env.update(HOME=str(tmp_path), HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
    env.update(overrides)
    return env


def run_python(
    *args: str, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None, timeout: float = 240, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python <args>` with this interpreter in a child process, its output captured as text. A test that calls
    it is an integration test (`@pytest.mark.integration`: `make unit` starts no Python child)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def run_handler(
    tmp_path: Path, env_overrides: dict[str, str], job_input: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`python -m worker.handler --test_input` (runpod's own one-job mode) as the image runs it."""
    env = worker_env(
        tmp_path,
        F5TTS_DATA_DIR=str(tmp_path / "data"),
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
        RUNPOD_SKIP_GPU_CHECK="true",
        **env_overrides,
    )
    return run_python("-m", "worker.handler", "--test_input", json.dumps({"input": job_input}), cwd=tmp_path, env=env)


def hf_cache_file(hub: Path, repo_id: str, filename: str) -> Path:
    """Where huggingface_hub's cache layout puts `filename` of `repo_id` (models--owner--name/snapshots/<commit>/),
    with the `main` ref pointing there; the folders are made, the file is left for the caller to write."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(HF_COMMIT)
    path = repo / "snapshots" / HF_COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def ffmpeg_decode(
    data: bytes, sample_rate: int = 24000, sample_format: str = "f32le", *, quiet: bool = False
) -> np.ndarray:
    """Audio of any format as the FFmpeg CLI decodes it (from a pipe: no file name to go by), mono at `sample_rate`,
    as samples of `sample_format` (`f32le`: float32, `s16le`: int16). `quiet`: it must read it without a complaint
    (nothing on stderr)."""
    command = ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", sample_format, "-ac", "1", "-ar", str(sample_rate)]
    result = subprocess.run([*command, "pipe:1"], input=data, capture_output=True, check=True, timeout=60)
    assert not quiet or result.stderr == b"", result.stderr.decode(errors="replace")
    return np.frombuffer(result.stdout, dtype={"f32le": "<f4", "s16le": "<i2"}[sample_format])


def decoded_seconds(data: bytes) -> float:
    """How long the audio `data` lasts; it must be sound, not silence."""
    samples = ffmpeg_decode(data)
    assert np.abs(samples).max() > 0.01
    return len(samples) / 24000


def fill_model_cache(hub: Path, model: str = DEFAULT_MODEL) -> dict[str, Path]:
    """A Hugging Face cache under `hub` holding every file the image bakes for `model` (checkpoint, vocabulary,
    Vocos; `fake_hub_file`), by filename in its repository."""
    return {
        hub_file.filename: fake_hub_file(hub, hub_file.repo_id, hub_file.filename) for hub_file in baked_files(model)
    }


def fake_hub_file(hub: Path, repo_id: str, filename: str) -> Path:
    """`filename` of `repo_id` in the cache under `hub` as a download leaves it (what a faked `hf_hub_download`
    writes): a safetensors file small but intact, any other file a few bytes."""
    path = hf_cache_file(hub, repo_id, filename)
    if path.suffix == ".safetensors":
        save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(path))
    else:
        path.write_bytes(b"x" * 16)
    return path
