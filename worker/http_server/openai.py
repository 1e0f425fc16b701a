"""The OpenAI-compatible surface: OpenAI's speech API and model list, and stored voices at Kokoro-FastAPI's paths.

- `POST /v1/audio/speech`: OpenAI's speech API; F5's own fields ride along in the body (the SDK's `extra_body`).
  The audio streams as it is generated (`stream_format` `audio`, or `sse` with base64 deltas).
- `GET /v1/models`, `GET /v1/models/{id}`: OpenAI's model list.
- `GET|POST /v1/audio/voices`, `DELETE /v1/audio/voices/{name}`: stored voices (Kokoro-FastAPI's paths).

Errors have OpenAI's shape (`errors.openai_error`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from worker.async_bridge import iterate_in_thread
from worker.audio_stream import STREAM_CONTENT_TYPES, encode_stream
from worker.http_server.jobs import piece_samples, run_one, speech_items
from worker.http_server.responses import OwningStreamingResponse
from worker.http_server.state import State
from worker.schema import (
    AudioSource,
    ContractError,
    ErrorCode,
    ListVoicesInput,
    SynthesizeInput,
    UploadVoiceInput,
    VoiceDescription,
    VoiceLabels,
    echo,
    parse_job_input,
)
from worker.service import Speech

MODEL_ID = "f5-tts"
# OpenAI's speech model names, accepted so that apps with a hard-coded model work; all of them are F5-TTS here.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MODEL_IDS = (MODEL_ID, *OPENAI_MODEL_ALIASES)

router = APIRouter()


def check_model(model_id: str) -> None:
    """`invalid_input` naming `model` unless `model_id` is one this server answers to."""
    if model_id not in MODEL_IDS:
        raise ContractError(
            ErrorCode.invalid_input,
            f"unknown model {echo(model_id)}; use {MODEL_ID} (OpenAI's {', '.join(OPENAI_MODEL_ALIASES)} are accepted too)",
            "model",
        )


@contextlib.contextmanager
def text_named_input() -> Iterator[None]:
    """A contract error about `text` names the field as the caller sent it here: `input`."""
    try:
        yield
    except ContractError as exc:
        if exc.body.field == "text":
            raise ContractError(exc.code, exc.body.message.replace("text", "input", 1), "input") from None
        raise


# ------------------------------------------------------------------------------------------------ bodies
class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body, plus F5-TTS's own fields (the openai SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(MODEL_ID, description=f"`{MODEL_ID}`, or one of OpenAI's: {', '.join(OPENAI_MODEL_ALIASES)}.")
    input: str = Field(description="Text to speak.")
    voice: str | None = Field(None, description="A stored voice (`GET /v1/audio/voices`); default `default`.")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="pcm is raw signed 16-bit little-endian mono at 24 kHz, as OpenAI's."
    )
    speed: float = Field(1.0, description="Speaking rate, 0.3-3.0.")
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="`audio`: the file's bytes, streamed; `sse`: server-sent events with base64 deltas."
    )
    instructions: str | None = Field(None, description="Accepted for OpenAI compatibility; F5-TTS ignores it.")
    # F5-TTS's own fields (same ranges as the job contract's `synthesize`)
    seed: int | None = None
    nfe_step: int | None = None
    cfg_strength: float | None = None
    sway_sampling_coef: float | None = None
    cross_fade_duration: float | None = None
    ref_audio: AudioSource | None = None
    ref_text: str | None = None
    remove_silence: bool | None = None

    def to_job(self) -> SynthesizeInput:
        check_model(self.model)
        fields = self.model_dump(
            exclude_none=True, exclude={"model", "input", "response_format", "stream_format", "instructions"}
        )
        with text_named_input():
            job = parse_job_input({"action": "synthesize", "text": self.input, **fields})
        assert isinstance(job, SynthesizeInput)
        return job


class VoiceUploadJSON(BaseModel):
    """`POST /v1/audio/voices` with a JSON body: the contract's `upload_voice` input without `action`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    audio: AudioSource
    text: str | None = None
    overwrite: bool = False
    description: VoiceDescription | None = None
    labels: VoiceLabels | None = None


# ------------------------------------------------------------------------------------------------ speech
@router.post(
    "/v1/audio/speech",
    summary="Speak text (OpenAI-compatible); the audio streams as it is generated",
    response_class=Response,
    responses={200: {"content": {t: {} for t in {*STREAM_CONTENT_TYPES.values(), "text/event-stream"}}}},
)
async def speech(body: SpeechRequest, state: State) -> Response:
    job = body.to_job()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(state.slots.slot())
        cancelled = threading.Event()
        stack.callback(cancelled.set)
        items = iterate_in_thread(speech_items(state.service, job, cancelled), name="speech")
        stack.push_async_callback(items.aclose)
        with text_named_input():  # the text is planned here: "nothing to speak" is about `input`
            speech = await anext(items)
        assert isinstance(speech, Speech)
        # The first piece before the headers: a failure of the first chunk still gets its own status.
        first = await anext(items, None)
        audio = encode_stream(piece_samples(first, items), speech.sample_rate, body.response_format)
        stack.push_async_callback(audio.aclose)  # closed before `items` (LIFO): it may be reading them
        headers = {"X-Seed": str(speech.seed), "X-Voice": speech.voice}
        body_iter = _sse(audio) if body.stream_format == "sse" else audio
        media_type = "text/event-stream" if body.stream_format == "sse" else STREAM_CONTENT_TYPES[body.response_format]
        return OwningStreamingResponse(body_iter, stack.pop_all(), media_type=media_type, headers=headers)
    raise AssertionError("unreachable")  # pragma: no cover - the `with` returns or raises


async def _sse(audio: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """OpenAI's speech SSE: `speech.audio.delta` events (base64 audio), then `speech.audio.done`."""
    async for data in audio:
        event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")}
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b'data: {"type": "speech.audio.done"}\n\n'


# ------------------------------------------------------------------------------------------------ models
def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "f5-tts"}


@router.get("/v1/models", summary="Models (OpenAI-compatible): f5-tts and the OpenAI names it answers to")
async def models() -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in MODEL_IDS]}


@router.get("/v1/models/{model_id}", summary="One model (OpenAI-compatible)")
async def model(model_id: str) -> dict[str, Any]:
    check_model(model_id)
    return _model(model_id)


# ------------------------------------------------------------------------------------------------ voices
@router.get("/v1/audio/voices", summary="Stored voices (Kokoro-FastAPI's path); `id` and `name` are the voice name")
async def list_voices(state: State) -> dict[str, Any]:
    output = await run_one(state.service, ListVoicesInput(action="list_voices").model_dump())
    return {"voices": [{"id": v["name"], **v} for v in output["voices"]]}


@router.post(
    "/v1/audio/voices",
    summary="Store a voice: multipart (`name`, `file`, `text`, `overwrite`) or JSON (`name`, `audio`, `text`, `overwrite`)",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["name", "file"],
                        "properties": {
                            "name": {"type": "string"},
                            "file": {"type": "string", "format": "binary"},
                            "text": {"type": "string"},
                            "overwrite": {"type": "boolean"},
                        },
                    }
                },
                "application/json": {"schema": VoiceUploadJSON.model_json_schema()},
            }
        }
    },
)
async def upload_voice(request: Request, state: State) -> JSONResponse:
    job = await _voice_upload_input(request)
    async with state.slots.slot():
        output = await run_one(state.service, job)
    return JSONResponse(output, status_code=201)


@router.delete("/v1/audio/voices/{name}", summary="Delete a stored voice (built-in voices cannot be deleted)")
async def delete_voice(name: str, state: State) -> dict[str, Any]:
    return await run_one(state.service, {"action": "delete_voice", "name": name})


async def _voice_upload_input(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile) or not isinstance(name, str):
            raise ContractError(
                ErrorCode.invalid_input, "multipart upload needs a `name` field and a `file` part", "file"
            )
        data = await upload.read()
        text = form.get("text")
        overwrite = str(form.get("overwrite", "false")).lower() in ("1", "true", "yes", "on")
        audio = {"base64": base64.b64encode(data).decode("ascii")}
        job = {"action": "upload_voice", "name": name, "audio": audio, "overwrite": overwrite}
        if isinstance(text, str) and text:
            job["text"] = text
        return job
    try:
        raw = await request.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser recurses
        raise ContractError(ErrorCode.invalid_input, "body must be JSON or multipart/form-data") from None
    if not isinstance(raw, dict):
        raise ContractError(ErrorCode.invalid_input, "body must be a JSON object")
    parsed = parse_job_input({**raw, "action": "upload_voice"})  # coded errors, fields named as in the contract
    assert isinstance(parsed, UploadVoiceInput)
    return parsed.model_dump(mode="json", exclude_none=True)
