"""ElevenLabs' realtime text input (`WS /elevenlabs/v1/text-to-speech/{voice_id}/stream-input`), in-process on
the tiny model: the protocol (sentences spoken as they complete, flush, the end), alignment of exactly the
characters sent, seeds, and every bad input closing the session with an error and freeing its synthesis slot.

The same route through the load-balancer devstack, with a plain `websockets` client and the official SDK's
`convert_realtime`, is tested in tests/clients/test_elevenlabs_realtime_e2e.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.support import ffmpeg_decode
from tests.worker.helpers import TEST_MAX_AUDIO_BYTES
from worker.config import HttpSettings, ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.http_server import create_app
from worker.http_server.elevenlabs_realtime import TextBuffer
from worker.schema import MAX_TEXT_CHARS
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(300)

ROUTE = "/elevenlabs/v1/text-to-speech/{voice}/stream-input"
OPEN = {"text": " ", "voice_settings": {"speed": 1.0}, "generation_config": {"chunk_length_schedule": [50]}}
QUICK = {"nfe_step": 4, "seed": 3}
FIRST = "Hello there, this is the first sentence. "
SECOND = "And here is a second one"


def make_client(engine, tmp_path, **worker: Any) -> TestClient:
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path, max_audio_bytes=TEST_MAX_AUDIO_BYTES, **worker),
        http=HttpSettings(_env_file=None),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return TestClient(create_app(service, settings, start_service=False))


@pytest.fixture
def client(engine, tmp_path) -> Iterator[TestClient]:
    with make_client(engine, tmp_path, concurrency=1, busy_wait_s=0.5) as client:
        yield client


def url(voice: str = "default", **query: object) -> str:
    return ROUTE.format(voice=voice) + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def until_close(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every message up to the close, and the close code."""
    messages: list[dict[str, Any]] = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message["code"]
        messages.append(json.loads(message["text"]))


def pcm(message: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(message["audio"]), dtype="<i2")


def check_alignment(message: dict[str, Any], sample_rate: int) -> None:
    """Both alignments: parallel lists, times within the message's own audio, in order."""
    duration_ms = pcm(message).size / sample_rate * 1000
    for key in ("alignment", "normalizedAlignment"):
        alignment = message[key]
        chars, starts, durations = alignment["chars"], alignment["charStartTimesMs"], alignment["charDurationsMs"]
        assert len(chars) == len(starts) == len(durations) > 0
        assert starts == sorted(starts) and min(durations) >= 0
        assert all(s + d <= duration_ms + 1 for s, d in zip(starts, durations, strict=True))


def test_sentences_are_spoken_as_they_complete_then_flush_and_the_end(client):
    with client.websocket_connect(url(output_format="pcm_24000")) as ws:
        ws.send_json({**OPEN, **QUICK})
        ws.send_json({"text": FIRST[:20]})
        ws.send_json({"text": FIRST[20:]})
        first = ws.receive_json()  # the first sentence is spoken before any more text is sent
        check_alignment(first, 24000)
        assert "".join(first["alignment"]["chars"]) == FIRST
        ws.send_json({"text": SECOND, "flush": True})  # no sentence end: flush speaks it now
        second = ws.receive_json()
        assert "".join(second["alignment"]["chars"]) == SECOND
        ws.send_json({"text": ""})
        rest, code = until_close(ws)
    assert rest == [{"isFinal": True}] and code == 1000
    check_alignment(second, 24000)
    assert "".join(second["normalizedAlignment"]["chars"]) == SECOND
    assert pcm(first).size > 0 and pcm(second).size > 0


def test_the_same_seed_gives_the_same_audio_and_the_messages_join_into_one_stream(client):
    def session(output_format: str) -> list[bytes]:
        with client.websocket_connect(url(output_format=output_format)) as ws:
            ws.send_json({**OPEN, **QUICK})
            ws.send_json({"text": FIRST, "flush": True})
            ws.send_json({"text": SECOND})
            ws.send_json({"text": ""})
            messages, code = until_close(ws)
        assert code == 1000 and messages[-1] == {"isFinal": True} and len(messages) >= 3  # two parts at least
        return [base64.b64decode(m["audio"]) for m in messages[:-1]]

    pcm_24k = b"".join(session("pcm_24000"))
    assert b"".join(session("pcm_24000")) == pcm_24k
    seconds = len(pcm_24k) / 2 / 24000
    assert len(b"".join(session("pcm_16000"))) / 2 / 16000 == pytest.approx(seconds, abs=0.01)
    assert len(b"".join(session("ulaw_8000"))) / 8000 == pytest.approx(seconds, abs=0.01)  # a byte a sample
    wav = session("wav_24000")
    assert wav[0][:4] == b"RIFF" and all(piece[:4] != b"RIFF" for piece in wav[1:])
    assert b"".join(wav)[44:] == pcm_24k
    for output_format in ("mp3_44100_128", "mp3_22050_32", "opus_48000_64"):
        # Each piece adds its encoder's padding (MP3: about 50 ms).
        assert ffmpeg_decode(b"".join(session(output_format)), quiet=True).size / 24000 == pytest.approx(
            seconds, abs=0.2
        )


def test_text_buffer_keeps_short_sentences_for_more_and_paragraph_pauses():
    buffer = TextBuffer()
    buffer.add(" Hi. ")
    assert buffer.take_sentences() is None  # under the plan's floor: F5 garbles a lone "Hi."
    buffer.add("How are you doing today? I am")
    part = buffer.take_sentences()
    assert part is not None and part.text == "Hi. How are you doing today? " and buffer.pending == "I am"
    buffer.add(" doing fine, thank you.\n\nNext")
    part = buffer.take_sentences()
    assert (
        part is not None
        and part.spoken == 'I am doing fine, thank you.<break time="0.6s"/>'
        and buffer.pending == "Next"
    )
    with pytest.raises(Exception, match="characters are waiting"):
        buffer.add("x" * MAX_TEXT_CHARS)


def refused(client: TestClient, path: str, *messages: object) -> tuple[dict[str, Any], int]:
    """The error message a session ends with, and its close code."""
    with client.websocket_connect(path) as ws:
        for message in messages:
            ws.send_text(message if isinstance(message, str) else json.dumps(message))
        received, code = until_close(ws)
    assert len(received) >= 1 and "audio" not in received[-1]
    return received[-1], code


def assert_slot_is_free(client: TestClient) -> None:
    """A next session gets the one slot (busy_wait_s is 0.5 s: a leaked slot would refuse it)."""
    with client.websocket_connect(url(output_format="pcm_24000")) as ws:
        ws.send_json({**OPEN, **QUICK})
        ws.send_json({"text": FIRST})
        ws.send_json({"text": ""})
        messages, code = until_close(ws)
    assert code == 1000 and "audio" in messages[0]


def test_bad_input_gets_an_error_and_a_close_code_and_frees_the_slot(client):
    cases: list[tuple[str, list[object], str, int]] = [
        # (path, messages, error code, close code)
        (url(), ["{not json"], "invalid_input", 1007),
        (url(), [{**OPEN, **QUICK}, "not json either"], "invalid_input", 1007),  # mid-session, slot held
        (url("no-such-voice"), [OPEN], "voice_not_found", 1008),
        (url("JBFqnCBsd6RMkjVDRZzb"), [OPEN], "voice_not_found", 1008),  # an ElevenLabs id
        (url(output_format="mp3_1_2"), [OPEN], "invalid_input", 1008),
        (url(inactivity_timeout=999), [OPEN], "invalid_input", 1008),
        (url(), [{**OPEN, "nfe_step": 1000}], "invalid_input", 1008),
        (url(), [{**OPEN, **QUICK}, {"text": "word " * (MAX_TEXT_CHARS // 5 + 1)}], "invalid_input", 1008),
        (url(), [{**OPEN, **QUICK}, {"text": '<break time="1s"'}, {"text": ""}], "invalid_input", 1008),
        (url(), [{**OPEN, **QUICK}, {"text": "<speak>Hello there, how are you today? "}], "invalid_input", 1008),
        (url(), [{"flush": True}], "invalid_input", 1008),
    ]
    for path, messages, error, close_code in cases:
        message, code = refused(client, path, *messages)
        assert (message["error"], code, message["code"]) == (error, close_code, close_code), (path, messages)
        assert message["message"]
    assert_slot_is_free(client)


def test_a_silent_client_is_closed_after_the_inactivity_timeout_and_frees_the_slot(client):
    message, code = refused(client, url(inactivity_timeout=1), {**OPEN, **QUICK}, {"text": "Still thinking"})
    assert (message["error"], code) == ("input_timeout_exceeded", 1008) and "1 s" in message["message"]
    assert_slot_is_free(client)


def test_a_session_holds_its_slot_and_a_second_one_is_told_to_retry(client):
    with client.websocket_connect(url()) as holder:
        holder.send_json({**OPEN, **QUICK})  # the slot is held from here, with no text yet
        message, code = refused(client, url(), {**OPEN, **QUICK})
        assert (message["error"], code) == ("overloaded", 1013)
        holder.send_json({"text": ""})
        _, code = until_close(holder)
        assert code == 1000
    assert_slot_is_free(client)


def test_a_client_that_goes_away_mid_speech_frees_the_slot(client):
    with client.websocket_connect(url(output_format="pcm_24000")) as ws:
        ws.send_json({**OPEN, **QUICK})
        ws.send_json({"text": FIRST + FIRST + FIRST, "flush": True})
    assert_slot_is_free(client)


def test_the_key_is_checked_from_the_handshake_or_the_first_message(engine, tmp_path):
    with make_client(engine, tmp_path, api_key=SecretStr("sesame"), busy_wait_s=0.5) as client:
        message, code = refused(client, url(), OPEN)
        assert (message["error"], code) == ("invalid_api_key", 1008)
        message, code = refused(client, url(), {**OPEN, "xi-api-key": "wrong"})
        assert (message["error"], code) == ("invalid_api_key", 1008)
        for headers, first in (
            ({"xi-api-key": "sesame"}, OPEN),
            ({"Authorization": "Bearer sesame"}, OPEN),
            ({}, {**OPEN, "xi-api-key": "sesame"}),
            ({}, {**OPEN, "authorization": "Bearer sesame"}),
        ):
            with client.websocket_connect(url(), headers=headers) as ws:
                ws.send_json({**first, **QUICK})
                ws.send_json({"text": ""})  # nothing to speak: the session ends at once
                messages, code = until_close(ws)
            assert (messages, code) == ([{"isFinal": True}], 1000), headers
