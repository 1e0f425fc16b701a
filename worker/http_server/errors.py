"""Errors over HTTP: the status of each of the contract's error codes, and each API's error envelope.

Every failure is first an `HttpError` (status, code, message, field); the API the request was made to decides
how it looks on the wire (`envelope_for`): OpenAI's shape for the OpenAI-compatible routes and the native
contract (one client parser reads both), ElevenLabs' for its routes under `/elevenlabs`. No traceback ever leaves the process
(the log has it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.schema import MAX_ECHO_CHARS, ContractError, ErrorBody, ErrorCode, echo

RETRY_AFTER_S = 2  # what a 503 (all slots busy, model not loaded) tells the caller to wait
# The longest message and field an error carries: the messages quote caller input cut short (`schema.echo`), and
# this holds every surface to it, whatever a message was built from.
MAX_MESSAGE_CHARS = 8 * MAX_ECHO_CHARS

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


@dataclass(frozen=True)
class HttpError:
    """One failure, before an API gives it its shape. `code` is a contract error code, or one of HTTP's own
    (`invalid_api_key`, `not_found`) that the contract has no use for."""

    status: int
    code: str
    message: str
    field: str | None = None
    # The request did not match the route's schema (FastAPI's validation): an API may give that its own status.
    schema_mismatch: bool = False

    def __post_init__(self) -> None:
        # Cut with the "…" counted in: at most MAX_MESSAGE_CHARS (and MAX_ECHO_CHARS) in all, as docs/http.md says.
        if len(self.message) > MAX_MESSAGE_CHARS:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE_CHARS - 1] + "…")
        if self.field is not None and len(self.field) > MAX_ECHO_CHARS:
            object.__setattr__(self, "field", self.field[: MAX_ECHO_CHARS - 1] + "…")

    @classmethod
    def of(cls, body: ErrorBody, status: int | None = None, *, schema_mismatch: bool = False) -> HttpError:
        status = status or STATUS_BY_CODE.get(body.code, 500)
        return cls(status, body.code.value, body.message, body.field, schema_mismatch)

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else None


ErrorEnvelope = Callable[[HttpError], Response]


def openai_error(error: HttpError) -> JSONResponse:
    """OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, carrying our code."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    content = {"error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}}
    return JSONResponse(content, status_code=error.status, headers=error.headers)


def elevenlabs_error(error: HttpError) -> JSONResponse:
    """ElevenLabs' error shape, `{"detail": {"status", "message"}}`: `status` is our code, `param` the field at
    fault (when one is). A request that does not match the route's schema is a 422, as ElevenLabs answers it."""
    detail = {"status": error.code, "message": error.message}
    if error.field is not None:
        detail["param"] = error.field
    status = 422 if error.schema_mismatch else error.status
    return JSONResponse({"detail": detail}, status_code=status, headers=error.headers)


def error_item(item: dict[str, Any]) -> ErrorBody | None:
    """The ErrorBody of a service result item `{"error": "<json>"}`, None for a normal item."""
    if "error" not in item:
        return None
    return ErrorBody.model_validate_json(item["error"])


def envelope_for(request: Request) -> ErrorEnvelope:
    """The envelope of the API `request` was made to: the longest registered path prefix that matches."""
    envelopes: Sequence[tuple[str, ErrorEnvelope]] = request.app.state.error_envelopes
    path = request.url.path
    for prefix, envelope in envelopes:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return envelope
    return openai_error


def install_error_handlers(app: FastAPI, envelopes: dict[str, ErrorEnvelope], log: Any) -> None:
    """Every exception a route can raise, answered in the envelope of the request's API."""
    app.state.error_envelopes = sorted(envelopes.items(), key=lambda item: len(item[0]), reverse=True)

    @app.exception_handler(ContractError)
    async def contract_error(request: Request, exc: ContractError) -> Response:
        return envelope_for(request)(HttpError.of(exc.body))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        # An unknown key is caller input: cut it, as the contract's own messages do.
        loc = [str(p)[:MAX_ECHO_CHARS] for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")[: MAX_ECHO_CHARS * 4]
        body = ErrorBody(code=ErrorCode.invalid_input, message=f"{field}: {message}" if field else message, field=field)
        return envelope_for(request)(HttpError.of(body, schema_mismatch=True))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"no such route: {request.method} {echo(request.url.path)}"
            return envelope_for(request)(HttpError(404, "not_found", message))
        if exc.status_code == 413:  # the body cap (`body_limit`)
            code = ErrorCode.audio_too_large
        else:
            code = ErrorCode.invalid_input if exc.status_code < 500 else ErrorCode.internal
        return envelope_for(request)(HttpError(exc.status_code, code.value, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("request failed", exc_info=exc)
        return envelope_for(request)(HttpError(500, ErrorCode.internal.value, "internal error; see the worker log"))
