"""The transport of both clients against a scripted fake API (httpx.MockTransport): runsync and its fallback to
polling, retries without duplicate jobs, timeouts, expired jobs, streaming, and error normalisation.

Every test runs twice, for the sync `Client` and the `AsyncClient` (the `flavour` fixture)."""

from __future__ import annotations

import base64
import json
import logging
import time

import f5tts_client as f5
import httpx
import pytest

from tests.clients.fake_runpod import (
    API_KEY,
    AUDIO_HOST,
    ENDPOINT_URL,
    LOST_ANSWER,
    WAV_BYTES,
    FakeRunPod,
    Plan,
    stream_chunk,
    stream_end,
    synth_output,
)
from tests.clients.helpers import collect, resolve

pytestmark = pytest.mark.anyio


def sent_input(fake: FakeRunPod, index: int = 0) -> dict:
    posts = [r for r in fake.requests if r.method == "POST" and r.url.path.endswith(("/run", "/runsync"))]
    return json.loads(posts[index].content)["input"]


# ---------------------------------------------------------------------------------------------- happy paths
async def test_synthesize_via_runsync_returns_a_typed_result(make_client, fake, tmp_path):
    client = make_client(runsync_wait=30)
    result = await resolve(client.synthesize("Hello there.", voice="alice", speed=1.2, seed=5, format="wav"))

    assert fake.count("POST", "runsync") == 1 and fake.count("GET", "status") == 0
    assert sent_input(fake) == {
        "action": "synthesize",
        "text": "Hello there.",
        "voice": "alice",
        "speed": 1.2,
        "seed": 5,
        "format": "wav",
    }  # format="wav" is the worker's default, but the caller set it
    assert fake.jobs["job-1"]["wait"] == "30000"  # RunPod's wait is in milliseconds
    assert isinstance(result, f5.AsyncSynthesisResult if isinstance(client, f5.AsyncClient) else f5.SynthesisResult)
    assert (result.duration, result.sample_rate, result.seed, result.timings.rtf) == (1.25, 24000, 7, 0.32)
    assert result.job_id == "job-1"
    assert await resolve(result.read()) == WAV_BYTES
    saved = await resolve(result.save(tmp_path / "out.wav"))
    assert saved.read_bytes() == WAV_BYTES


async def test_a_job_that_outlasts_the_runsync_wait_is_polled_on_status(make_client, fake):
    fake.plan(Plan(pending=4))  # the runsync answer and 3 polls say IN_PROGRESS
    result = await resolve(make_client().synthesize("Long text."))
    assert fake.count("POST", "runsync") == 1
    assert fake.count("GET", "status") == 4
    assert result.seed == 7


async def test_audio_url_results_are_downloaded_without_the_api_key(make_client, fake):
    url = f"{AUDIO_HOST}/generated/a.mp3?X-Amz-Signature=abc"
    fake.plan(
        Plan(final={"status": "COMPLETED", "output": [synth_output(audio_base64=None, audio_url=url, format="mp3")]})
    )
    result = await resolve(make_client().synthesize("Hi", format="mp3"))
    assert result.audio_url == url
    assert await resolve(result.read()) == WAV_BYTES
    assert await resolve(result.read()) == WAV_BYTES  # kept, not downloaded twice
    downloads = [r for r in fake.requests if r.url.host == httpx.URL(AUDIO_HOST).host]
    assert len(downloads) == 1
    assert "authorization" not in downloads[0].headers


async def test_voices_and_health_parse_their_outputs(make_client, fake, tmp_path):
    voice = {"name": "alice", "text": "Hi.", "duration": 2.0, "sample_rate": 24000}
    clip = tmp_path / "alice.wav"
    clip.write_bytes(b"RIFFclip")
    fake.plan(
        Plan(final={"status": "COMPLETED", "output": [{**voice, "original_duration": 2.5, "clipped": False}]}),
        Plan(
            final={
                "status": "COMPLETED",
                "output": [{"voices": [voice, {**voice, "name": "default", "builtin": True}]}],
            }
        ),
        Plan(final={"status": "COMPLETED", "output": [{"name": "alice", "deleted": True}]}),
        Plan(
            final={
                "status": "COMPLETED",
                "output": [
                    {
                        "status": "ok",
                        "contract_version": "1.0",
                        "model": "tiny",
                        "device": "cpu",
                        "dtype": "float32",
                        "attn_backend": "torch",
                        "storage": "s3",
                        "sample_rate": 24000,
                        "concurrency": 1,
                        "max_batch": 1,
                        "batch_frames": 16384,
                        "batch_wait_ms": 0.0,
                        "new_field_from_a_newer_worker": 1,
                    }
                ],
            }
        ),
    )
    client = make_client()
    uploaded = await resolve(client.voices.upload("alice", clip, "Hi."))
    voices = await resolve(client.voices.list())
    deleted = await resolve(client.voices.delete("alice"))
    health = await resolve(client.health())

    assert isinstance(uploaded, f5.models.UploadVoiceOutput) and uploaded.original_duration == 2.5
    assert [v.name for v in voices] == ["alice", "default"] and voices[1].builtin
    assert deleted.deleted
    assert health.storage == "s3" and health.contract_version == f5.CONTRACT_VERSION
    assert sent_input(fake, 0) == {
        "action": "upload_voice",
        "name": "alice",
        "audio": {"base64": base64.b64encode(b"RIFFclip").decode()},
        "text": "Hi.",
    }
    assert [sent_input(fake, i) for i in (1, 2, 3)] == [
        {"action": "list_voices"},
        {"action": "delete_voice", "name": "alice"},
        {"action": "health"},
    ]


async def test_audio_given_as_url_or_bytes(make_client, fake):
    client = make_client()
    await resolve(client.synthesize("Hi", ref_audio="https://example.test/ref.wav", ref_text="Hello."))
    await resolve(client.synthesize("Hi", ref_audio=b"RIFFbytes", ref_text="Hello."))
    assert sent_input(fake, 0)["ref_audio"] == {"url": "https://example.test/ref.wav"}
    assert sent_input(fake, 1)["ref_audio"] == {"base64": base64.b64encode(b"RIFFbytes").decode()}


async def test_submit_returns_a_job_handle(make_client, fake):
    fake.plan(Plan(pending=2))
    client = make_client()
    job = await resolve(client.submit("Queued text.", nfe_step=16))
    assert fake.count("POST", "run") == 1 and fake.count("POST", "runsync") == 0
    assert sent_input(fake) == {"action": "synthesize", "text": "Queued text.", "nfe_step": 16}
    assert (await resolve(job.status())).status == f5.RunPodJobStatus.IN_PROGRESS
    seen = []
    result = await resolve(job.wait(on_status=lambda state: seen.append(state.status)))
    assert result.seed == 7 and seen[-1] == "COMPLETED"
    # A handle made from the id alone (another process, the seed-era API's `run`) works the same.
    assert (await resolve(client.job(job.id).wait())).duration == 1.25


async def test_cancel(make_client, fake):
    fake.plan(Plan(pending=100))
    job = await resolve(make_client().submit("Never mind."))
    state = await resolve(job.cancel())
    assert state.status == "CANCELLED" and fake.jobs[job.id]["cancelled"]
    with pytest.raises(f5.JobCancelled) as info:
        await resolve(job.wait())
    assert info.value.job_id == job.id


# ---------------------------------------------------------------------------------------------- retries
async def test_submission_is_retried_on_429_and_503_without_duplicate_jobs(make_client, fake, caplog):
    fake.fault("POST", "runsync", (429, {"Retry-After": "0.3"}, {"error": "slow down"}), 503, httpx.ConnectError)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="f5tts_client"):
        result = await resolve(make_client().synthesize("Hi"))
    assert time.monotonic() - started >= 0.3  # the server's Retry-After, not the (tiny) backoff, set the wait
    assert result.seed == 7
    assert fake.count("POST", "runsync") == 4
    assert fake.accepted_jobs == 1
    assert "retry 3 of 3" in caplog.text


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.RemoteProtocolError, 500, 502, 504])
async def test_submission_that_may_have_created_a_job_is_not_resent(make_client, fake, failure):
    fake.fault("POST", "runsync", failure)
    expected = f5.APIConnectionError if isinstance(failure, type) else f5.ServerError
    with pytest.raises(expected) as info:
        await resolve(make_client().synthesize("Hi"))
    assert fake.count("POST", "runsync") == 1
    if isinstance(info.value, f5.APIConnectionError):  # a lost answer, not a server's refusal
        assert info.value.maybe_submitted and "not resent" in str(info.value)


async def test_reads_are_retried_on_5xx_and_lost_responses(make_client, fake):
    fake.plan(Plan(pending=1))
    fake.fault("GET", "status", 500, httpx.ReadTimeout, 502, httpx.RemoteProtocolError)
    result = await resolve(make_client(max_retries=4).synthesize("Hi"))
    assert result.seed == 7 and fake.accepted_jobs == 1
    assert fake.count("GET", "status") == 5


async def test_retries_are_bounded(make_client, fake):
    fake.fault("POST", "runsync", *[429] * 10)
    with pytest.raises(f5.RateLimitError) as info:
        await resolve(make_client(max_retries=2).synthesize("Hi"))
    assert fake.count("POST", "runsync") == 3 and fake.accepted_jobs == 0
    assert info.value.status_code == 429


async def test_connection_refused_is_reported_after_retries(make_client, fake):
    fake.fault("POST", "runsync", *[httpx.ConnectError] * 10)
    with pytest.raises(f5.APIConnectionError) as info:
        await resolve(make_client(max_retries=1).synthesize("Hi"))
    assert not info.value.maybe_submitted and fake.count("POST", "runsync") == 2


# ---------------------------------------------------------------------------------------------- timeouts, expiry
async def test_per_call_timeout_raises_job_timeout_with_the_job_id(make_client, fake):
    fake.plan(Plan(pending=10_000))
    started = time.monotonic()
    with pytest.raises(f5.JobTimeout) as info:
        await resolve(make_client().synthesize("Hi", timeout=0.3))
    assert time.monotonic() - started < 2.0
    assert info.value.job_id == "job-1" and not info.value.on_server
    assert fake.accepted_jobs == 1
    assert fake.count("POST", "run") == 1  # under 1 s left: /run, whose answer carries the id at once


async def test_expired_job_is_reported_as_not_found(make_client, fake):
    with pytest.raises(f5.JobNotFound) as info:
        await resolve(make_client().job("job-that-expired").wait())
    assert info.value.job_id == "job-that-expired" and "expired" in str(info.value)


async def test_endpoint_timeout_status(make_client, fake):
    fake.plan(Plan(final={"status": "TIMED_OUT"}))
    with pytest.raises(f5.JobTimeout) as info:
        await resolve(make_client().synthesize("Hi"))
    assert info.value.on_server


# ---------------------------------------------------------------------------------------------- errors
ERROR_BODY = json.dumps({"code": "voice_not_found", "message": "voice 'bob' does not exist", "field": "voice"})
RAISED = json.dumps(
    {
        "error_type": "<class 'ValueError'>",
        "error_message": "boom",
        "error_traceback": "Traceback (most recent...)",
        "hostname": "h",
        "worker_id": "w",
        "runpod_version": "1.12",
    }
)


@pytest.mark.parametrize(
    ("error", "exc_type", "code", "field", "message"),
    [
        (ERROR_BODY, f5.VoiceNotFound, "voice_not_found", "voice", "voice 'bob' does not exist"),  # handler's {"error"}
        (RAISED, f5.InternalError, "internal", None, "the handler raised ValueError: boom"),  # raised exception
        (
            f"handler: {ERROR_BODY} \ntraceback: Traceback ...",
            f5.VoiceNotFound,
            "voice_not_found",
            "voice",
            "voice 'bob'",
        ),
        (
            "handler: division by zero \ntraceback: Traceback (most recent call last)",
            f5.InternalError,
            "internal",
            None,
            "division by zero",
        ),  # a generator that raised
        ("something broke", f5.InternalError, "internal", None, "something broke"),
        (
            json.dumps({"code": "brand_new_code", "message": "from a newer worker"}),
            f5.WorkerError,
            "brand_new_code",
            None,
            "from a newer worker",
        ),
    ],
)
async def test_the_three_error_shapes_become_typed_exceptions(make_client, fake, error, exc_type, code, field, message):
    fake.plan(Plan(final={"status": "FAILED", "error": error}))
    with pytest.raises(exc_type) as info:
        await resolve(make_client().synthesize("Hi"))
    exc = info.value
    assert type(exc) is exc_type and isinstance(exc, f5.WorkerError)
    assert (exc.code, exc.field, exc.job_id) == (code, field, "job-1")
    assert message in str(exc) and "Traceback" not in str(exc)
    assert exc.raw == error


async def test_every_contract_error_code_has_its_exception():
    assert {c.value for c in f5.ErrorCode} == set(f5.ERRORS_BY_CODE)
    for code, cls in f5.ERRORS_BY_CODE.items():
        assert issubclass(cls, f5.WorkerError) and cls.code == code and cls.__name__ in f5.__all__


async def test_invalid_input_is_refused_before_any_request(make_client, fake):
    client = make_client()
    with pytest.raises(f5.InvalidInput) as info:
        await resolve(client.synthesize("Hi", speed=9.0))
    assert info.value.field == "speed"
    with pytest.raises(f5.InvalidInput) as info:
        await resolve(client.voices.delete("Not A Valid Name"))
    assert info.value.field == "name"
    with pytest.raises(f5.InvalidInput, match="cannot read audio file"):
        await resolve(client.voices.upload("x", "/nonexistent/clip.wav", "Hi."))
    assert fake.requests == []


async def test_api_errors_are_typed(make_client, fake):
    fake.fault("POST", "runsync", 404)
    with pytest.raises(f5.EndpointNotFound):
        await resolve(make_client().synthesize("Hi"))
    fake.fault("POST", "run", 400)
    with pytest.raises(f5.APIStatusError) as info:
        await resolve(make_client().submit("Hi"))
    assert info.value.status_code == 400


# ---------------------------------------------------------------------------------------------- the API key
async def test_the_api_key_never_shows(make_client, fake, caplog, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    client = make_client()
    texts = [repr(client), str(client.settings), repr(client.settings)]
    with caplog.at_level(logging.DEBUG):
        # a refused key, echoed back by the server in its error body
        wrong = make_client(api_key=API_KEY + "-wrong")
        with pytest.raises(f5.AuthenticationError) as refused:
            await resolve(wrong.health())
        # retries logged, then a connection error
        fake.fault("POST", "runsync", *[httpx.ConnectError] * 5)
        with pytest.raises(f5.APIConnectionError) as unreachable:
            await resolve(client.health())
        # a worker error
        fake.plan(Plan(final={"status": "FAILED", "error": ERROR_BODY}))
        with pytest.raises(f5.VoiceNotFound) as failed:
            await resolve(client.synthesize("Hi"))
    assert "bad key" in str(refused.value) and "**********" in str(refused.value)
    for exc in (refused.value, unreachable.value, failed.value):
        texts += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)]
    texts.append(caplog.text)
    assert all(API_KEY not in text for text in texts)
    assert all(API_KEY not in str(r.url) for r in fake.requests)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"  # ... yet it was sent, as a header


def test_configuration_from_the_environment(monkeypatch):
    for name in ("RUNPOD_API_KEY", "F5TTS_ENDPOINT_ID", "F5TTS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(f5.ConfigurationError, match="no endpoint"):
        f5.Client()
    monkeypatch.setenv("F5TTS_ENDPOINT_ID", "abc123")
    with pytest.raises(f5.ConfigurationError, match="RUNPOD_API_KEY"):
        f5.Client()
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    assert f5.Client().endpoint_url == "https://api.runpod.ai/v2/abc123"
    monkeypatch.setenv("F5TTS_ENDPOINT_URL", ENDPOINT_URL + "/")
    assert f5.AsyncClient().endpoint_url == ENDPOINT_URL  # the URL wins over the id
    assert f5.Client(endpoint_id="other").endpoint_url.endswith("/v2/other")  # arguments win over the environment
    with pytest.raises(f5.ConfigurationError):
        f5.Client(endpoint_url="ftp://example.test")


# ---------------------------------------------------------------------------------------------- streaming
async def test_stream_yields_chunks_as_they_arrive(make_client, fake):
    fake.plan(Plan(stream=[[stream_chunk(0)], [], [stream_chunk(0), stream_chunk(1)], [stream_end(2)]]))
    stream = make_client().synthesize_stream("One. Two.", seed=3)
    chunks = await collect(stream)
    assert [c.index for c in chunks] == [0, 1]  # the repeated chunk 0 is dropped
    assert chunks[0].audio == WAV_BYTES and chunks[1].text == "chunk 1"
    assert stream.summary.chunks == 2 and stream.summary.seed == 3
    assert sent_input(fake) == {"action": "synthesize", "text": "One. Two.", "seed": 3, "stream": True}
    assert fake.count("POST", "run") == 1 and stream.job_id == "job-1" and stream.finished


async def test_stream_recovers_chunks_whose_answer_was_lost_and_keeps_their_order(make_client, fake):
    chunks = [stream_chunk(i, audio=bytes([i]) * 4) for i in range(4)]
    aggregate = [*chunks, stream_end(4)]  # what /status returns for a finished streaming job
    fake.plan(
        Plan(
            stream=[[chunks[0]], [chunks[1]], [chunks[2], chunks[3]], [stream_end(4)]],
            final={"status": "COMPLETED", "output": aggregate},
        )
    )
    fake.fault("GET", "stream", None, LOST_ANSWER)  # the answer holding chunk 1 is lost; the retry gets 2 and 3
    stream = make_client().synthesize_stream("One. Two. Three. Four.")
    received = await collect(stream)
    assert [c.index for c in received] == [0, 1, 2, 3]
    assert [c.audio for c in received] == [bytes([i]) * 4 for i in range(4)]
    assert fake.count("GET", "status") == 1  # one look at the aggregated output filled the gap


async def test_stream_failure_after_some_chunks_raises_the_typed_error(make_client, fake):
    fake.plan(Plan(stream=[[stream_chunk(0)]], final={"status": "FAILED", "error": ERROR_BODY}))
    received: list[f5.AudioChunk] = []
    with pytest.raises(f5.VoiceNotFound):
        await collect(make_client().synthesize_stream("Hi"), into=received)
    assert [c.index for c in received] == [0]


async def test_leaving_a_stream_early_cancels_its_job(make_client, fake):
    fake.plan(Plan(stream=[[stream_chunk(0)], [stream_chunk(1)], [stream_chunk(2)], [stream_end(3)]]))
    stream = make_client().synthesize_stream("One. Two. Three.")
    if hasattr(stream, "__aiter__"):
        async with stream:
            async for _chunk in stream:
                break
    else:
        with stream:
            for _chunk in stream:
                break
    assert fake.count("POST", "cancel") == 1 and fake.jobs["job-1"]["cancelled"]


# ---------------------------------------------------------------------------------------------- backoff
def test_backoff_is_jittered_exponential_and_capped():
    from f5tts_client._retry import backoff_delay, retry_after_seconds

    for attempt in range(6):
        delays = [backoff_delay(attempt, base=0.5, cap=4.0) for _ in range(200)]
        assert all(0.0 <= d <= min(4.0, 0.5 * 2**attempt) for d in delays)
        assert len(set(delays)) > 100  # jitter: clients rejected together do not come back together
    assert max(backoff_delay(10, base=0.5, cap=4.0) for _ in range(200)) > 2.0
    assert backoff_delay(0, base=0.5, cap=4.0, retry_after=2.5) == 2.5
    assert backoff_delay(0, base=0.5, cap=4.0, retry_after=3600) == 60.0  # a server's ask is bounded too
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(httpx.Response(429)) is None
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
