"""The official `openai` SDK against the load-balancer devstack: RunPod's load balancer emulated in front of a
real worker in http mode (`F5TTS_SERVE=http`, tiny model). What an OpenAI-TTS app does, end to end."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support import decoded_seconds

pytestmark = pytest.mark.timeout(600)

F5 = {"seed": 11, "nfe_step": 4}  # F5-TTS's own fields, in the body (extra_body), as an app would send them
# Three text chunks of the built-in voice (its budget is about 160 characters; each sentence is 59).
LONG_TEXT = " ".join(["The fox runs far away into the forest to hide from the dog."] * 6)


@pytest.fixture(scope="module")
def client(lb_devstack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{lb_devstack.base_url}/v1", api_key=lb_devstack.api_key, max_retries=0, timeout=120)


def test_every_response_format_decodes(client):
    seconds = {}
    for fmt in ["mp3", "opus", "aac", "flac", "wav", "pcm"]:
        audio = client.audio.speech.create(
            model="tts-1", voice="default", input="Hello from F5.", response_format=fmt, extra_body=F5
        )
        if fmt == "pcm":  # 16-bit little-endian mono, 24 kHz, no header
            seconds[fmt] = len(audio.content) / 2 / 24000
        else:
            seconds[fmt] = decoded_seconds(audio.content)
    assert seconds["pcm"] > 0.3
    assert all(abs(s - seconds["pcm"]) < 0.12 for s in seconds.values()), seconds


def test_the_same_seed_in_extra_body_gives_the_same_bytes(client):
    def say(seed: int) -> bytes:
        return client.audio.speech.create(
            model="f5-tts",
            voice="default",
            input="Same seed, same audio.",
            response_format="flac",
            extra_body={**F5, "seed": seed},
        ).content

    first = say(5)
    assert say(5) == first
    assert say(6) != first


def test_a_streamed_response_starts_long_before_it_ends(client):
    request = {
        "model": "tts-1",
        "voice": "default",
        "input": LONG_TEXT,
        "response_format": "pcm",
        "extra_body": {"nfe_step": 4},
    }
    # A fresh worker's first long synthesis pays one-off costs (memory for the larger shapes) on its first chunk.
    client.audio.speech.create(**request)
    arrivals = []
    started = time.perf_counter()
    with client.audio.speech.with_streaming_response.create(**request) as response:
        assert response.headers["content-type"] == "audio/pcm"
        for data in response.iter_bytes(4800):
            arrivals.append((time.perf_counter() - started, len(data)))
    first, last = arrivals[0][0], arrivals[-1][0]
    audio_seconds = sum(n for _, n in arrivals) / 2 / 24000
    # The first text chunk's audio leaves as soon as it exists; the rest follows chunk by chunk.
    print(f"first byte {first:.2f} s, last {last:.2f} s, {audio_seconds:.1f} s of audio")
    assert first < 0.6 * last, (first, last, audio_seconds)


def test_unknown_voice_raises_the_sdks_not_found_error_with_our_code(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.audio.speech.create(model="tts-1", voice="nobody-here", input="Hi.")
    assert caught.value.status_code == 404
    assert caught.value.code == "voice_not_found" and caught.value.param == "voice"
    assert "nobody-here" in caught.value.message


def test_empty_input_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="default", input="")
    assert caught.value.code == "invalid_input" and caught.value.param == "input"


def test_a_wrong_key_raises_authentication_error(lb_devstack):
    wrong = openai.OpenAI(base_url=f"{lb_devstack.base_url}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.speech.create(model="tts-1", voice="default", input="Hi.")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_the_models_list_is_not_empty(client):
    models = [m.id for m in client.models.list()]
    assert "f5-tts" in models and "tts-1" in models
