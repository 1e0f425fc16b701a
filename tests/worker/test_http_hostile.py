"""The http mode under hostile and careless clients, through real sockets against the app under uvicorn on
127.0.0.1 (the server options `worker.http_server.serve` uses): a client that goes away while the server is
blocked sending, one that never reads, chunked bodies and headers without end, deep JSON, echoed input, redirects
and text with nothing to speak. Limits are set small through the settings so that each case is quick.

The same cases through the load-balancer emulator are in tests/devstack/test_load_balancer_hostile.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.hostile_http import (
    chunk,
    closed_by_server,
    connect,
    json_request,
    peak_rss_growth,
    read_response,
    request_head,
    send_endlessly,
)
from tests.worker.test_http_server import settings_for, speech_body
from worker.engine import Engine
from worker.http_server import create_app
from worker.http_wire import bounded_server_options
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(240)

MB = 2**20
# Enough text for a stream of several chunks, each far larger than what a 4 kB receive window and the kernel's
# buffers take: the server is blocked sending within the first chunk.
LONG_TEXT = " ".join(["The fox runs far away into the forest to hide from the dog."] * 20)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """`app` under uvicorn on a free loopback port (a thread of this process), stopped on exit; yields the port.

    Its connections have a small kernel send buffer (accepted sockets inherit it from the listening one), as a
    busy host's may be: loopback's would otherwise grow to megabytes, and a test would need that much audio
    before the server blocks sending to a client that does not read."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **bounded_server_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def started_service(engine: Engine, tmp_path: Path, **worker: Any) -> WorkerService:
    service = WorkerService(settings_for(tmp_path, **worker), engine_factory=lambda: engine)
    service.start()
    return service


def counting_chunks(service: WorkerService) -> list[object]:
    """The engine chunks the service makes from now on, as the inference thread makes them."""
    made: list[object] = []
    original = service._sampled_in_groups

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in original(*args, **kwargs):
            made.append(item)
            yield item

    service._sampled_in_groups = counting  # type: ignore[method-assign]
    return made


def wait_for_a_free_slot(port: int, within_s: float) -> list[int]:
    """Statuses of short speech requests, one every 0.1 s, until one is 200 or `within_s` has passed."""
    statuses: list[int] = []
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        body = speech_body(response_format="pcm")
        statuses.append(httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=body, timeout=60).status_code)
        if statuses[-1] == 200:
            break
        time.sleep(0.1)
    return statuses


def ffmpeg_children() -> list[int]:
    """The ids of this process's live ffmpeg children (encoders of streamed responses)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            alive = not fields.get("State", "").startswith(("Z", "X"))
            if (
                fields.get("Name", "").strip() == "ffmpeg"
                and fields.get("PPid", "").strip() == str(os.getpid())
                and alive
            ):
                found.append(int(status.parent.name))
    return found


@contextlib.contextmanager
def no_garbage_collection() -> Iterator[None]:
    """Only reference counting frees objects in the block: what waits for the collector stays (as it may for
    minutes in a worker), so a release that depends on it shows."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def start_blocked_stream(port: int, response_format: str, chunks_made: list[object]) -> socket.socket:
    """A speech stream to a client with a 4 kB receive window that has read only the status line, once the
    server is blocked sending: three chunks' audio (over 100 kB even as mp3) is more than the window and the
    buffers on the way take."""
    sock = connect(port, receive_buffer=4096)
    body = speech_body(input=LONG_TEXT, response_format=response_format, nfe_step=4)
    sock.sendall(json_request("/v1/audio/speech", body))
    assert sock.recv(20).startswith(b"HTTP/1.1 200")
    end = time.monotonic() + 60
    while len(chunks_made) < 3 and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.5)  # the third chunk's audio reaches the send, which waits
    return sock


# ------------------------------------------------------------------------------------------------ fault 1
@pytest.mark.parametrize("response_format", ["wav", "mp3"])
def test_a_client_gone_while_the_server_is_blocked_sending_frees_its_slot_at_once(
    engine: Engine, tmp_path: Path, response_format: str
) -> None:
    service = started_service(engine, tmp_path, concurrency=1, busy_wait_s=0.1)
    chunks_made = counting_chunks(service)
    with no_garbage_collection(), serving(create_app(service, service.settings, start_service=False)) as port:
        sock = start_blocked_stream(port, response_format, chunks_made)
        if response_format == "mp3":
            assert ffmpeg_children(), "the mp3 stream runs an ffmpeg encoder"
        sock.close()
        made_at_close = len(chunks_made)
        statuses = wait_for_a_free_slot(port, within_s=15)
        assert statuses[-1] == 200, statuses
        assert not ffmpeg_children()  # the abandoned stream's encoder is gone, not orphaned
    # The abandoned job (of ten chunks) stopped after the chunk it was computing; the second request made one.
    assert len(chunks_made) <= made_at_close + 2, (made_at_close, len(chunks_made))


# ------------------------------------------------------------------------------------------------ fault 2
def test_a_client_that_stays_connected_and_never_reads_is_dropped_after_the_send_timeout(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = started_service(engine, tmp_path, concurrency=1, busy_wait_s=0.1, send_timeout_s=1.0)
    chunks_made = counting_chunks(service)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        sock = start_blocked_stream(port, "mp3", chunks_made)
        started = time.monotonic()
        statuses = wait_for_a_free_slot(port, within_s=15)
        freed_after_s = time.monotonic() - started
        assert statuses[-1] == 200, statuses
        assert freed_after_s < 8, freed_after_s  # the send timeout (1 s), not the client, ended it
        assert closed_by_server(sock, deadline_s=10)  # the slow client was dropped
        assert not ffmpeg_children()
        sock.close()
    assert "took no response data for 1 s" in caplog.text


# ------------------------------------------------------------------------------------------------ fault 3
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/job", "/v1/audio/voices"])
def test_a_chunked_body_is_counted_as_it_arrives_and_refused_at_the_limit(
    engine: Engine, tmp_path: Path, path: str
) -> None:
    service = started_service(engine, tmp_path, max_request_bytes=1 * MB)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        sock = connect(port)
        head = request_head("POST", path, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}) + chunk(
            b'{"input": "'
        )
        with peak_rss_growth() as growth:
            sender = send_endlessly(sock, head, chunk(b"a" * 65536), total_bytes=64 * MB)
            response = read_response(sock)
            sock.close()
            sender.join(30)
    assert response.status == 413, response.body
    error = response.json()["error"]
    assert error["code"] == "audio_too_large" and "1 MB" in error["message"]
    # A server that read the body whole would have taken 64 MB; this one held at most about the limit.
    assert growth() < 24 * MB, growth() / MB


def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(engine: Engine, tmp_path: Path) -> None:
    service = started_service(engine, tmp_path, max_request_bytes=1 * MB)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        sock = connect(port)
        sock.sendall(request_head("POST", "/job", {"Content-Length": str(2 * MB), "Content-Type": "application/json"}))
        response = read_response(sock)
        sock.close()
        small = httpx.post(f"http://127.0.0.1:{port}/job", json={"input": {"action": "health"}})
    assert response.status == 413 and response.json()["error"]["code"] == "audio_too_large"
    assert small.status_code == 200  # under the limit, a body is read as before


# ------------------------------------------------------------------------------------------------ fault 4
def test_a_header_without_end_is_refused_with_431_and_memory_stays_flat(engine: Engine, tmp_path: Path) -> None:
    service = started_service(engine, tmp_path)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        sock = connect(port)
        with peak_rss_growth() as growth:
            sender = send_endlessly(sock, b"GET /v1/models HTTP/1.1\r\nX-Big: ", b"a" * 65536, total_bytes=64 * MB)
            response = read_response(sock)
            sender.join(30)
        sock.close()
        after = httpx.get(f"http://127.0.0.1:{port}/v1/models")
    assert response.status == 431
    assert growth() < 16 * MB, growth() / MB
    assert after.status_code == 200  # the server still serves
    assert json.loads(after.text)["object"] == "list"


# ------------------------------------------------------------------------------------------------ faults 5, 6, 8, 10
@pytest.fixture
def port(engine: Engine, tmp_path: Path) -> Iterator[int]:
    service = started_service(engine, tmp_path)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        yield port


def deep_json(depth: int) -> bytes:
    return b'{"name": "deep", "text": "x", "audio": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("path", ["/v1/audio/voices", "/v1/audio/speech", "/job"])
def test_json_nested_past_the_parsers_depth_is_a_400_not_a_500(
    port: int, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{port}{path}", content=deep_json(100_000), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/audio/speech", {**speech_body(), "k" * 100_000: 1}),
        ("/v1/audio/speech", speech_body(model="m" * 100_000)),
        ("/v1/audio/voices", {"name": "v", "audio": {"url": "http://x"}, "k" * 100_000: 1}),
        ("/job", {"input": {"text": "hi", "k" * 100_000: 1}}),
        ("/job", {"input": {"action": "a" * 100_000}}),
    ],
)
def test_error_messages_quote_caller_input_cut_short(port: int, path: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"http://127.0.0.1:{port}{path}", json=body)
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert len(answer.content) < 2000, len(answer.content)  # not the 100 kB that was sent
    assert error["param"] is None or len(error["param"]) <= 81


def test_a_long_unknown_path_is_quoted_cut_short(port: int) -> None:
    answer = httpx.get(f"http://127.0.0.1:{port}/v1/{'p' * 30_000}")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert len(answer.content) < 2000


@pytest.mark.parametrize("path", ["/v1/audio/speech/", "/v1/models/", "/job/", "/v1/audio/voices/"])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_workers_own_address(port: int, path: str) -> None:
    answer = httpx.request(
        "GET" if "models" in path else "POST", f"http://127.0.0.1:{port}{path}", json=speech_body(), timeout=30
    )
    assert answer.status_code == 404, (answer.status_code, answer.headers)
    assert "location" not in answer.headers
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "text",
    [
        "\u200b\u200b\u200b\u200b",  # zero-width spaces
        "\u200d\ufeff\u2060",  # joiner, byte-order mark, word joiner
        "\u0301\u0301\u0301\u0308",  # combining marks with nothing to combine with
        "\x07\x01\x02\x1b",  # control characters
        "\U0001f600\U0001f680",  # emoji
        "   \n\t ",  # whitespace
        "\u200b \x07 \u0301",  # all of them at once
    ],
)
def test_text_with_nothing_to_speak_is_a_400_naming_input(port: int, text: str) -> None:
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=speech_body(input=text), timeout=60)
    assert answer.status_code == 400, (answer.status_code, len(answer.content))
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and error["param"] == "input", error
    assert "nothing to speak" in error["message"] and "text" not in error["message"]


def test_unspoken_characters_inside_speakable_text_are_dropped_and_it_is_spoken(port: int) -> None:
    plain = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=speech_body(response_format="pcm"))
    noisy_input = speech_body()["input"].replace(" ", " \u200b\x07 ")
    noisy = httpx.post(
        f"http://127.0.0.1:{port}/v1/audio/speech", json=speech_body(input=noisy_input, response_format="pcm")
    )
    assert plain.status_code == noisy.status_code == 200
    assert noisy.content == plain.content  # the same seed, the same speakable text: the same audio


# ------------------------------------------------------------------------------------------------ fault 7
def test_a_resolver_that_hangs_fails_the_fetch_at_its_deadline(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolver is the one thing faked (offline, no DNS server of ours is consulted): it takes 20 s for this
    # host, as a resolver that times out upstream does; every other name resolves as usual.
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.example":
            time.sleep(20)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    service = started_service(engine, tmp_path, fetch_timeout_s=1.0)
    with serving(create_app(service, service.settings, start_service=False)) as port:
        body = speech_body(voice=None, ref_audio={"url": "http://slow-dns.example/ref.wav"}, ref_text="Hello there.")
        started = time.monotonic()
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=body, timeout=60)
        took_s = time.monotonic() - started
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "fetch_failed"
    assert took_s < 5, took_s  # the 1 s deadline, not the resolver's 20 s


# ------------------------------------------------------------------------------------------------ fault 11
def test_flac_says_its_length_in_its_header(port: int) -> None:
    import io

    import soundfile as sf

    pcm = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=speech_body(response_format="pcm"), timeout=60)
    flac = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=speech_body(response_format="flac"), timeout=60)
    assert pcm.status_code == flac.status_code == 200
    samples = len(pcm.content) // 2
    assert sf.info(io.BytesIO(flac.content)).frames == samples  # STREAMINFO's count, read by libsndfile
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", "-i", "pipe:0"],
        input=flac.content,
        capture_output=True,
        check=True,
    )
    assert abs(float(json.loads(probed.stdout)["format"]["duration"]) - samples / 24000) < 0.01


# ------------------------------------------------------------------------------------------------ fault 12
def upload(port: int, name: str, data: bytes) -> httpx.Response:
    text = "Some call me nature, others call me mother nature."
    files = {"file": (f"{name}.bin", data, "application/octet-stream")}
    return httpx.post(f"http://127.0.0.1:{port}/v1/audio/voices", data={"name": name, "text": text}, files=files)


def test_a_reference_that_is_a_playlist_naming_other_inputs_is_refused(
    port: int, reference_wav: bytes, tmp_path: Path
) -> None:
    # A file of the worker's own, in a format only ffmpeg reads (AAC in MP4): what a playlist could name.
    on_disk = tmp_path / "private.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-c:a", "aac", str(on_disk)], input=reference_wav, check=True
    )
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{on_disk}\n#EXT-X-ENDLIST\n".encode()
    ffconcat = f"ffconcat version 1.0\nfile '{on_disk}'\n".encode()
    for name, playlist in [("hls", hls), ("ffconcat", ffconcat)]:
        answer = upload(port, name, playlist)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"]["code"] == "audio_unreadable"
    allowed = upload(port, "m4a", on_disk.read_bytes())  # the same audio sent as itself is a voice
    assert allowed.status_code == 201, allowed.text


# ------------------------------------------------------------------------------------------------ the probe's baseline
def test_twenty_concurrent_requests_get_200s_and_quick_503s_overloaded(engine: Engine, tmp_path: Path) -> None:
    import concurrent.futures

    service = started_service(engine, tmp_path, concurrency=4, busy_wait_s=0.05)
    with serving(create_app(service, service.settings, start_service=False)) as port:

        def speak(_: int) -> httpx.Response:
            body = speech_body(input=LONG_TEXT[:300], response_format="pcm")
            return httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", json=body, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(speak, range(20)))
        after = wait_for_a_free_slot(port, within_s=10)
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4, statuses
    for busy in (a for a in answers if a.status_code == 503):
        assert busy.json()["error"]["code"] == "overloaded" and int(busy.headers["retry-after"]) > 0
    assert after[-1] == 200  # every slot came back
