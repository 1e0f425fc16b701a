"""Queue mode batching through the real `runpod.serverless.start` loop (devstack emulator, one real
`python -m worker.handler` on the tiny model): jobs taken together through the concurrency modifier share model
calls (the worker's debug log says so for each call) and sound as they do one at a time, and health reports the
batching settings."""

from __future__ import annotations

import base64
import io
import re
import time
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
BATCHING = {
    "F5TTS_CONCURRENCY": "4",
    "F5TTS_MAX_BATCH": "4",
    "F5TTS_BATCH_WAIT_MS": "300",
    "F5TTS_LOG_LEVEL": "DEBUG",  # worker.batcher logs each model call with its chunks and jobs
    "RUNPOD_LOG_LEVEL": "INFO",  # the runpod SDK's own debug output is not needed
}
# worker.batcher's line for each Engine.sample call.
SAMPLED = re.compile(r"sampled (\d+) chunk\(s\) of (\d+) job\(s\) in one call")


def logged_calls(stack: Any, chunks: int) -> list[tuple[int, int]]:
    """(chunks, jobs) of each model call the worker has logged, once the calls hold `chunks` chunks in all (the
    log reaches its file a moment after the jobs complete)."""
    deadline = time.monotonic() + 30
    while True:
        calls = [(int(n), int(jobs)) for n, jobs in SAMPLED.findall(stack.worker_logs())]
        if sum(n for n, _ in calls) >= chunks or time.monotonic() > deadline:
            return calls
        time.sleep(0.1)


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

        alone = [run(job) for job in jobs]  # each text is one chunk
        assert logged_calls(stack, len(jobs)) == [(1, 1)] * len(jobs)  # one at a time: a call each
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            together = list(pool.map(run, jobs))
        together_calls = logged_calls(stack, 2 * len(jobs))[len(jobs) :]
    assert sum(n for n, _ in together_calls) == len(jobs), together_calls
    assert max(jobs for _, jobs in together_calls) > 1, together_calls  # jobs taken together shared a model call
    for batched, single in zip(together, alone, strict=True):
        assert batched.shape == single.shape
        assert np.abs(batched - single).max() <= 2 / 32768  # 16-bit WAV: float noise may flip the last bit
