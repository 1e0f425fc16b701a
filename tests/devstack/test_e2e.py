"""End to end through the stack with the real worker: `python -m worker.handler` (runpod's worker loop, the real
f5-tts loaders on the tiny random-weight model) behind the queue emulator, audio delivered through the local S3
server and fetched by presigned URL — the production path, on a laptop."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import soundfile

from tests.devstack.helpers import TERMINAL, api, wait_status

SHORT_TEXT = "Hello world."
# The default voice's reference gives f5-tts's chunker room for about twelve of these per chunk: two chunks.
TWO_CHUNK_TEXT = "Hello world. " * 13
LONG_TEXT = "Hello world. " * 25  # a few seconds of inference even on a fast machine
# For jobs that are cut short: many cheap chunks (4 flow steps each), streamed, so that the worker computes one
# chunk per step of the handler: when the job is stopped, only the chunk under way still runs to its end (torch
# cannot be interrupted) and the worker is soon free, while the whole job would take many seconds.
MANY_CHEAP_CHUNKS = {"text": "Hello world. " * 380, "nfe_step": 4, "stream": True}


def _download_audio(url: str) -> tuple[np.ndarray, int]:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return soundfile.read(io.BytesIO(response.content), dtype="float32")


def test_runsync_synthesizes_into_the_bucket_and_a_presigned_url(devstack):
    with api(devstack) as client:
        body = client.post("runsync", json={"input": {"text": SHORT_TEXT, "seed": 7}}).json()
    assert body["status"] == "COMPLETED", body
    assert body["workerId"] in devstack.workers
    (result,) = body["output"]  # a job that is not streamed yields one item
    assert result["key"].startswith("generated/") and result["key"].endswith(".wav")
    assert result["seed"] == 7 and result["voice"] == "default" and result["format"] == "wav"
    head = devstack.s3_client().head_object(Bucket=devstack.bucket, Key=result["key"])
    assert head["ContentLength"] > 44
    assert result["audio_url"].startswith(devstack.s3_endpoint)
    samples, rate = _download_audio(result["audio_url"])
    assert rate == result["sample_rate"] == 24000
    assert abs(len(samples) / rate - result["duration"]) < 0.05
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0


def test_run_and_status_polling(devstack):
    with api(devstack) as client:
        submitted = client.post("run", json={"input": {"text": SHORT_TEXT, "format": "flac"}}).json()
        assert submitted["status"] == "IN_QUEUE"
        done = wait_status(client, submitted["id"], TERMINAL, timeout=120)
    assert done["status"] == "COMPLETED", done
    (result,) = done["output"]
    assert result["format"] == "flac" and result["key"].endswith(".flac")
    samples, rate = _download_audio(result["audio_url"])
    assert rate == 24000 and len(samples) > 0


def test_a_job_longer_than_the_runsync_wait_completes_through_polling(devstack):
    with api(devstack) as client:
        body = client.post("runsync", params={"wait": 1000}, json={"input": {"text": LONG_TEXT}}).json()
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        done = wait_status(client, body["id"], TERMINAL, timeout=180)
    assert done["status"] == "COMPLETED", done
    assert done["output"][0]["chunks"] >= 2 and done["executionTime"] > 1000


def test_streaming_delivers_several_chunks_through_stream(devstack):
    with api(devstack) as client:
        job_id = client.post("run", json={"input": {"text": TWO_CHUNK_TEXT, "stream": True, "seed": 3}}).json()["id"]
        items: list[dict] = []
        status = "IN_QUEUE"
        for _ in range(600):  # bounded: /stream holds each call up to a few seconds
            body = client.get(f"stream/{job_id}").json()
            status = body["status"]
            items += [entry["output"] for entry in body["stream"]]
            if status in TERMINAL and not body["stream"]:
                break
        final = client.get(f"status/{job_id}").json()
    assert status == "COMPLETED", final
    chunks = [item for item in items if item["type"] == "chunk"]
    assert len(chunks) >= 2 and [c["index"] for c in chunks] == list(range(len(chunks)))
    assert items[-1]["type"] == "end" and items[-1]["chunks"] == len(chunks) and items[-1]["seed"] == 3
    for chunk in chunks:
        samples, rate = soundfile.read(io.BytesIO(base64.b64decode(chunk["audio_base64"])))
        assert rate == chunk["sample_rate"] and len(samples) > 0
    assert final["output"] == items  # the aggregate of the stream is the job's output


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_cancel_of_a_queued_and_of_a_running_job(devstack, stream):
    with api(devstack) as client:
        running = client.post("run", json={"input": {**MANY_CHEAP_CHUNKS, "stream": stream}}).json()["id"]
        queued = client.post("run", json={"input": {"text": SHORT_TEXT}}).json()["id"]
        wait_status(client, running, "IN_PROGRESS", timeout=60)
        assert client.get(f"status/{queued}").json()["status"] == "IN_QUEUE"  # one worker, one job at a time
        assert client.post(f"cancel/{queued}").json()["status"] == "CANCELLED"
        assert client.post(f"cancel/{running}").json()["status"] == "CANCELLED"
        # The worker is free again: a new job completes, and neither cancelled job ever produced a result.
        after = client.post("runsync", params={"wait": 120_000}, json={"input": {"text": SHORT_TEXT}}).json()
        assert after["status"] == "COMPLETED", after
        for job_id in (running, queued):
            final = client.get(f"status/{job_id}").json()
            assert final["status"] == "CANCELLED" and "output" not in final
        assert "workerId" not in client.get(f"status/{queued}").json()


def test_execution_timeout_ends_a_job_timed_out(devstack):
    with api(devstack) as client:
        job = {"input": MANY_CHEAP_CHUNKS, "policy": {"executionTimeout": 1000}}
        job_id = client.post("run", json=job).json()["id"]
        done = wait_status(client, job_id, TERMINAL, timeout=120)
        assert done["status"] == "TIMED_OUT", done
        after = client.post("runsync", params={"wait": 120_000}, json={"input": {"text": SHORT_TEXT}}).json()
        assert after["status"] == "COMPLETED", after


def test_bad_input_fails_with_a_coded_error_string(devstack):
    with api(devstack) as client:
        body = client.post("runsync", json={"input": {"text": SHORT_TEXT, "fromat": "wav"}}).json()
    assert body["status"] == "FAILED"
    error = json.loads(body["error"])  # RunPod wants a string; ours is JSON of the contract's ErrorBody
    assert error["code"] == "invalid_input" and error["field"] == "fromat"


def test_a_voice_uploaded_from_the_local_bucket_is_used_for_synthesis(devstack):
    """Reference audio by URL from the local S3 on 127.0.0.1 (allowed in the devstack only)."""
    t = np.arange(24000 * 3) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > -0.5)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, 24000, format="WAV")
    s3 = devstack.s3_client()
    s3.put_object(Bucket=devstack.bucket, Key="uploads/me.wav", Body=buffer.getvalue())
    url = s3.generate_presigned_url("get_object", Params={"Bucket": devstack.bucket, "Key": "uploads/me.wav"})
    with api(devstack) as client:
        upload = {
            "action": "upload_voice",
            "name": "e2e-me",
            "audio": {"url": url},
            "text": "One two three.",
            "overwrite": True,
        }
        stored = client.post("runsync", json={"input": upload}).json()
        assert stored["status"] == "COMPLETED", stored
        assert stored["output"][0]["name"] == "e2e-me"
        spoken = client.post("runsync", json={"input": {"text": SHORT_TEXT, "voice": "e2e-me"}}).json()
    assert spoken["status"] == "COMPLETED", spoken
    assert spoken["output"][0]["voice"] == "e2e-me"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=devstack.bucket, Prefix="voices/e2e-me/")["Contents"]]
    assert "voices/e2e-me/meta.json" in keys


def test_the_real_worker_stack_wants_the_api_key(devstack):
    with api(devstack, key="") as anonymous:
        assert anonymous.post("runsync", json={"input": {"text": SHORT_TEXT}}).status_code == 401
    with api(devstack, key="not-the-key") as wrong:
        assert wrong.post("run", json={"input": {"text": SHORT_TEXT}}).status_code == 401
