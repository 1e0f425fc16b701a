"""The http serving mode's app (worker/http_server/), in-process on the tiny model: OpenAI's speech API, voices,
the native contract, errors, concurrency, the optional key, and a property-based check of its OpenAPI document.

The same app behind a real server and the devstack's load balancer, with the official openai SDK, is tested in
tests/devstack/test_load_balancer.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Unpack

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from tests.support import ffmpeg_decode
from tests.worker.helpers import WorkerOverrides, serving, worker_settings
from worker.config import HttpSettings, ModelSettings, Settings, StorageSettings
from worker.http_server import create_app
from worker.http_server.errors import MAX_MESSAGE_CHARS, HttpError
from worker.schema import MAX_ECHO_CHARS
from worker.service import WorkerService

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(tmp_path, **worker: Unpack[WorkerOverrides]) -> Settings:
    return Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=StorageSettings(_env_file=None),
        worker=worker_settings(tmp_path, **worker),
        http=HttpSettings(_env_file=None),
    )


def app_client(service: WorkerService, settings: Settings) -> httpx.AsyncClient:
    app = create_app(service, settings, start_service=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
def service(engine, settings) -> WorkerService:
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


def speech_body(**fields: object) -> dict:
    return {
        "model": "tts-1",
        "input": "Hello there. This is a test of the speech route.",
        "voice": "default",
        "seed": 7,
        "nfe_step": 4,
        **fields,
    }


def assert_openai_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert "Traceback" not in response.text
    return error


# ------------------------------------------------------------------------------------------------ speech
async def test_every_response_format_is_audio_of_its_content_type_and_the_same_length(service, settings):
    async with app_client(service, settings) as client:
        lengths = {}
        for fmt, content_type in [
            ("mp3", "audio/mpeg"),
            ("opus", "audio/ogg"),
            ("aac", "audio/aac"),
            ("flac", "audio/flac"),
            ("wav", "audio/wav"),
            ("pcm", "audio/pcm"),
        ]:
            response = await client.post("/v1/audio/speech", json=speech_body(response_format=fmt))
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == content_type
            assert response.headers["x-seed"] == "7" and response.headers["x-voice"] == "default"
            if fmt == "pcm":
                samples = np.frombuffer(response.content, dtype="<i2").astype(np.float32) / 32767
            else:
                samples = ffmpeg_decode(response.content)
            lengths[fmt] = len(samples) / 24000
            assert np.abs(samples).max() > 0.01  # sound, not silence
    # Lossy encoders pad a little (priming, frame size); every format carries the same audio.
    assert all(abs(seconds - lengths["pcm"]) < 0.12 for seconds in lengths.values()), lengths
    assert lengths["wav"] == lengths["pcm"]


async def test_the_same_seed_gives_the_same_bytes_and_pcm_equals_the_native_results_audio(service, settings):
    async with app_client(service, settings) as client:
        first = await client.post("/v1/audio/speech", json=speech_body(response_format="pcm"))
        again = await client.post("/v1/audio/speech", json=speech_body(response_format="pcm"))
        other = await client.post("/v1/audio/speech", json=speech_body(response_format="pcm", seed=8))
        native = await client.post(
            "/job",
            json={
                "input": {
                    "text": speech_body()["input"],
                    "seed": 7,
                    "nfe_step": 4,
                    "format": "pcm",
                    "delivery": "base64",
                }
            },
        )
    assert first.content == again.content and first.content != other.content
    assert native.status_code == 200, native.text
    assert base64.b64decode(native.json()["audio_base64"]) == first.content  # one generator behind both routes


async def test_sse_stream_format_carries_base64_deltas_then_done(service, settings):
    async with app_client(service, settings) as client:
        response = await client.post("/v1/audio/speech", json=speech_body(response_format="wav", stream_format="sse"))
        plain = await client.post("/v1/audio/speech", json=speech_body(response_format="wav"))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
    assert b"".join(deltas) == plain.content


async def test_f5_fields_in_the_body_reach_the_synthesis(service, settings):
    async with app_client(service, settings) as client:
        slow = await client.post("/v1/audio/speech", json=speech_body(response_format="pcm", speed=0.5))
        fast = await client.post("/v1/audio/speech", json=speech_body(response_format="pcm", speed=2.0))
    assert len(slow.content) > 2 * len(fast.content)


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        ({"voice": "nobody"}, 404, "voice_not_found", "voice"),
        ({"input": ""}, 400, "invalid_input", "input"),
        ({"input": "   "}, 400, "invalid_input", "input"),
        ({"model": "whisper-1"}, 400, "invalid_input", "model"),
        ({"response_format": "ogg"}, 400, "invalid_input", "response_format"),
        ({"speed": 9}, 400, "invalid_input", "speed"),
        ({"nfe_step": 1000}, 400, "invalid_input", "nfe_step"),
        ({"sede": 1}, 400, "invalid_input", "sede"),
        ({"voice": "../etc"}, 400, "invalid_input", "voice"),
        ({"ref_text": "no audio"}, 400, "invalid_input", None),
    ],
)
async def test_bad_speech_requests_get_openai_errors_with_our_code(service, settings, fields, status, code, param):
    async with app_client(service, settings) as client:
        response = await client.post("/v1/audio/speech", json=speech_body(**fields))
    assert_openai_error(response, status, code, param)


async def test_malformed_bodies_and_unknown_routes_get_the_same_error_shape(service, settings):
    async with app_client(service, settings) as client:
        not_json = await client.post("/v1/audio/speech", content=b"{nope", headers={"content-type": "application/json"})
        no_route = await client.get("/v1/nothing")
        wrong_method = await client.get("/v1/audio/speech")
        huge = await client.post("/job", content=b"{}", headers={"content-length": str(31 * 2**20)})
        # uvicorn's h11 refuses such a head itself; another ASGI server may pass it on (in-process here).
        no_number = await client.post("/job", content=b"{}", headers={"content-length": "2e9"})
    assert_openai_error(not_json, 400, "invalid_input", "1")  # FastAPI's location: the offset where the JSON breaks
    assert no_route.status_code == 404 and no_route.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "invalid_input"
    assert_openai_error(huge, 413, "audio_too_large")
    assert "Content-Length" in assert_openai_error(no_number, 400, "invalid_input")["message"]


def test_an_error_message_is_cut_to_at_most_640_characters_and_its_field_to_80():
    error = HttpError(400, "invalid_input", "m" * 5000, "f" * 5000)
    assert len(error.message) == MAX_MESSAGE_CHARS == 640 and error.message.endswith("…")  # as docs/http.md says
    assert error.field is not None and len(error.field) == MAX_ECHO_CHARS == 80 and error.field.endswith("…")


# ------------------------------------------------------------------------------------------------ health
async def test_ping_says_204_while_loading_then_200(engine, settings):
    release = threading.Event()

    def slow_engine():
        assert release.wait(30)
        return engine

    service = WorkerService(settings, engine_factory=slow_engine)
    app = create_app(service, settings)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")
    async with app.router.lifespan_context(app), client:  # the lifespan starts the model load, as uvicorn does
        assert (await client.get("/ping")).status_code == 204
        loading = await client.post("/v1/audio/speech", json=speech_body())
        assert_openai_error(loading, 503, "model_unavailable")
        assert loading.headers["retry-after"]
        release.set()
        for _ in range(300):
            ping = await client.get("/ping")
            if ping.status_code != 204:
                break
            await asyncio.sleep(0.05)
        assert ping.status_code == 200 and ping.json() == {"status": "ready"}


async def test_ping_reports_a_failed_model_load_with_its_reason(settings):
    def broken():
        raise FileNotFoundError("no such checkpoint: /nowhere/model.safetensors")

    service = WorkerService(settings, engine_factory=broken)
    service.start()
    async with app_client(service, settings) as client:
        ping = await client.get("/ping")
        job = await client.post("/job", json={"input": {"text": "hi"}})
    error = assert_openai_error(ping, 503, "model_unavailable")
    assert "/nowhere/model.safetensors" in error["message"]
    assert_openai_error(job, 503, "model_unavailable")


# ------------------------------------------------------------------------------------------------ models, voices
async def test_models_list_names_f5_tts_and_openais_names(service, settings):
    async with app_client(service, settings) as client:
        listed = (await client.get("/v1/models")).json()
        one = await client.get("/v1/models/tts-1")
        unknown = await client.get("/v1/models/gpt-9")
    assert listed["object"] == "list" and {m["id"] for m in listed["data"]} >= {"f5-tts", "tts-1", "tts-1-hd"}
    assert one.json()["id"] == "tts-1"
    assert_openai_error(unknown, 400, "invalid_input", "model")


async def test_voices_upload_multipart_and_json_list_speak_and_delete(service, settings, reference_wav):
    async with app_client(service, settings) as client:
        multipart = await client.post(
            "/v1/audio/voices",
            data={"name": "alice", "text": "Some call me nature, others call me mother nature."},
            files={"file": ("alice.wav", reference_wav, "audio/wav")},
        )
        assert multipart.status_code == 201, multipart.text
        assert multipart.json()["name"] == "alice" and multipart.json()["duration"] > 1
        again = await client.post(
            "/v1/audio/voices",
            data={"name": "alice", "text": "x"},
            files={"file": ("a.wav", reference_wav, "audio/wav")},
        )
        assert_openai_error(again, 409, "voice_exists", "name")
        as_json = await client.post(
            "/v1/audio/voices",
            json={
                "name": "bob",
                "audio": {"base64": base64.b64encode(reference_wav).decode()},
                "text": "Some call me nature.",
            },
        )
        assert as_json.status_code == 201, as_json.text
        listed = (await client.get("/v1/audio/voices")).json()["voices"]
        assert {v["id"] for v in listed} == {"default", "alice", "bob"}
        assert next(v for v in listed if v["id"] == "default")["builtin"] is True
        spoken = await client.post("/v1/audio/speech", json=speech_body(voice="alice", response_format="wav"))
        assert spoken.status_code == 200 and spoken.headers["x-voice"] == "alice"
        deleted = await client.delete("/v1/audio/voices/alice")
        assert deleted.json() == {"name": "alice", "deleted": True}
        gone = await client.post("/v1/audio/speech", json=speech_body(voice="alice"))
        assert_openai_error(gone, 404, "voice_not_found", "voice")
        builtin = await client.delete("/v1/audio/voices/default")
        assert builtin.status_code == 400 and builtin.json()["error"]["code"] == "invalid_input"
        missing_file = await client.post("/v1/audio/voices", data={"name": "carol"}, files={"other": ("x", b"1")})
        assert_openai_error(missing_file, 400, "invalid_input", "file")
        bad_json = await client.post("/v1/audio/voices", json={"name": "Bad Name", "audio": {"url": "http://x"}})
        assert_openai_error(bad_json, 400, "invalid_input", "name")


# ------------------------------------------------------------------------------------------------ native contract
async def test_native_job_route_returns_what_the_queue_mode_returns(service, settings):
    job = {"text": "Hello.", "seed": 3, "nfe_step": 4, "delivery": "base64", "format": "flac"}
    direct = next(service.run(job))
    async with app_client(service, settings) as client:
        over_http = (await client.post("/job", json={"input": job})).json()
        health = (await client.post("/job", json={"input": {"action": "health"}})).json()
        streamed = await client.post("/job", json={"input": {**job, "stream": True}})
        failed = await client.post("/job", json={"input": {"text": "hi", "voice": "nobody"}})
        not_input = await client.post("/job", json={"inpt": {}})
    assert {k: v for k, v in over_http.items() if k != "timings"} == {k: v for k, v in direct.items() if k != "timings"}
    assert health["status"] == "ok" and health["storage"] == "local"
    assert streamed.headers["content-type"] == "application/x-ndjson"
    items = [json.loads(line) for line in streamed.text.splitlines()]
    assert [i["type"] for i in items] == ["chunk"] * (len(items) - 1) + ["end"] and items[-1]["seed"] == 3
    assert_openai_error(failed, 404, "voice_not_found", "voice")
    assert_openai_error(not_input, 400, "invalid_input", "input")


# ------------------------------------------------------------------------------------------------ limits, key
async def test_past_the_busy_wait_a_request_gets_503_overloaded_with_retry_after(engine, tmp_path):
    settings = settings_for(tmp_path, concurrency=1, busy_wait_s=0.05)
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    long_text = " ".join(["This sentence keeps the only synthesis slot busy for a while."] * 6)
    async with app_client(service, settings) as client:
        responses = await asyncio.gather(
            client.post("/v1/audio/speech", json=speech_body(input=long_text, nfe_step=16)),
            client.post("/v1/audio/speech", json=speech_body()),
        )
        after = await client.post("/v1/audio/speech", json=speech_body())  # the slot is free again
    assert sorted(r.status_code for r in responses) == [200, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert_openai_error(busy, 503, "overloaded")
    assert int(busy.headers["retry-after"]) > 0
    assert after.status_code == 200


async def test_the_optional_api_key_guards_every_route_but_the_health_check(engine, tmp_path):
    settings = settings_for(tmp_path, api_key=SecretStr("s3cret"))
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    async with app_client(service, settings) as client:
        assert (await client.get("/ping")).status_code == 200
        for request in [
            client.get("/v1/models"),
            client.post("/v1/audio/speech", json=speech_body()),
            client.get("/v1/models", headers={"Authorization": "Bearer wrong"}),
        ]:
            denied = await request
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
            assert "s3cret" not in denied.text
        allowed = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200


# ------------------------------------------------------------------------------------------------ OpenAPI, fuzzed
def test_generated_requests_never_get_a_5xx_or_a_traceback(service, settings):
    """schemathesis generates requests from the app's OpenAPI document (valid and invalid ones)."""
    import hypothesis
    import schemathesis

    app = create_app(service, settings, start_service=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []

    @hypothesis.settings(
        max_examples=30, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
    )
    @hypothesis.given(data=hypothesis.strategies.data())
    def run(data):
        operation = data.draw(hypothesis.strategies.sampled_from(list(_operations(schema))))
        case = data.draw(operation.as_strategy())
        speaks = case.path == "/v1/audio/speech" or case.path.startswith("/elevenlabs/v1/text-to-speech/")
        if speaks and isinstance(case.body, dict):
            case.body["nfe_step"] = 4  # keep generated syntheses cheap on the CPU
        response = case.call()
        if response.status_code >= 500 or b"Traceback" in response.content:
            failures.append((case.method, case.path, case.body, response.status_code, response.content[:300]))

    run()
    assert not failures, failures


def _operations(schema):
    for result in schema.get_all_operations():
        yield result.ok()


# ------------------------------------------------------------------------------------------------ a real server
def test_a_client_that_goes_away_mid_stream_frees_its_slot_and_stops_its_job(engine, tmp_path, monkeypatch):
    settings = settings_for(tmp_path, concurrency=1, busy_wait_s=0.1)
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    chunks_made = []
    original = service._sampled_in_groups  # engine chunks, as the inference thread makes them

    def counting(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            chunks_made.append(chunk)
            yield chunk

    monkeypatch.setattr(service, "_sampled_in_groups", counting)
    text = " ".join(["The fox runs far away into the forest to hide from the dog."] * 20)  # ten text chunks
    with serving(create_app(service, settings, start_service=False)) as port:
        url = f"http://127.0.0.1:{port}"
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=speech_body(input=text, response_format="pcm")) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the first chunk's audio, then the client hangs up
        statuses = []
        for _ in range(100):  # the slot comes back once the chunk in progress is done
            statuses.append(httpx.post(f"{url}/v1/audio/speech", json=speech_body(), timeout=60).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    # The abandoned job stopped after the chunk it was computing (of its ten); the second request made one.
    assert len(chunks_made) <= 4, len(chunks_made)
