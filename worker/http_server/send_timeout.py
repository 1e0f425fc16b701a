"""A bound on how long one send to the client may take (`F5TTS_SEND_TIMEOUT_S`), for every route.

A client that stays connected but reads nothing (or reads slower than a trickle) would block the server in its
send forever, and with it the synthesis slot the response holds. Past the timeout the response is abandoned:
what it holds is released (`responses.OwningStreamingResponse`) and the connection is closed.
"""

from __future__ import annotations

import logging

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("worker.http")


class ClientTooSlow(Exception):
    """The client took more than the send timeout to take one part of the response."""


class SendTimeoutMiddleware:
    """Every `send` of the app under it must finish within `timeout_s`; the outermost middleware, so that a
    send that times out has nothing between it and the server that could still wait on the client."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
            # Returning with the response unfinished makes the server close the connection (uvicorn logs that).
            log.warning(
                "dropped a client that took no response data for %g s: %s %s",
                self.timeout_s,
                scope["method"],
                scope["path"][:200],
            )
