"""ElevenLabs' realtime text input (`WS /elevenlabs/v1/text-to-speech/{voice_id}/stream-input`), in-process on
the tiny model: the protocol (sentences spoken as they complete, flush, the end), alignment of exactly the
characters sent, seeds, and every bad input closing the session with an error and freeing its synthesis slot.

The same route through the load-balancer devstack, with a plain `websockets` client and the official SDK's
`convert_realtime`, is tested in tests/clients/test_elevenlabs_realtime_e2e.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.hostile_http import connect
from tests.support import ffmpeg_decode
from tests.worker.helpers import TEST_MAX_AUDIO_BYTES, counting_chunks, serving
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


def make_service(engine, tmp_path, **worker: Any) -> WorkerService:
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path, max_audio_bytes=TEST_MAX_AUDIO_BYTES, **worker),
        http=HttpSettings(_env_file=None),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


def make_client(engine, tmp_path, **worker: Any) -> TestClient:
    service = make_service(engine, tmp_path, **worker)
    return TestClient(create_app(service, service.settings, start_service=False))


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


# ------------------------------------------------------------------------------------------------ a real server
# uvicorn on 127.0.0.1 and a `websockets` client. TestClient cancels the app's task when a test leaves its `with`,
# which frees the slot whatever the session does; a real server leaves it to the session to notice a client gone.
LONG = " ".join(["The fox runs far away into the forest to hide from the dog."] * 20)  # ten chunks or so


@pytest.fixture
def served(engine, tmp_path) -> Iterator[tuple[int, WorkerService]]:
    """The app on a real server, with one slot (a request waits 0.5 s for it) and a send timeout of 1 s."""
    service = make_service(engine, tmp_path, concurrency=1, busy_wait_s=0.5, send_timeout_s=1.0)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        yield port, service


def open_ws(port: int, path: str, **options: Any) -> ClientConnection:
    return ws_connect(f"ws://127.0.0.1:{port}{path}", proxy=None, open_timeout=10, **options)


def closing(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every message up to the server's close, and its close code."""
    messages = []
    with pytest.raises(ConnectionClosed):
        while True:
            messages.append(json.loads(ws.recv(timeout=60)))
    return messages, ws.close_code


def seconds_until_the_slot_is_free(port: int, within_s: float) -> float:
    """How long until a new session gets the one slot and speaks (each try waits at most busy_wait_s for it)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        with open_ws(port, url(output_format="pcm_24000")) as probe:
            probe.send(json.dumps({**OPEN, **QUICK}))
            probe.send(json.dumps({"text": FIRST, "flush": True}))
            answer = json.loads(probe.recv(timeout=60))
        if "audio" in answer:
            return time.monotonic() - started
        assert answer["error"] == "overloaded", answer
    raise AssertionError(f"the slot was not free within {within_s} s")


def test_a_client_that_goes_away_mid_speech_or_between_sentences_frees_the_slot_at_once(served):
    port, service = served
    chunks = counting_chunks(service)
    with open_ws(port, url(output_format="pcm_24000")) as ws:  # gone after the first of ten chunks
        ws.send(json.dumps({**OPEN, **QUICK}))
        ws.send(json.dumps({"text": LONG, "flush": True}))
        assert "audio" in json.loads(ws.recv(timeout=60))
    made_at_close = len(chunks)
    assert seconds_until_the_slot_is_free(port, within_s=10) < 3
    assert len(chunks) <= made_at_close + 3, (made_at_close, len(chunks))  # the abandoned text stopped; the probe's
    with open_ws(port, url(output_format="pcm_24000")) as ws:  # gone while the session waits for more text
        ws.send(json.dumps({**OPEN, **QUICK}))
        ws.send(json.dumps({"text": FIRST, "flush": True}))
        assert "audio" in json.loads(ws.recv(timeout=60))
    # A session that missed the close would hold the slot for its inactivity timeout (20 s).
    assert seconds_until_the_slot_is_free(port, within_s=10) < 3


def test_a_client_that_stops_reading_mid_speech_is_dropped_after_the_send_timeout(served, caplog):
    port, _ = served
    # A small receive window, and a client that stops reading from its socket once it holds one message: the
    # server's sends block within the next one or two (each piece is about 200 kB of base64 audio).
    sock = connect(port, receive_buffer=4096)
    slow = open_ws(port, url(output_format="pcm_24000"), sock=sock, max_queue=1)
    slow.send(json.dumps({**OPEN, **QUICK}))
    slow.send(json.dumps({"text": LONG, "flush": True}))
    started = time.monotonic()
    while "dropped a client" not in caplog.text and time.monotonic() - started < 15:
        time.sleep(0.02)
    assert "took no response data for 1 s: WebSocket /elevenlabs/" in caplog.text  # not uvicorn's ping, 40 s on
    messages, code = closing(slow)  # read now: what was sent, then the close (the frame waited behind the data)
    assert code == 1008 and messages and all("audio" in m for m in messages)
    assert seconds_until_the_slot_is_free(port, within_s=10) < 3


def test_a_message_nested_past_the_json_parsers_depth_is_invalid_input_without_a_traceback(served, caplog):
    port, _ = served
    with open_ws(port, url()) as ws:
        ws.send("[" * 100_000 + "]" * 100_000)
        messages, code = closing(ws)
    assert (messages[-1]["error"], code) == ("invalid_input", 1007)
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_a_seed_past_f5s_range_is_folded_as_the_rest_routes_fold_it(served):
    port, _ = served
    seed = 2**32 - 1  # ElevenLabs' largest; F5's seeds are below 2**31

    def realtime(query_seed: int | None, message_seed: int | None) -> bytes:
        query: dict[str, object] = {"output_format": "pcm_24000"}
        if query_seed is not None:
            query["seed"] = query_seed
        opening = {**OPEN, "nfe_step": 4} | ({"seed": message_seed} if message_seed is not None else {})
        with open_ws(port, url("default", **query)) as ws:
            ws.send(json.dumps(opening))
            ws.send(json.dumps({"text": FIRST}))
            ws.send(json.dumps({"text": ""}))
            messages, code = closing(ws)
        assert code == 1000, messages
        return b"".join(base64.b64decode(m["audio"]) for m in messages[:-1])

    rest = httpx.post(
        f"http://127.0.0.1:{port}/elevenlabs/v1/text-to-speech/default?output_format=pcm_24000",
        json={"text": FIRST, "seed": seed, "nfe_step": 4},
        timeout=60,
    )
    assert rest.status_code == 200 and rest.headers["x-seed"] == str(seed % 2**31)
    assert realtime(seed, None) == realtime(None, seed) == rest.content == realtime(seed % 2**31, None)
