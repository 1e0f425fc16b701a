"""Dockerfile.runpod built for real (tests/image/conftest.py) and run: the jobs of a deploy, inside the image, as
its own user, on the tiny model with no settings but F5TTS_DEVICE=cpu (no GPU here). RunPod's side is the
devstack's: the queue emulator, the load-balancer emulator and the local S3, on this machine's loopback. That the
image cannot reach the Hugging Face Hub is a test of its own (with a stand-in Hub on loopback)."""

from __future__ import annotations

import base64
import io
import socketserver
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile

from devstack.testing import running_stack
from tests.devstack.helpers import TERMINAL, api, wait_status, wait_until
from tests.image.conftest import BUILD_TIMEOUT_S, BuiltImage

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 900)  # the first test waits for the session's build
CPU = {"F5TTS_DEVICE": "cpu"}
TEXT = "Hello from inside the image."
# The only places the worker may write: its data directory (the default, under its HOME) and /tmp.
WRITABLE = ("/home/worker/.cache/f5tts-worker/", "/tmp/")


def _name() -> str:
    return f"f5tts-test-{uuid.uuid4().hex[:8]}"


@contextmanager
def hub_that_records() -> Iterator[tuple[str, list[str]]]:
    """A stand-in Hugging Face endpoint on loopback that records each request and answers 404 at once."""
    seen: list[str] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(200).decode("latin-1"))
            self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _worker_cmd(built_image: BuiltImage, name: str, env: dict[str, str]) -> list[str]:
    """The devstack's worker command: the image's own CMD, in a container `name`."""
    cmd = built_image.containers.config(built_image.tag)["Cmd"]
    overrides = [f"--env={key}={value}" for key, value in env.items()]
    launch = [
        sys.executable,
        "-m",
        "tests.image.containers",
        "launch",
        built_image.containers.builder,
        built_image.tag,
        name,
    ]
    return [*launch, *overrides, "--", *cmd]


def _assert_wrote_only_its_data_and_tmp(built_image: BuiltImage, name: str) -> None:
    # (`docker diff` also lists the directories above what changed: /home, /home/worker, ...)
    changed = [
        path for path in built_image.containers.changes(name) if not any(w.startswith(path + "/") for w in WRITABLE)
    ]
    assert [path for path in changed if not path.startswith(WRITABLE)] == []


def _wav(seconds: float = 3.0) -> bytes:
    t = np.arange(int(24000 * seconds)) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > -0.5)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, 24000, format="WAV")
    return buffer.getvalue()


def test_the_healthcheck_passes_as_the_image_user(built_image: BuiltImage) -> None:
    config = built_image.containers.config(built_image.tag)
    assert config["User"] == "1000:1000"
    kind, *healthcheck = config["Healthcheck"]["Test"]
    assert kind == "CMD"
    result = built_image.containers.run(
        built_image.tag, _name(), ["sh", "-c", 'id -u && exec "$@"', "sh", *healthcheck]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    uid, verdict = result.stdout.splitlines()
    assert uid == "1000"
    assert verdict == "prefetch: weights for F5TTS_tiny, the vocoder and the aligner are cached"


def test_the_self_check_says_the_attention_is_torchs_without_flash_attn(built_image: BuiltImage) -> None:
    result = built_image.containers.run(
        built_image.tag, _name(), ["python", "-m", "worker.handler", "--self-check"], env=CPU
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "self-check ok   flash-attn: skipped (F5TTS_ATTN_BACKEND=torch: the DiT runs on torch's attention)" in lines
    assert any(line.startswith("self-check ok   model files: F5TTS_tiny:") for line in lines), lines
    assert "self-check ok   device: F5TTS_DEVICE=cpu -> cpu (CPU), dtype float32" in lines


# A Hub download as any library in the image would make it (huggingface_hub, which f5-tts and the worker use).
HUB_DOWNLOAD = """
import time, huggingface_hub
started = time.monotonic()
try:
    huggingface_hub.hf_hub_download("SWivid/F5-TTS", "F5TTS_v1_Base/vocab.txt")
    outcome = "downloaded"
except Exception as exc:
    outcome = type(exc).__name__
print(outcome, round(time.monotonic() - started, 2))
"""


def test_the_image_is_offline_for_the_hub(built_image: BuiltImage) -> None:
    """HF_HUB_OFFLINE=1 is in the image's own environment, and holds: a Hub download attempted in the container
    fails at once without a connection to the (stand-in) Hub, which the same download does reach with it off."""
    env = dict(entry.split("=", 1) for entry in built_image.containers.config(built_image.tag)["Env"])
    assert env["HF_HUB_OFFLINE"] == "1"
    with hub_that_records() as (hub, seen):
        offline = built_image.containers.run(
            built_image.tag, _name(), ["python", "-c", HUB_DOWNLOAD], {"HF_ENDPOINT": hub}
        )
        assert offline.returncode == 0, offline.stderr
        outcome, seconds = offline.stdout.split()
        assert outcome == "LocalEntryNotFoundError" and float(seconds) < 5 and seen == []
        online = built_image.containers.run(
            built_image.tag, _name(), ["python", "-c", HUB_DOWNLOAD], {"HF_ENDPOINT": hub, "HF_HUB_OFFLINE": "0"}
        )
        assert online.returncode == 0, online.stderr
        assert online.stdout.split()[0] != "downloaded"
        assert any("/SWivid/F5-TTS/" in request for request in seen), seen  # the stand-in is reachable from inside


def test_the_queue_worker_runs_jobs_through_runpods_loop(built_image: BuiltImage) -> None:
    name = _name()
    try:
        cmd = _worker_cmd(built_image, name, CPU)
        with running_stack(worker_cmd=cmd, respawn=False, ready_timeout_s=600) as stack, api(stack, 120) as client:
            spoken = client.post("runsync", json={"input": {"text": TEXT, "seed": 5}}).json()
            assert spoken["status"] == "COMPLETED", f"{spoken}\n{stack.log_tails()}"
            (result,) = spoken["output"]
            assert result["audio_url"].startswith(stack.s3_endpoint)
            audio = httpx.get(result["audio_url"], timeout=30)
            audio.raise_for_status()
            samples, rate = soundfile.read(io.BytesIO(audio.content), dtype="float32")
            assert rate == result["sample_rate"] == 24000
            assert abs(len(samples) / rate - result["duration"]) < 0.05 and np.abs(samples).max() > 0

            upload = {
                "action": "upload_voice",
                "name": "in-image",
                "audio": {"base64": base64.b64encode(_wav()).decode()},
                "text": "One two three.",
            }
            stored = client.post("runsync", json={"input": upload}).json()
            assert stored["status"] == "COMPLETED", stored
            listed = client.post("runsync", json={"input": {"action": "list_voices"}}).json()
            assert listed["status"] == "COMPLETED", listed
            assert "in-image" in [voice["name"] for voice in listed["output"][0]["voices"]]

            job = {"text": "Hello world. " * 13, "voice": "in-image", "stream": True, "format": "pcm"}
            job_id = client.post("run", json={"input": job}).json()["id"]
            chunks: list[dict[str, object]] = []

            def drained() -> bool:
                body = client.get(f"stream/{job_id}").json()
                chunks.extend(entry["output"] for entry in body["stream"])
                return body["status"] in TERMINAL and not body["stream"]

            wait_until(drained, 300, "the streamed job to end", interval=0.2)
            final = wait_status(client, job_id, TERMINAL)
            assert final["status"] == "COMPLETED", final
            assert len(chunks) >= 2 and final["output"] == chunks
        _assert_wrote_only_its_data_and_tmp(built_image, name)
    finally:
        built_image.containers.remove(name)


def test_the_http_mode_answers_behind_the_load_balancer(built_image: BuiltImage) -> None:
    name = _name()
    try:
        cmd = _worker_cmd(built_image, name, CPU)  # the load-balancer stack sets F5TTS_SERVE=http, PORT and PORT_HEALTH
        with running_stack(endpoint_type="load_balancer", worker_cmd=cmd, ready_timeout_s=600) as stack:
            headers = {"Authorization": f"Bearer {stack.api_key}"}
            with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as client:
                assert client.get("/ping").status_code == 200
                speech = client.post(
                    "/v1/audio/speech", json={"input": TEXT, "voice": "default", "response_format": "wav"}
                )
            assert speech.status_code == 200, speech.text
            samples, rate = soundfile.read(io.BytesIO(speech.content), dtype="float32")
            assert rate == 24000 and len(samples) > 0 and np.abs(samples).max() > 0
        _assert_wrote_only_its_data_and_tmp(built_image, name)
    finally:
        built_image.containers.remove(name)
