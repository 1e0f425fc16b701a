"""The http serving mode (`F5TTS_SERVE=http`): an ASGI server for RunPod load-balancing endpoints.

Requests reach this server directly (no queue): the response can be raw audio, streamed as it is generated.
It sits on the same `WorkerService` as the queue mode: synthesis, voices and error codes are the service's; this
module only translates HTTP to service calls and back. Routes (see docs/http.md):

- `GET /ping` (`HEALTH_CHECK_PATH`, also on `PORT_HEALTH`): 204 while the model loads, 200 when ready, 503 with
  the reason when it failed to load (RunPod then stops routing to this worker).
- `POST /v1/audio/speech`: OpenAI's speech API; F5's own fields ride along in the body (the SDK's `extra_body`).
- `GET /v1/models`, `GET /v1/models/{id}`: OpenAI's model list.
- `GET|POST /v1/audio/voices`, `DELETE /v1/audio/voices/{name}`: stored voices (Kokoro-FastAPI's paths).
- `POST /job`: the native job contract: `{"input": {...}}` in, the job's output item out (NDJSON items when
  `stream` is true), exactly what the queue mode's handler yields.

Every error has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with `code` one of the
contract's error codes and a fitting status; no traceback ever leaves the process (the log has it).
At most `F5TTS_CONCURRENCY` syntheses (and voice uploads) run at once; a request that finds every slot busy for
`F5TTS_BUSY_WAIT_S` gets 503 with Retry-After, since RunPod drops what an overloaded worker piles up anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.async_bridge import iterate_in_thread
from worker.audio_stream import STREAM_CONTENT_TYPES, encode_stream
from worker.config import Settings
from worker.schema import (
    AudioSource,
    ContractError,
    ErrorBody,
    ErrorCode,
    ListVoicesInput,
    SynthesizeInput,
    UploadVoiceInput,
    parse_job_input,
)
from worker.service import Speech, WorkerService

log = logging.getLogger("worker.http")

MODEL_ID = "f5-tts"
# OpenAI's speech model names, accepted so that apps with a hard-coded model work; all of them are F5-TTS here.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MAX_REQUEST_BYTES = 30 * 1024 * 1024  # RunPod's load-balancer payload limit
RETRY_AFTER_S = 2

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.invalid_input: 400,
    ErrorCode.voice_not_found: 404,
    ErrorCode.voice_exists: 409,
    ErrorCode.audio_unreadable: 400,
    ErrorCode.audio_too_large: 413,
    ErrorCode.reference_too_long: 400,
    ErrorCode.fetch_failed: 400,
    ErrorCode.storage_error: 502,
    ErrorCode.output_too_large: 413,
    ErrorCode.model_unavailable: 503,
    ErrorCode.overloaded: 503,
    ErrorCode.internal: 500,
}


# ------------------------------------------------------------------------------------------------ errors
def error_response(body: ErrorBody, status: int | None = None) -> JSONResponse:
    """OpenAI's error shape carrying our code; 503s say when to retry."""
    status = status or STATUS_BY_CODE.get(body.code, 500)
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    content = {"error": {"message": body.message, "type": kind, "param": body.field, "code": body.code.value}}
    return JSONResponse(content, status_code=status, headers=headers)


def _contract_error(exc: ContractError) -> JSONResponse:
    return error_response(exc.body)


def _error_item(item: dict[str, Any]) -> ErrorBody | None:
    """The ErrorBody of a service result item `{"error": "<json>"}`, None for a normal item."""
    if "error" not in item:
        return None
    return ErrorBody.model_validate_json(item["error"])


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
        if self.model not in (MODEL_ID, *OPENAI_MODEL_ALIASES):
            raise ContractError(
                ErrorCode.invalid_input,
                f"unknown model {self.model!r}; use {MODEL_ID} (OpenAI's {', '.join(OPENAI_MODEL_ALIASES)} are accepted too)",
                "model",
            )
        fields = self.model_dump(
            exclude_none=True, exclude={"model", "input", "response_format", "stream_format", "instructions"}
        )
        try:
            job = parse_job_input({"action": "synthesize", "text": self.input, **fields})
        except ContractError as exc:
            if exc.body.field == "text":  # name the field as the caller sent it
                raise ContractError(exc.code, exc.body.message.replace("text", "input", 1), "input") from None
            raise
        assert isinstance(job, SynthesizeInput)
        return job


class JobRequest(BaseModel):
    """A job of the native contract, as RunPod's queue API takes it: `{"input": {...}}`."""

    input: dict[str, Any] = Field(description="The job's input object (see the job contract).")


class VoiceUploadJSON(BaseModel):
    """`POST /v1/audio/voices` with a JSON body: the contract's `upload_voice` input without `action`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    audio: AudioSource
    text: str | None = None
    overwrite: bool = False


# ------------------------------------------------------------------------------------------------ the app
class SynthesisSlots:
    """At most `concurrency` syntheses at once; a request waits at most `wait_s` for a slot, then is refused."""

    def __init__(self, concurrency: int, wait_s: float) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=self._wait_s)
        except TimeoutError:
            raise ContractError(
                ErrorCode.overloaded, f"all synthesis slots stayed busy for {self._wait_s:g} s; retry shortly"
            ) from None
        try:
            yield
        finally:
            self._semaphore.release()


def create_app(service: WorkerService, settings: Settings, *, start_service: bool = True) -> FastAPI:
    """The API on `service`. With `start_service`, the model loads in the background while /ping says 204."""
    state = {"loading": start_service and service.engine is None and service.startup_error is None}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = None
        if state["loading"]:

            async def load() -> None:
                try:
                    await asyncio.to_thread(service.start)  # keeps its failure in service.startup_error
                finally:
                    state["loading"] = False

            task = asyncio.create_task(load())
        yield
        if task is not None and not task.done():
            task.cancel()

    app = FastAPI(
        title="F5-TTS worker (http mode)",
        description="OpenAI-compatible speech API and the native job contract of the F5-TTS RunPod worker.",
        lifespan=lifespan,
    )
    slots = SynthesisSlots(settings.worker.concurrency, settings.worker.busy_wait_s)
    api_key = settings.worker.api_key.get_secret_value() if settings.worker.api_key else None
    health_path = settings.http.health_check_path

    # -------------------------------------------------------------------------------------- cross-cutting
    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Outside RunPod the optional key is checked here (the health check stays open); bodies are capped."""
        if api_key is not None and request.url.path != health_path:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                content = {
                    "error": {
                        "message": "invalid or missing API key (Authorization: Bearer <key>)",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                }
                return JSONResponse(content, status_code=401)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            return error_response(
                ErrorBody(code=ErrorCode.audio_too_large, message=f"request body over {MAX_REQUEST_BYTES // 2**20} MB")
            )
        return await call_next(request)

    app.add_exception_handler(ContractError, lambda _r, exc: _contract_error(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(
            ErrorBody(code=ErrorCode.invalid_input, message=f"{field}: {message}" if field else message, field=field)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.invalid_input if exc.status_code < 500 else ErrorCode.internal
        response = error_response(ErrorBody(code=code, message=str(exc.detail)), exc.status_code)
        if exc.status_code == 404:
            response = JSONResponse(
                {
                    "error": {
                        "message": f"no such route: {_request.method} {_request.url.path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
                },
                status_code=404,
            )
        return response

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return error_response(ErrorBody(code=ErrorCode.internal, message="internal error; see the worker log"))

    # -------------------------------------------------------------------------------------- health
    async def ping() -> Response:
        if state["loading"]:
            return Response(status_code=204)
        if service.engine is None:
            return error_response(
                ErrorBody(code=ErrorCode.model_unavailable, message=service.startup_error or "model is not loaded")
            )
        return JSONResponse({"status": "ready"})

    app.add_api_route(health_path, ping, methods=["GET"], summary="Health check (RunPod's load balancer polls it)")

    # -------------------------------------------------------------------------------------- OpenAI speech
    @app.post(
        "/v1/audio/speech",
        summary="Speak text (OpenAI-compatible); the audio streams as it is generated",
        response_class=Response,
        responses={200: {"content": {t: {} for t in {*STREAM_CONTENT_TYPES.values(), "text/event-stream"}}}},
    )
    async def speech(body: SpeechRequest) -> Response:
        job = body.to_job()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(slots.slot())
            cancelled = threading.Event()
            stack.callback(cancelled.set)
            items = iterate_in_thread(_speak(service, job, cancelled), name="speech")
            stack.push_async_callback(items.aclose)
            speech = await anext(items)
            assert isinstance(speech, Speech)
            # The first piece before the headers: a failure of the first chunk still gets its own status.
            first = await anext(items, None)
            audio = encode_stream(_samples(first, items), speech.sample_rate, body.response_format)
            stack.push_async_callback(audio.aclose)  # closed before `items` (LIFO): it may be reading them
            headers = {"X-Seed": str(speech.seed), "X-Voice": speech.voice}
            body_iter = _sse(audio) if body.stream_format == "sse" else audio
            stack.push_async_callback(body_iter.aclose)
            media_type = (
                "text/event-stream" if body.stream_format == "sse" else STREAM_CONTENT_TYPES[body.response_format]
            )
            return StreamingResponse(_owning(body_iter, stack.pop_all()), media_type=media_type, headers=headers)
        raise AssertionError("unreachable")  # pragma: no cover - the `with` returns or raises

    # -------------------------------------------------------------------------------------- models
    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "f5-tts"}

    @app.get("/v1/models", summary="Models (OpenAI-compatible): f5-tts and the OpenAI names it answers to")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model(m) for m in (MODEL_ID, *OPENAI_MODEL_ALIASES)]}

    @app.get("/v1/models/{model_id}", summary="One model (OpenAI-compatible)")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in (MODEL_ID, *OPENAI_MODEL_ALIASES):
            raise ContractError(ErrorCode.invalid_input, f"unknown model {model_id!r}", "model")
        return _model(model_id)

    # -------------------------------------------------------------------------------------- voices
    @app.get("/v1/audio/voices", summary="Stored voices (Kokoro-FastAPI's path); `id` and `name` are the voice name")
    async def list_voices() -> dict[str, Any]:
        output = await _run_one(service, ListVoicesInput(action="list_voices").model_dump())
        return {"voices": [{"id": v["name"], **v} for v in output["voices"]]}

    @app.post(
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
    async def upload_voice(request: Request) -> JSONResponse:
        job = await _voice_upload_input(request)
        async with slots.slot():
            output = await _run_one(service, job)
        return JSONResponse(output, status_code=201)

    @app.delete("/v1/audio/voices/{name}", summary="Delete a stored voice (built-in voices cannot be deleted)")
    async def delete_voice(name: str) -> dict[str, Any]:
        return await _run_one(service, {"action": "delete_voice", "name": name})

    # -------------------------------------------------------------------------------------- native contract
    @app.post(
        "/job",
        summary="Run one job of the native contract: the same input and output as the queue mode's jobs",
        responses={200: {"content": {"application/json": {}, "application/x-ndjson": {}}}},
    )
    async def job(body: JobRequest) -> Response:
        action = body.input.get("action", "synthesize")
        heavy = action in ("synthesize", "upload_voice")
        async with contextlib.AsyncExitStack() as stack:
            if heavy:
                await stack.enter_async_context(slots.slot())
            cancelled = threading.Event()
            stack.callback(cancelled.set)
            items = iterate_in_thread(service.run(body.input, cancelled), name="job")
            stack.push_async_callback(items.aclose)
            first = await anext(items, None)
            if first is None:
                raise ContractError(ErrorCode.internal, "the job ended without a result")
            error = _error_item(first)
            if error is not None:
                return error_response(error)
            if not (action == "synthesize" and body.input.get("stream") is True):
                return JSONResponse(first)
            lines = _ndjson(first, items)
            return StreamingResponse(_owning(lines, stack.pop_all()), media_type="application/x-ndjson")
        raise AssertionError("unreachable")  # pragma: no cover

    return app


# ------------------------------------------------------------------------------------------------ helpers
def _speak(service: WorkerService, job: SynthesizeInput, cancelled: threading.Event) -> Iterator[Any]:
    """The job's thread: the Speech first (reference resolved, errors raised early), then its pieces."""
    speech = service.speak(job, cancelled)
    yield speech
    yield from speech.pieces


async def _samples(first: Any, items: AsyncIterator[Any]) -> AsyncIterator[np.ndarray]:
    if first is None:
        return
    yield first.samples
    async for piece in items:
        yield piece.samples


async def _sse(audio: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE: `speech.audio.delta` events (base64 audio), then `speech.audio.done`."""
    async for data in audio:
        event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")}
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b'data: {"type": "speech.audio.done"}\n\n'


async def _ndjson(first: dict[str, Any], items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield (json.dumps(first) + "\n").encode()
    async for item in items:
        # An error after the first item (e.g. the inline size cap) is the stream's last line, as in /stream.
        yield (json.dumps(item) + "\n").encode()


async def _owning(body: AsyncIterator[bytes], resources: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
    """Stream `body`, then release what the request holds (its slot, its job thread), however the stream ends."""
    started = time.perf_counter()
    try:
        async for data in body:
            yield data
    except Exception:
        # Headers are sent: the only way left to say "failed" is to break the stream off (the log has why).
        log.exception("streamed response failed after %.2f s", time.perf_counter() - started)
        raise
    finally:
        # Shielded: when the client goes away, the server cancels this stream, and the slot and the job's thread
        # must still be released (an unreleased slot would leave the worker "overloaded" for good).
        with anyio.CancelScope(shield=True):
            await resources.aclose()


async def _run_one(service: WorkerService, job_input: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming job on the service, on one thread; its `{"error"}` item raised as a ContractError."""
    items = [item async for item in iterate_in_thread(service.run(job_input), name="job")]
    if not items:
        raise ContractError(ErrorCode.internal, "the job ended without a result")
    error = _error_item(items[0])
    if error is not None:
        raise ContractError(error.code, error.message, error.field)
    return items[0]


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
        job = {
            "action": "upload_voice",
            "name": name,
            "audio": {"base64": base64.b64encode(data).decode("ascii")},
            "overwrite": overwrite,
        }
        if isinstance(text, str) and text:
            job["text"] = text
        return job
    try:
        raw = await request.json()
    except ValueError:
        raise ContractError(ErrorCode.invalid_input, "body must be JSON or multipart/form-data") from None
    if not isinstance(raw, dict):
        raise ContractError(ErrorCode.invalid_input, "body must be a JSON object")
    parsed = parse_job_input({**raw, "action": "upload_voice"})  # coded errors, fields named as in the contract
    assert isinstance(parsed, UploadVoiceInput)
    return parsed.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------------------------------------ serving
async def serve(service: WorkerService, settings: Settings) -> None:
    """uvicorn on PORT (and the health check alone on PORT_HEALTH when that differs), until SIGTERM/SIGINT."""
    import uvicorn

    app = create_app(service, settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn installs one signal handler per server, the last one wins: stop them all together.
            for server in servers:
                uvicorn.Server.handle_exit(server, sig, frame)

    host = settings.worker.bind_host
    servers: list[uvicorn.Server] = [Server(uvicorn.Config(app, host=host, port=settings.http.port, access_log=False))]
    health_port = settings.http.port_health
    if health_port is not None and health_port != settings.http.port:
        health_app = FastAPI(openapi_url=None)
        health_app.add_api_route(settings.http.health_check_path, _health_only(app), methods=["GET"])
        servers.append(
            uvicorn.Server(uvicorn.Config(health_app, host=host, port=health_port, access_log=False, lifespan="off"))
        )
    log.info(
        "http mode: serving on port %d (health %s on port %d)",
        settings.http.port,
        settings.http.health_check_path,
        health_port or settings.http.port,
    )
    await asyncio.gather(*(server.serve() for server in servers))


def _health_only(app: FastAPI) -> Any:
    """The main app's health route, to mount on the health port."""
    for route in app.routes:
        if getattr(route, "name", None) == "ping":
            return route.endpoint  # type: ignore[attr-defined]
    raise RuntimeError("the app has no health route")
