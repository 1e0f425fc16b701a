"""bench/gpu_rtf.py, the one prepared script for a GPU machine, in its CPU smoke mode (`--device cpu --tiny`): the
same steps as on a GPU (load, batch 1, the concurrency sweep batched and sequential, the JSON), on the tiny model,
so that the script is known to run before a GPU is lent to it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, worker_env


@pytest.mark.timeout(300)
def test_the_smoke_mode_measures_every_step_and_writes_the_json(tmp_path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_rtf", "--device", "cpu", "--tiny"],
        cwd=REPO_ROOT,
        env=worker_env(tmp_path, OUT=str(out), HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "gpu_batching_throughput_ratio_c2_torch" in done.stdout
    assert "flash_attn" in done.stdout  # named as not measured: no GPU here
    report = json.loads((out / "gpu_rtf.json").read_text())
    torch_backend = report["backends"]["torch"]
    assert report["device"] == "cpu" and report["skipped_backends"] == ["flash_attn"]
    assert torch_backend["alone"]["rtf"] > 0 and torch_backend["alone"]["audio_s"] > 0
    sweep = torch_backend["sweep"]
    assert set(sweep) == {"c1_sequential", "c1_batched", "c2_sequential", "c2_batched"}
    assert sweep["c2_batched"]["mean_batch"] == 2 and sweep["c2_sequential"]["mean_batch"] == 1  # batched for real
    assert torch_backend["throughput_ratio"] > 0 and torch_backend["p50_ratio"] > 0
