"""Both clients against the devstack: the queue emulator, local S3, and the real worker loop
(`python -m worker.handler` on the tiny random-weight model). Every test runs for `Client` and `AsyncClient`.

Jobs use few flow-matching steps (`nfe_step=4`) where the audio's quality is beside the point: same code path,
less CPU time."""

from __future__ import annotations

import contextlib
import http.server
import io
import socket
import threading
import wave

import anyio
import f5tts_client as f5
import numpy as np
import pytest
import soundfile as sf

from tests.clients.helpers import collect, resolve
from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

pytestmark = pytest.mark.anyio

QUICK = {"nfe_step": 4}
# Longer than one text chunk of the built-in voice (about 160 characters), so the worker makes two.
TWO_CHUNKS = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest to hide. "
    "Later that evening the fox comes back home, tired but happy, and falls asleep at once."
)


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


def job_ids_on_the_endpoint(devstack) -> set[str]:
    """Ids of the jobs the emulator holds (older finished ones expire, so compare sets, not counts)."""
    return devstack.call(lambda: set(devstack.queue.jobs))


async def test_synthesize_voices_and_health(stack_client, flavour, tmp_path):
    client = stack_client().client
    health = await resolve(client.health())
    assert health.status == "ok" and health.storage == "s3" and health.contract_version == f5.CONTRACT_VERSION

    # The default voice, delivered by presigned URL from the local S3.
    result = await resolve(client.synthesize("Hello from the client.", seed=11, **QUICK))
    assert result.audio_url and result.audio_url.startswith("http://127.0.0.1") and result.key.startswith("generated/")
    assert (result.seed, result.voice, result.format, result.sample_rate) == (11, "default", "wav", 24000)
    saved = await resolve(result.save(tmp_path / "hello.wav"))
    assert wav_seconds(saved.read_bytes()) == pytest.approx(result.duration, abs=0.01)

    # A stored voice from a file path; synthesis with it; then gone again.
    name = f"e2e-{flavour}"
    uploaded = await resolve(client.voices.upload(name, builtin_audio_file(), BUILTIN_REFERENCE_TEXT, overwrite=True))
    assert uploaded.name == name and uploaded.sample_rate == 24000 and not uploaded.clipped
    assert name in [v.name for v in await resolve(client.voices.list())]
    spoken = await resolve(client.synthesize("In my own voice.", voice=name, format="mp3", delivery="base64", **QUICK))
    assert spoken.voice == name and spoken.audio_url is None
    mp3 = await resolve(spoken.read())
    assert sf.info(io.BytesIO(mp3)).format == "MP3"
    assert (await resolve(client.voices.delete(name))).deleted
    assert name not in [v.name for v in await resolve(client.voices.list())]

    # A one-off reference given as bytes.
    inline = await resolve(
        client.synthesize(
            "Inline reference.", ref_audio=builtin_audio_file().read_bytes(), ref_text=BUILTIN_REFERENCE_TEXT, **QUICK
        )
    )
    assert inline.voice == "inline" and inline.duration > 0


async def test_the_endpoint_receives_exactly_the_arguments_given(stack_client, devstack):
    client = stack_client().client
    # cfg_strength=2.0 is the worker's default: sent all the same, because the caller set it.
    job = await resolve(client.submit("Sent as given.", cfg_strength=2.0, seed=None, **QUICK))
    received = devstack.call(lambda: devstack.queue.jobs[job.id].input)
    assert received == {"action": "synthesize", "text": "Sent as given.", "cfg_strength": 2.0, "seed": None, **QUICK}
    result = await resolve(job.wait())  # the worker took every key
    assert result.duration > 0 and result.format == "wav"


async def test_streaming_yields_every_chunk(stack_client):
    client = stack_client().client
    stream = client.synthesize_stream(TWO_CHUNKS, seed=5, **QUICK)
    chunks = await collect(stream)
    assert [c.index for c in chunks] == [0, 1]
    assert all(c.format == "wav" and wav_seconds(c.audio) == pytest.approx(c.duration, abs=0.01) for c in chunks)
    assert stream.summary.chunks == 2 and stream.summary.seed == 5
    assert stream.summary.duration == pytest.approx(sum(c.duration for c in chunks), abs=0.01)


async def test_a_job_that_outlasts_the_runsync_wait_is_polled(stack_client, flavour):
    made = stack_client(runsync_wait=1.0)  # RunPod's shortest wait
    # The one worker is kept busy by a streaming job (cancellable between its chunks) until 1.5 s from now, so
    # the next job outlasts the wait whatever the CPU speed.
    busy = made.client.synthesize_stream(TWO_CHUNKS * 3)
    if flavour == "sync":
        next(iter(busy))  # the worker is on it
        timer = threading.Timer(1.5, busy.close)
        timer.start()
        result = made.client.synthesize("Worth the wait.", **QUICK)
        timer.join()
    else:
        await busy.__aiter__().__anext__()

        async def cancel_later() -> None:
            await anyio.sleep(1.5)
            await busy.aclose()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_later)
            result = await made.client.synthesize("Worth the wait.", **QUICK)
    assert result.duration > 0
    assert made.count("POST", "/runsync") == 1 and made.count("GET", "/status") >= 1
    assert made.count("POST", "/cancel") == 1


async def test_cancel_a_queued_and_a_running_job(stack_client):
    client = stack_client().client
    running = await resolve(client.submit(TWO_CHUNKS))
    queued = await resolve(client.submit("Never spoken."))
    assert (await resolve(queued.cancel())).status == "CANCELLED"
    with pytest.raises(f5.JobCancelled):
        await resolve(queued.wait())
    for _ in range(200):  # until the worker has taken it (bounded: 10 s)
        if (await resolve(running.status())).status != "IN_QUEUE":
            break
        await anyio.sleep(0.05)
    assert running.last_state.status == "IN_PROGRESS"
    await resolve(running.cancel())
    with pytest.raises(f5.JobCancelled) as info:
        await resolve(running.wait())
    assert info.value.job_id == running.id


def _noise_wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    sf.write(buffer, (rng.standard_normal(int(seconds * 24000)) * 0.3).astype(np.float32), 24000, format="WAV")
    return buffer.getvalue()


class _EndlessAudio(http.server.BaseHTTPRequestHandler):
    """Answers any GET with more bytes than the worker accepts (25 MB, sent until the worker hangs up)."""

    size = 25 * 1024 * 1024

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        block = bytes(1024 * 1024)
        with contextlib.suppress(OSError):  # the worker stops reading at its limit
            for _ in range(self.size // len(block)):
                self.wfile.write(block)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def too_large_audio_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessAudio)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/huge.wav"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_worker_errors_arrive_typed(stack_client, too_large_audio_url):
    made = stack_client()
    client = made.client
    with pytest.raises(f5.VoiceNotFound) as info:
        await resolve(client.synthesize("Hi", voice="nobody-here"))
    assert info.value.field == "voice" and info.value.job_id
    with pytest.raises(f5.VoiceExists):
        await resolve(client.voices.upload("default", builtin_audio_file(), BUILTIN_REFERENCE_TEXT))
    with pytest.raises(f5.InvalidInput) as invalid:  # a rule only the worker checks: one reference, not two
        await resolve(client.synthesize("Hi", voice="default", ref_audio=b"RIFF", ref_text="x"))
    assert "not both" in str(invalid.value)
    with pytest.raises(f5.AudioUnreadable):
        await resolve(client.voices.upload("garbage", b"this is not audio at all", "Some text."))
    with pytest.raises(f5.ReferenceTooLong):  # 14 s without a pause: nowhere to clip it
        await resolve(client.voices.upload("too-long", _noise_wav(14.0), "A transcript.", overwrite=True))
    with pytest.raises(f5.FetchFailed) as unreachable:
        await resolve(client.voices.upload("unreachable", f"http://127.0.0.1:{_closed_port()}/ref.wav", "Text."))
    assert unreachable.value.field == "audio.url"
    with pytest.raises(f5.AudioTooLarge) as too_large:
        await resolve(client.voices.upload("huge", too_large_audio_url, "Text."))
    assert too_large.value.field == "audio.url"
    with pytest.raises(f5.JobNotFound):
        await resolve(client.job("no-such-job").status())
    with pytest.raises(f5.AuthenticationError) as refused:
        await resolve(stack_client(api_key="wrong-key-123").client.health())
    assert "wrong-key-123" not in str(refused.value)


async def test_injected_429_and_503_are_retried_without_duplicate_jobs(stack_client, devstack):
    made = stack_client(backoff_base=0.05)
    before = job_ids_on_the_endpoint(devstack)
    devstack.inject_fault("/runsync", 429, 1, retry_after=0.1)
    devstack.inject_fault("/runsync", 503, 2)
    result = await resolve(made.client.health())
    assert result.status == "ok"
    assert made.count("POST", "/runsync") == 4
    assert len(job_ids_on_the_endpoint(devstack) - before) == 1

    # Reads are retried too: a job polled through a failing /status still completes, once.
    made = stack_client(backoff_base=0.05)
    before = job_ids_on_the_endpoint(devstack)
    job = await resolve(made.client.submit("Polled through faults.", **QUICK))
    devstack.inject_fault("/status", 503, 2)
    devstack.inject_fault("/status", 500, 1)
    assert (await resolve(job.wait())).duration > 0
    assert made.count("GET", "/status") >= 4 and made.count("POST", "/run") == 1
    assert job_ids_on_the_endpoint(devstack) - before == {job.id}


async def test_word_timings_and_subtitles_whole_and_streamed(stack_client, tmp_path):
    """Issue #17 through the devstack: the worker's real aligner code on the tiny random aligner."""
    client = stack_client().client
    options = {"seed": 9, "word_timestamps": True, "subtitle_format": "vtt", **QUICK}
    result = await resolve(client.synthesize(TWO_CHUNKS, **options))
    assert [w.word for w in result.words] == TWO_CHUNKS.split()
    assert not any(w.estimated for w in result.words)  # aligned, not estimated: the worker found its aligner
    assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)
    saved = result.save_subtitles(tmp_path / "speech.vtt")
    assert saved.read_text(encoding="utf-8") == result.subtitles and result.subtitles.startswith("WEBVTT")

    stream = client.synthesize_stream(TWO_CHUNKS, **options)
    chunks = await collect(stream)
    assert [w for c in chunks for w in c.words] == result.words  # streamed = whole
    assert stream.summary.subtitles == result.subtitles
