"""A bound on how long one send to the client may take (`F5TTS_SEND_TIMEOUT_S`), for every route, WebSockets too.

A client that stays connected but reads nothing (or reads slower than a trickle) would block the server in its
send forever, and with it the synthesis slot the response (or realtime session) holds. Past the timeout the send
raises `ClientTooSlow`: the response is abandoned, what it holds is released (`responses.OwningStreamingResponse`,
the realtime session's own `try/finally`), and the connection is closed.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("worker.http")

# The close code a WebSocket client that took no data gets (RFC 6455 §7.4.1: "policy violation"), as the realtime
# session's silent client does.
CLOSE_TOO_SLOW = 1008


class ClientTooSlow(Exception):
    """The client took more than the send timeout to take one part of the response."""


class SendTimeoutMiddleware:
    """Every `send` of the app under it must finish within `timeout_s`; the outermost middleware, so that a
    send that times out has nothing between it and the server that could still wait on the client."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def bounded_send(message: Message) -> None:
            with anyio.move_on_after(self.timeout_s) as deadline:
                await send(message)
            if deadline.cancelled_caught:
                raise ClientTooSlow

        try:
            await self.app(scope, receive, bounded_send)
        except* ClientTooSlow:  # raised through task groups (Starlette's streaming, middleware), maybe grouped
            log.warning(
                "dropped a client that took no response data for %g s: %s %s",
                self.timeout_s,
                scope.get("method", "WebSocket"),
                scope["path"][:200],
            )
            if scope["type"] == "websocket":
                await self._close(send)
            # Returning with the response unfinished makes the server close the connection (uvicorn logs that).

    async def _close(self, send: Send) -> None:
        """A WebSocket's close frame, should the client take it within one more timeout (its data waits in front of
        the frame); past that the server closes the connection without one."""
        reason = f"send timeout: the client took no data for {self.timeout_s:g} s"
        # OSError, RuntimeError: gone already (uvicorn's ClientDisconnected is an OSError).
        with anyio.move_on_after(self.timeout_s), contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": CLOSE_TOO_SLOW, "reason": reason})
