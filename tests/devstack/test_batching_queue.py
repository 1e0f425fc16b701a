"""Queue mode batching through the real `runpod.serverless.start` loop (devstack emulator, one real
`python -m worker.handler` on the tiny model): jobs taken together through the concurrency modifier and batched
sound as they do one at a time, and health reports the batching settings."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from devstack.testing import running_stack
from tests.devstack.helpers import TERMINAL, api, wait_status

pytestmark = pytest.mark.timeout(300)

TEXTS = [
    "The rivers carve the valleys over the ages.",
    "The winds shape the mountains, slowly.",
    "The seasons turn without asking anyone.",
    "The tides follow the moon all night long.",
]
BATCHING = {"F5TTS_CONCURRENCY": "4", "F5TTS_MAX_BATCH": "4", "F5TTS_BATCH_WAIT_MS": "300"}


def pcm(output: list[dict[str, Any]]) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(base64.b64decode(output[0]["audio_base64"])), dtype="float32")
    return samples


def test_jobs_taken_together_are_batched_and_sound_as_they_do_one_at_a_time() -> None:
    jobs = [
        {"input": {"text": text, "seed": n, "nfe_step": 4, "delivery": "base64", "format": "wav"}}
        for n, text in enumerate(TEXTS)
    ]
    with running_stack(1, worker_env=BATCHING) as stack, api(stack, timeout=120) as client:
        health = client.post("runsync", params={"wait": 120_000}, json={"input": {"action": "health"}}).json()
        assert health["status"] == "COMPLETED", health
        assert (health["output"][0]["concurrency"], health["output"][0]["max_batch"]) == (4, 4)

        def run(job: dict[str, Any]) -> np.ndarray:
            job_id = client.post("run", json=job).json()["id"]
            done = wait_status(client, job_id, TERMINAL, timeout=120)
            assert done["status"] == "COMPLETED", done
            return pcm(done["output"])

        alone = [run(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            together = list(pool.map(run, jobs))
    for batched, single in zip(together, alone, strict=True):
        assert batched.shape == single.shape
        assert np.abs(batched - single).max() <= 2 / 32768  # 16-bit WAV: float noise may flip the last bit
