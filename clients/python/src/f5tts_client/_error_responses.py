"""Reading what the API and the worker send back on failure into the typed exceptions of `_exceptions.py`
(and of `_generated/error_code_exceptions.py`, one per worker error code).

A failed job's `error` reaches the client in one of three shapes, depending on how the handler failed:

1. the handler returned `{"error": "<string>"}`: our worker's string is the JSON of the contract's `ErrorBody`
   (`{"code", "message", "field"}`); another handler's may be any text;
2. a (non-generator) handler raised: RunPod sends the JSON of `{"error_type", "error_message",
   "error_traceback", ...}` as the string;
3. a generator handler raised: RunPod sends `"handler: <message> \\ntraceback: ..."`.

All three become a `WorkerError` subclass chosen by code; shapes without a code get `internal`. Tracebacks are
dropped from messages (the worker's log has them); the raw string stays on `exc.raw` for debugging.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from f5tts_client._config import Secret
from f5tts_client._exceptions import (
    APIStatusError,
    AuthenticationError,
    EndpointNotFound,
    RateLimitError,
    ServerError,
    WorkerError,
)
from f5tts_client._generated.error_code_exceptions import ERRORS_BY_CODE

INTERNAL = "internal"
MAX_MESSAGE_CHARS = 1000
_GENERATOR_PREFIX = "handler:"
_TRACEBACK_MARK = "\ntraceback:"


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def parse_job_error(raw: Any) -> tuple[str, str, str | None]:
    """`(code, message, field)` of a failed job's `error`, whichever of the three shapes it has."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith(_GENERATOR_PREFIX):  # shape 3
            return parse_job_error(text[len(_GENERATOR_PREFIX) :].split(_TRACEBACK_MARK, 1)[0])
        try:
            decoded = json.loads(text)
        except ValueError:
            return INTERNAL, _short(text) or "the job failed without a message", None
        if not isinstance(decoded, dict):
            return INTERNAL, _short(text), None
        raw = decoded
    if isinstance(raw, dict):
        if isinstance(raw.get("code"), str) and isinstance(raw.get("message"), str):  # shape 1: ErrorBody
            field = raw.get("field")
            return raw["code"], _short(raw["message"]), field if isinstance(field, str) else None
        if "error_message" in raw:  # shape 2: a raised exception, as RunPod reports it
            code, message, field = parse_job_error(str(raw["error_message"]))
            kind = str(raw.get("error_type", "")).removeprefix("<class '").removesuffix("'>").rsplit(".", 1)[-1]
            if code == INTERNAL and kind:
                message = f"the handler raised {kind}: {message}"
            return code, message, field
        if "error" in raw:  # nested {"error": ...}
            return parse_job_error(raw["error"])
        return INTERNAL, _short(json.dumps(raw)), None
    return INTERNAL, _short(str(raw)), None


def job_error(raw: Any, *, job_id: str | None) -> WorkerError:
    code, message, field = parse_job_error(raw)
    cls = ERRORS_BY_CODE.get(code, WorkerError)
    error = cls(message, code=code, field=field, job_id=job_id)
    error.raw = raw
    return error


def _response_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _short(response.text) or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str):
                return _short(body[key])
    return _short(json.dumps(body))


def redact(text: str, secret: Secret | None) -> str:
    """Remove the key from text that came from elsewhere (a server may echo what it was sent)."""
    if secret is not None and secret.reveal() and secret.reveal() in text:
        return text.replace(secret.reveal(), "**********")
    return text


def status_error(response: httpx.Response, secret: Secret | None, *, what: str) -> APIStatusError:
    """The exception for an HTTP error answer of the API to `what` (e.g. `POST /run`)."""
    status = response.status_code
    detail = redact(_response_message(response), secret)
    if status in (401, 403):
        return AuthenticationError(
            f"{what}: the endpoint refused the API key (HTTP {status}): {detail}. Check RUNPOD_API_KEY.",
            status_code=status,
        )
    if status == 404:
        return EndpointNotFound(
            f"{what}: no such endpoint (HTTP 404): {detail}. Check F5TTS_ENDPOINT_ID / F5TTS_ENDPOINT_URL.",
            status_code=status,
        )
    if status == 429:
        return RateLimitError(f"{what}: rate limited (HTTP 429) after retries: {detail}", status_code=status)
    if status >= 500:
        return ServerError(f"{what}: the API failed (HTTP {status}) after retries: {detail}", status_code=status)
    return APIStatusError(f"{what}: HTTP {status}: {detail}", status_code=status)
