"""The ElevenLabs-compatible routes (worker/http_server/elevenlabs.py), in-process on the tiny model and the tiny
word aligner, driven by the official `elevenlabs` SDK (its async client over the app itself, unchanged) and by
plain httpx where a caller could send what the SDK never does.

The same routes behind the devstack's load balancer, with the SDK's sync client, are tested in
tests/clients/test_elevenlabs_compat.py.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from elevenlabs import AsyncElevenLabs, VoiceSettings
from elevenlabs.core import ApiError
from elevenlabs.errors import UnprocessableEntityError
from pydantic import SecretStr

from tests.support import ffmpeg_decode
from tests.worker.test_http_server import settings_for
from worker.config import Settings
from worker.http_server import create_app
from worker.service import WorkerService

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]

TEXT = "Hello there. This is a test of the voice."
F5 = {"nfe_step": 4}  # F5-TTS's own fields, as the SDK sends extra body fields
EXTRA = {"additional_body_parameters": F5}
TRANSCRIPT = "Some call me nature, others call me mother nature."  # what f5-tts's example clip says


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_with_aligner(tmp_path, make_model_settings, **worker: Any) -> Settings:
    """The http tests' settings, with the tiny word aligner (the timestamps come from it)."""
    settings = settings_for(tmp_path, **worker)
    settings.model = make_model_settings(warmup=False)
    return settings


@pytest.fixture
def settings(tmp_path, make_model_settings) -> Settings:
    return settings_with_aligner(tmp_path, make_model_settings)


@pytest.fixture
def service(engine, settings) -> WorkerService:
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


@pytest.fixture
async def http(service, settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, settings, start_service=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker/elevenlabs", timeout=120) as client:
        yield client


@pytest.fixture
def sdk(http) -> AsyncElevenLabs:
    return AsyncElevenLabs(base_url="http://worker/elevenlabs", api_key="unused", httpx_client=http)


async def joined(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def detail_of(error: ApiError) -> dict:
    assert isinstance(error.body, dict), error.body
    detail = error.body["detail"]
    assert {"status", "message"} <= set(detail) <= {"status", "message", "param"}
    assert "Traceback" not in json.dumps(error.body)
    return detail


def check_alignment(alignment, text: str, duration: float) -> None:
    assert alignment.characters == list(text)
    starts, ends = alignment.character_start_times_seconds, alignment.character_end_times_seconds
    assert len(starts) == len(ends) == len(text)
    assert all(0 <= s <= e <= duration + 1e-3 for s, e in zip(starts, ends, strict=True))
    assert all(a <= b for a, b in itertools.pairwise(starts))


# ------------------------------------------------------------------------------------------------ text to speech
async def test_convert_and_stream_give_the_same_bytes_and_the_seed_decides_them(sdk):
    async def convert(seed: int) -> bytes:
        return await joined(sdk.text_to_speech.convert("default", text=TEXT, seed=seed, request_options=EXTRA))

    whole = await convert(7)
    assert whole[:3] == b"ID3" or whole[:2] == b"\xff\xfb"  # mp3_44100_128, ElevenLabs' default
    assert await convert(7) == whole
    assert await convert(8) != whole
    streamed = await joined(sdk.text_to_speech.stream("default", text=TEXT, seed=7, request_options=EXTRA))
    assert streamed == whole
    samples = ffmpeg_decode(whole)
    assert np.abs(samples).max() > 0.01 and samples.size / 24000 > 0.5


@pytest.mark.parametrize(
    ("output_format", "content_type"),
    [
        ("pcm_16000", "audio/pcm"),
        ("ulaw_8000", "audio/basic"),
        ("opus_48000_64", "audio/ogg"),
        ("wav_22050", "audio/wav"),
    ],
)
async def test_output_format_sets_the_codec_and_rate(http, output_format, content_type):
    body = {"text": TEXT, "seed": 3, **F5}
    pcm = await http.post("/v1/text-to-speech/default", params={"output_format": "pcm_24000"}, json=body)
    other = await http.post("/v1/text-to-speech/default", params={"output_format": output_format}, json=body)
    assert other.status_code == 200, other.text
    assert other.headers["content-type"] == content_type
    assert other.headers["x-seed"] == "3" and other.headers["x-voice"] == "default"
    seconds = len(pcm.content) / 2 / 24000
    if output_format == "pcm_16000":
        assert len(other.content) / 2 / 16000 == pytest.approx(seconds, abs=0.01)
    elif output_format == "ulaw_8000":
        assert len(other.content) / 8000 == pytest.approx(seconds, abs=0.01)
    else:
        assert ffmpeg_decode(other.content).size / 24000 == pytest.approx(seconds, abs=0.1)


async def test_voice_settings_speed_and_f5_fields_reach_the_synthesis(sdk):
    async def pcm(speed: float, nfe_step: int = 4) -> bytes:
        return await joined(
            sdk.text_to_speech.convert(
                "default",
                text=TEXT,
                seed=1,
                output_format="pcm_24000",
                voice_settings=VoiceSettings(stability=0.5, similarity_boost=0.7, speed=speed),
                model_id="eleven_multilingual_v2",
                request_options={"additional_body_parameters": {"nfe_step": nfe_step}},
            )
        )

    slow, fast = await pcm(0.5), await pcm(2.0)
    assert len(slow) > 2 * len(fast)
    assert await pcm(1.0, nfe_step=6) != await pcm(1.0, nfe_step=4)


async def test_seeds_above_f5s_range_are_folded_into_it(http):
    body = {"text": TEXT, **F5}
    high = await http.post("/v1/text-to-speech/default?output_format=pcm_24000", json={**body, "seed": 2**31 + 5})
    low = await http.post("/v1/text-to-speech/default?output_format=pcm_24000", json={**body, "seed": 5})
    assert high.status_code == 200 and high.content == low.content
    assert high.headers["x-seed"] == "5"


# ------------------------------------------------------------------------------------------------ timestamps
async def test_with_timestamps_times_exactly_the_characters_of_the_text(sdk):
    text = 'Hello there!  Ready? <break time="0.5s"/> Go, now.'
    whole = await joined(sdk.text_to_speech.convert("default", text=text, seed=4, request_options=EXTRA))
    timed = await sdk.text_to_speech.convert_with_timestamps("default", text=text, seed=4, request_options=EXTRA)
    audio = base64.b64decode(timed.audio_base_64)
    assert audio == whole
    duration = ffmpeg_decode(audio).size / 24000
    check_alignment(timed.alignment, text, duration)
    assert "".join(timed.normalized_alignment.characters) == "Hello there! Ready? Go, now."
    # The break tag spans the half second of silence: its characters start after "Ready?" ends and end before "Go".
    starts, ends = timed.alignment.character_start_times_seconds, timed.alignment.character_end_times_seconds
    assert starts[text.index("Go")] - ends[text.index("?")] > 0.45


async def test_streamed_timestamps_join_to_the_whole_audio_and_alignment(sdk):
    text = " ".join(["The fox runs far away into the forest to hide from the dog."] * 4)  # several chunks
    whole = await sdk.text_to_speech.convert_with_timestamps(
        "default", text=text, seed=9, output_format="pcm_24000", request_options=EXTRA
    )
    chunks = [
        chunk
        async for chunk in sdk.text_to_speech.stream_with_timestamps(
            "default", text=text, seed=9, output_format="pcm_24000", request_options=EXTRA
        )
    ]
    assert len(chunks) > 1
    assert b"".join(base64.b64decode(c.audio_base_64) for c in chunks) == base64.b64decode(whole.audio_base_64)
    characters = [ch for c in chunks if c.alignment for ch in c.alignment.characters]
    starts = [t for c in chunks if c.alignment for t in c.alignment.character_start_times_seconds]
    assert characters == whole.alignment.characters == list(text)
    assert starts == whole.alignment.character_start_times_seconds
    # Each chunk's alignment comes with its audio: the first chunk's characters are spoken within its audio (or
    # the cross-fade with the next chunk, which a stream holds back until that chunk exists).
    first = chunks[0]
    first_seconds = len(base64.b64decode(first.audio_base_64)) / 2 / 24000
    assert first.alignment is not None and 0 < len(first.alignment.characters) < len(text)
    assert max(first.alignment.character_end_times_seconds) <= first_seconds + 0.15 + 1e-3


# ------------------------------------------------------------------------------------------------ errors
async def test_bad_requests_get_elevenlabs_errors_with_our_codes(sdk):
    cases = [
        (sdk.text_to_speech.convert("nobody", text=TEXT), 404, "voice_not_found", "voice_id"),
        (sdk.text_to_speech.convert("JBFqnCBsd6RMkjVDRZzb", text=TEXT), 404, "voice_not_found", "voice_id"),
        (sdk.text_to_speech.convert("default", text=""), 400, "invalid_input", "text"),
        (sdk.text_to_speech.convert("default", text="x" * 5001), 400, "invalid_input", "text"),
        (
            sdk.text_to_speech.convert("default", text=TEXT, output_format="flac_44100"),
            400,
            "invalid_input",
            "output_format",
        ),
        (sdk.text_to_speech.convert("default", text=TEXT, model_id="whisper"), 400, "invalid_input", "model_id"),
        (
            sdk.text_to_speech.convert("default", text=TEXT, voice_settings=VoiceSettings(speed=9)),
            400,
            "invalid_input",
            "voice_settings.speed",
        ),
        (sdk.text_to_speech.convert("default", text='Go <break time="9h"/>'), 400, "invalid_input", "text"),
    ]
    for call, status, code, param in cases:
        with pytest.raises(ApiError) as caught:
            await joined(call)
        assert caught.value.status_code == status, caught.value.body
        detail = detail_of(caught.value)
        assert detail["status"] == code and detail.get("param") == param, detail
    with pytest.raises(ApiError) as caught:
        await sdk.text_to_speech.convert_with_timestamps("nobody", text=TEXT)
    assert caught.value.status_code == 404 and detail_of(caught.value)["status"] == "voice_not_found"


async def test_a_body_that_does_not_match_the_schema_is_a_422_in_the_same_shape(sdk, http):
    with pytest.raises(UnprocessableEntityError) as caught:  # the SDK's own exception for a 422
        await joined(
            sdk.text_to_speech.convert(
                "default", text=TEXT, request_options={"additional_body_parameters": {"nfe_stpe": 4}}
            )
        )
    detail = caught.value.body["detail"]
    assert detail["status"] == "invalid_input" and detail["param"] == "nfe_stpe"
    missing = await http.post("/v1/text-to-speech/default", json={"model_id": "f5-tts"})
    assert missing.status_code == 422 and missing.json()["detail"]["param"] == "text"
    not_json = await http.post("/v1/text-to-speech/default", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["detail"]["status"] == "invalid_input"
    huge = await http.post("/v1/text-to-speech/default", content=b"{}", headers={"content-length": str(31 * 2**20)})
    assert huge.status_code == 413 and huge.json()["detail"]["status"] == "audio_too_large"
    unknown = await http.get("/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["detail"]["status"] == "not_found"


async def test_past_the_busy_wait_a_request_gets_503_overloaded_with_retry_after(engine, tmp_path):
    settings = settings_for(tmp_path, concurrency=1, busy_wait_s=0.05)  # no timestamps: no aligner needed
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    app = create_app(service, settings, start_service=False)
    long_text = " ".join(["This sentence keeps the only synthesis slot busy for a while."] * 6)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker/elevenlabs") as http:
        responses = await asyncio.gather(
            http.post("/v1/text-to-speech/default", json={"text": long_text, "nfe_step": 16}),
            http.post("/v1/text-to-speech/default/stream", json={"text": TEXT, **F5}),
        )
        after = await http.post("/v1/text-to-speech/default/stream", json={"text": TEXT, **F5})
    assert sorted(r.status_code for r in responses) == [200, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["detail"]["status"] == "overloaded" and int(busy.headers["retry-after"]) > 0
    assert after.status_code == 200


async def test_the_optional_api_key_is_taken_from_xi_api_key_or_bearer(engine, tmp_path):
    settings = settings_for(tmp_path, api_key=SecretStr("s3cret"))
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    app = create_app(service, settings, start_service=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker/elevenlabs") as http:
        right = AsyncElevenLabs(base_url="http://worker/elevenlabs", api_key="s3cret", httpx_client=http)
        wrong = AsyncElevenLabs(base_url="http://worker/elevenlabs", api_key="wrong", httpx_client=http)
        assert [m.model_id for m in await right.models.list()] == ["f5-tts"]  # the SDK sends xi-api-key
        with pytest.raises(ApiError) as caught:
            await wrong.models.list()
        assert caught.value.status_code == 401 and detail_of(caught.value)["status"] == "invalid_api_key"
        assert "s3cret" not in json.dumps(caught.value.body)
        bearer = await http.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        assert (await http.get("/v1/models", headers={"xi-api-key": "s3cre"})).status_code == 401


# ------------------------------------------------------------------------------------------------ voices, models
async def test_voices_add_list_get_speak_and_delete(sdk, reference_wav):
    added = await sdk.voices.ivc.create(
        name="Mother Nature",
        files=[("nature.wav", reference_wav, "audio/wav")],
        description="the f5-tts example clip",
        labels={"transcript": TRANSCRIPT, "accent": "american"},
    )
    assert added.voice_id == "mother-nature" and added.requires_verification is False
    listed = {v.voice_id: v for v in (await sdk.voices.get_all()).voices}
    assert set(listed) == {"default", "mother-nature"}
    assert listed["default"].category == "premade" and listed["mother-nature"].category == "cloned"
    voice = await sdk.voices.get("mother-nature")
    assert voice.name == "mother-nature" and voice.labels == {"accent": "american", "transcript": TRANSCRIPT}
    assert voice.description == "the f5-tts example clip"
    assert listed["mother-nature"].description == voice.description and listed["default"].description is None
    searched = await sdk.voices.search(search="nature")
    assert [v.voice_id for v in searched.voices] == ["mother-nature"] and searched.has_more is False
    audio = await joined(sdk.text_to_speech.convert("mother-nature", text=TEXT, seed=2, request_options=EXTRA))
    assert ffmpeg_decode(audio).size > 0

    with pytest.raises(ApiError) as caught:
        await sdk.voices.ivc.create(
            name="mother nature",
            files=[("n.wav", reference_wav, "audio/wav")],
            labels={"transcript": TRANSCRIPT},
            # The SDK retries a 409, and its retry of a multipart body drops the form fields (elevenlabs 2.78).
            request_options={"max_retries": 0},
        )
    assert caught.value.status_code == 409 and detail_of(caught.value)["status"] == "voice_exists", caught.value.body

    assert (await sdk.voices.delete("mother-nature")).status == "ok"
    with pytest.raises(ApiError) as caught:
        await sdk.voices.get("mother-nature")
    assert caught.value.status_code == 404 and detail_of(caught.value)["param"] == "voice_id"
    with pytest.raises(ApiError) as caught:
        await sdk.voices.delete("mother-nature")
    assert caught.value.status_code == 404 and detail_of(caught.value)["param"] == "voice_id"
    with pytest.raises(ApiError) as caught:
        await sdk.voices.delete("default")
    assert caught.value.status_code == 400 and "built-in" in detail_of(caught.value)["message"]


@pytest.mark.parametrize(
    ("name", "files", "labels", "param", "says"),
    [
        ("Nature", 1, None, "labels", 'labels={"transcript"'),
        ("Nature", 1, {"accent": "british"}, "labels", 'labels={"transcript"'),
        ("Nature", 1, {"transcript": "   "}, "labels", 'labels={"transcript"'),
        ("Nature", 2, {"transcript": TRANSCRIPT}, "files", "exactly one clip"),
        ("Nature", 0, {"transcript": TRANSCRIPT}, "files", "exactly one clip"),
        ("Ünïcode voice!", 1, {"transcript": TRANSCRIPT}, "name", "a-z, 0-9"),
        ("x" * 65, 1, {"transcript": TRANSCRIPT}, "name", "1-64"),
        ("default", 1, {"transcript": TRANSCRIPT}, "name", "already exists"),
        ("Nature", 1, {"transcript": TRANSCRIPT} | {f"k{i}": "v" for i in range(17)}, "labels", "at most 16"),
        ("Nature", 1, {"transcript": TRANSCRIPT, "accent": "x" * 201}, "labels.accent", "at most 200 characters"),
        ("Nature", 1, {"transcript": TRANSCRIPT, "k" * 65: "v"}, f"labels.{'k' * 65}.[key]", "at most 64 characters"),
    ],
)
async def test_a_voice_that_cannot_be_added_gets_a_clear_error_and_nothing_is_stored(
    sdk, reference_wav, name, files, labels, param, says
):
    with pytest.raises(ApiError) as caught:
        await sdk.voices.ivc.create(
            name=name,
            files=[(f"{i}.wav", reference_wav, "audio/wav") for i in range(files)],
            labels=labels,
            request_options={"max_retries": 0},  # see above: the SDK's retry of a 409 loses the form
        )
    detail = detail_of(caught.value)
    assert caught.value.status_code == (409 if name == "default" else 400)
    assert detail["param"] == param and says in detail["message"], detail
    assert [v.voice_id for v in (await sdk.voices.get_all()).voices] == ["default"]


async def test_unreadable_audio_and_bad_labels_are_refused(http):
    files = {"files": ("x.wav", b"not audio at all", "audio/wav")}
    labels = json.dumps({"transcript": TRANSCRIPT})
    unreadable = await http.post("/v1/voices/add", data={"name": "x", "labels": labels}, files=files)
    assert unreadable.status_code == 400, unreadable.text
    assert unreadable.json()["detail"] == {
        **unreadable.json()["detail"],
        "status": "audio_unreadable",
        "param": "files",
    }
    not_json = await http.post("/v1/voices/add", data={"name": "x", "labels": "{transcript"}, files=files)
    assert not_json.status_code == 400 and not_json.json()["detail"]["param"] == "labels"
    nested = await http.post("/v1/voices/add", data={"name": "x", "labels": "[" * 100_000}, files=files)
    assert nested.status_code == 400 and nested.json()["detail"]["param"] == "labels"
    not_a_string = await http.post("/v1/voices/add", data={"name": "x", "labels": '{"transcript": 3}'}, files=files)
    assert not_a_string.status_code == 400 and "a JSON object of strings" in not_a_string.json()["detail"]["message"]
    long_description = {"name": "x", "labels": labels, "description": "d" * 501}
    too_long = await http.post("/v1/voices/add", data=long_description, files=files)
    assert too_long.status_code == 400, too_long.text
    assert too_long.json()["detail"] | {"message": ""} == {
        "status": "invalid_input",
        "param": "description",
        "message": "",
    }
    assert "at most 500 characters" in too_long.json()["detail"]["message"]


async def test_models_list_one_tts_model(sdk):
    models = await sdk.models.list()
    assert [m.model_id for m in models] == ["f5-tts"]
    assert models[0].can_do_text_to_speech is True and models[0].maximum_text_length_per_request == 5000
    assert {lang.language_id for lang in models[0].languages} == {"en", "zh"}
