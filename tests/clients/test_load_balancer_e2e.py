"""The project's own client (sync and async) and CLI against the load-balancer devstack: the endpoint type is
detected from the URL, jobs go over the worker's native route `POST /job`, results and errors come out as they do
from a queue endpoint."""

from __future__ import annotations

import io
import os
import subprocess

import f5tts_client as f5
import pytest
import soundfile as sf
from f5tts_client import cli
from f5tts_client._config import LOAD_BALANCER, QUEUE, detect_endpoint_type

from tests.clients.helpers import FAST, collect, resolve
from tests.support import run_python
from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]
QUICK = {"nfe_step": 4}
# Two text chunks of the built-in voice (its budget is about 160 characters; each sentence is 59).
TWO_CHUNKS = " ".join(["The fox runs far away into the forest to hide from the dog."] * 3)


@pytest.fixture(params=["sync", "async"])
def lb_client(request, lb_devstack):
    cls = f5.Client if request.param == "sync" else f5.AsyncClient
    return cls(api_key=lb_devstack.api_key, endpoint_url=lb_devstack.base_url, **FAST)


def test_the_endpoint_type_is_detected_from_the_url_or_configured(monkeypatch):
    monkeypatch.delenv("F5TTS_ENDPOINT_TYPE", raising=False)
    assert detect_endpoint_type("https://api.runpod.ai/v2/abc123") == QUEUE
    assert detect_endpoint_type("http://127.0.0.1:8000/v2/local") == QUEUE
    assert detect_endpoint_type("https://abc123.api.runpod.ai") == LOAD_BALANCER
    assert f5.Client(api_key="k", endpoint_id="abc123").settings.endpoint_type == QUEUE
    lb = f5.Client(api_key="k", endpoint_id="abc123", endpoint_type="load_balancer")
    assert lb.endpoint_url == "https://abc123.api.runpod.ai" and lb.settings.endpoint_type == LOAD_BALANCER
    monkeypatch.setenv("F5TTS_ENDPOINT_TYPE", "queue")
    assert f5.Client(endpoint_url="https://proxy.example/f5").settings.endpoint_type == QUEUE
    monkeypatch.setenv("F5TTS_ENDPOINT_TYPE", "fifo")
    with pytest.raises(f5.ConfigurationError):
        f5.Client(api_key="k", endpoint_id="abc123")


async def test_synthesize_voices_and_health_over_the_load_balancer(lb_client):
    assert lb_client.settings.endpoint_type == LOAD_BALANCER
    result = await resolve(
        lb_client.synthesize("Hello from the client.", seed=4, format="flac", delivery="base64", **QUICK)
    )
    audio = await resolve(result.read())
    samples, rate = sf.read(io.BytesIO(audio))
    assert rate == 24000 and len(samples) / rate == pytest.approx(result.duration, abs=0.01) and result.seed == 4
    by_url = await resolve(lb_client.synthesize("Hello from the bucket.", seed=4, **QUICK))  # the worker has a bucket
    assert by_url.audio_url and len(await resolve(by_url.read())) > 1000

    stored = await resolve(
        lb_client.voices.upload("lb-voice", builtin_audio_file(), text=BUILTIN_REFERENCE_TEXT, overwrite=True)
    )
    assert stored.name == "lb-voice"
    assert "lb-voice" in {v.name for v in await resolve(lb_client.voices.list())}
    assert (await resolve(lb_client.voices.delete("lb-voice"))).deleted is True
    assert (await resolve(lb_client.health())).status == "ok"


async def test_streaming_over_the_load_balancer_gives_every_chunk_in_order(lb_client):
    stream = lb_client.synthesize_stream(TWO_CHUNKS, seed=9, format="wav", **QUICK)
    chunks = await collect(stream)
    assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert stream.summary is not None and stream.summary.chunks == len(chunks) and stream.summary.seed == 9
    assert all(sf.info(io.BytesIO(c.audio)).frames > 0 for c in chunks)


async def test_errors_over_the_load_balancer_are_the_same_typed_exceptions(lb_client, lb_devstack):
    with pytest.raises(f5.VoiceNotFound) as caught:
        await resolve(lb_client.synthesize("Hi.", voice="nobody-here", **QUICK))
    assert caught.value.field == "voice"
    with pytest.raises(f5.InvalidInput):
        await resolve(lb_client.synthesize("Hi.", voice="default", ref_audio=b"RIFF", ref_text="x", **QUICK))
    wrong = type(lb_client)(api_key="not-the-key", endpoint_url=lb_devstack.base_url, **FAST)
    with pytest.raises(f5.AuthenticationError) as denied:
        await resolve(wrong.health())
    assert "not-the-key" not in str(denied.value)


def test_cli_against_the_load_balancer(lb_devstack, tmp_path):
    env = {**os.environ, "RUNPOD_API_KEY": lb_devstack.api_key, "F5TTS_ENDPOINT_URL": lb_devstack.base_url}
    env.pop("F5TTS_ENDPOINT_ID", None)
    env.pop("F5TTS_ENDPOINT_TYPE", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_python("-m", "f5tts_client.cli", *args, cwd=tmp_path, env=env, timeout=180)

    said = run("say", "Hello from the shell.", "-o", "hello.mp3", "--nfe-step", "4", "--seed", "3")
    assert said.returncode == 0, said.stderr
    assert (tmp_path / "hello.mp3").stat().st_size > 0 and "seed 3" in said.stdout
    streamed = run("say", TWO_CHUNKS, "--stream", "-o", "story.wav", "--nfe-step", "4")
    assert streamed.returncode == 0, streamed.stderr
    assert sf.info(str(tmp_path / "story.wav")).frames > 0
    missing = run("voices", "rm", "nobody-here")
    assert missing.returncode == cli.EXIT_NOT_FOUND and "voice_not_found" in missing.stderr
