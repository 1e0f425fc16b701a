"""The request body cap (`F5TTS_MAX_REQUEST_BYTES`, RunPod's 30 MB by default), for every route.

A body announced larger (Content-Length) is refused before it is read (413), one whose Content-Length is no
number is a 400 (uvicorn's h11 refuses that itself; other servers may pass it on). A chunked body announces nothing: its
bytes are counted as they arrive, and the read that passes the cap raises `BodyTooLarge` (a 413 the API's error
envelope answers), so no more than the cap is ever held, whatever the route does with the body.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.http_server.errors import HttpError, envelope_for
from worker.schema import ErrorBody, ErrorCode


class BodyTooLarge(HTTPException):
    """The request body passed the cap. An HTTPException, so that FastAPI's body reading passes it on as it is
    (it turns other failures of reading into 400s) and the API's envelope answers it (`errors`: 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body over {_size(max_bytes)}")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        length = request.headers.get("content-length")
        refusal = None
        if length is not None and not length.isdigit():
            refusal = ErrorBody(code=ErrorCode.invalid_input, message="Content-Length is not a number of bytes")
        elif length is not None and int(length) > self.max_bytes:
            refusal = ErrorBody(code=ErrorCode.audio_too_large, message=BodyTooLarge(self.max_bytes).detail)
        if refusal is not None:
            await envelope_for(request)(HttpError.of(refusal))(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)


def _size(n: int) -> str:
    return f"{n // 2**20} MB" if n % 2**20 == 0 else f"{n} bytes"
