"""`make demo`: one sentence through the whole path — RunPod API → worker → S3 → presigned URL → download.

Speaks with the real F5TTS_v1_Base when its weights are cached, or fetched now (~1.4 GB, once) when the Hugging
Face Hub is reachable; else, at once and loudly, with the tiny random-weight model (noise). Starts the stack with one worker, synthesizes through the client SDK (`f5tts_client`) when it is installed, else
through plain HTTP calls of the same API, writes the WAV, checks that it decodes, and stops everything. Every wait
is bounded, so a broken setup fails with a message instead of hanging.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import soundfile

from devstack.model import ModelMode, announce_model, choose_model
from devstack.stack import QueueStack

DEFAULT_TEXT = "Hello! This sentence was spoken by F5-TTS, through a local RunPod-compatible stack."
JOB_TIMEOUT_S = 180.0
REAL_JOB_TIMEOUT_S = 900.0  # the full-size model on a laptop CPU: a sentence takes a minute or more


class DemoError(RuntimeError):
    pass


def _synthesize_with_client(stack: QueueStack, text: str, out: Path, timeout_s: float = JOB_TIMEOUT_S) -> str:
    from f5tts_client import Client

    client = Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url)
    result = client.synthesize(text, format="wav", timeout=timeout_s)
    result.save(out)
    if result.audio_url is None:  # the devstack has a bucket: its results come as URLs
        raise DemoError("the stack answered without an audio URL")
    return result.audio_url


def _synthesize_with_http(stack: QueueStack, text: str, out: Path, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """The same calls the SDK makes: /runsync, /status polling while the job outlasts the wait, download."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=stack.endpoint_url + "/", headers=headers, timeout=90) as api:
        job: dict[str, Any] = api.post(
            "runsync", params={"wait": 60_000}, json={"input": {"text": text, "format": "wav"}}
        ).json()
        while job.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
            if time.monotonic() > deadline:
                api.post(f"cancel/{job['id']}")
                raise DemoError(f"the job did not finish within {timeout_s:.0f} s")
            time.sleep(0.5)
            job = api.get(f"status/{job['id']}").json()
    if job.get("status") != "COMPLETED":
        raise DemoError(f"the job ended {job.get('status')}: {job.get('error') or job}")
    audio_url = job["output"][0]["audio_url"]
    response = httpx.get(audio_url, timeout=30)
    response.raise_for_status()
    out.write_bytes(response.content)
    return audio_url


def synthesize(stack: QueueStack, text: str, out: Path, timeout_s: float = JOB_TIMEOUT_S) -> tuple[str, str]:
    """(audio URL, which client path was used)."""
    try:
        import f5tts_client  # noqa: F401
    except ImportError:
        return _synthesize_with_http(stack, text, out, timeout_s), "plain HTTP (f5tts_client is not installed)"
    return _synthesize_with_client(stack, text, out, timeout_s), "f5tts_client"


def run_demo(out: Path, text: str = DEFAULT_TEXT, model: ModelMode = "auto", log: IO[str] = sys.stderr) -> Path:
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    choice = choose_model(model, fetch=True, out=log)
    announce_model(choice, log)
    print("starting the local stack (S3, queue emulator, 1 worker)...", file=log, flush=True)
    with QueueStack(workers=1, model=choice) as stack:
        print(
            f"endpoint {stack.endpoint_url} ready after {time.monotonic() - started:.1f} s; synthesizing...",
            file=log,
            flush=True,
        )
        t0 = time.monotonic()
        try:
            audio_url, path = synthesize(stack, text, out, JOB_TIMEOUT_S if choice.is_noise else REAL_JOB_TIMEOUT_S)
        except Exception:
            print(f"the demo failed; the worker's last lines:\n{stack.log_tails()}", file=log, flush=True)
            raise
        print(
            f"synthesized via {path} in {time.monotonic() - t0:.1f} s; audio was at {audio_url.split('?')[0]}", file=log
        )
    info = soundfile.info(str(out))  # raises if what was downloaded is not audio
    noise = " — NOISE: tiny random-weight model" if choice.is_noise else ""
    print(
        f"wrote {out}: {info.duration:.2f} s at {info.samplerate} Hz{noise} ({time.monotonic() - started:.1f} s in all)",
        file=log,
    )
    print(
        "to listen, compare takes and manage voices in your browser: `make playground` (this stack), or "
        "`f5tts playground` against your own endpoint",
        file=log,
    )
    return out
