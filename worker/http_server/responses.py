"""Streamed responses that own what their request holds (its synthesis slot, its job thread, an encoder process).

`OwningStreamingResponse` releases those in its own `try/finally`, which runs however the response ends: sent
in full, the client gone (Starlette cancels the response), a send that timed out, or the stream failing. A
`finally` in the body's generator is not enough: a generator abandoned mid-iteration is closed only when the
garbage collector finalizes it, which may be minutes later, and until then the slot stays taken and the
worker answers 503 `overloaded` with its CPU idle.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("worker.http")


class OwningStreamingResponse(StreamingResponse):
    """Streams `body`, then closes it and `resources` (an exit stack holding the request's slot, job, encoder),
    however the response ends. The routers hand over their stack with `stack.pop_all()`."""

    def __init__(self, body: AsyncIterator[bytes], resources: contextlib.AsyncExitStack, **options: Any) -> None:
        super().__init__(_logged(body), **options)
        self._body = body
        self._resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: when the client goes away the response is cancelled, and the release must still happen.
            with anyio.CancelScope(shield=True):
                for iterator in (self.body_iterator, self._body):
                    aclose = getattr(iterator, "aclose", None)
                    if aclose is not None:
                        await aclose()
                await self._resources.aclose()


async def _logged(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`body`, with a failure of its own (not the client's) logged: once the headers are sent, breaking the
    stream off is the only way left to say "failed", so the log says why."""
    started = time.perf_counter()
    try:
        async for data in body:
            yield data
    except Exception:
        log.exception("streamed response failed after %.2f s", time.perf_counter() - started)
        raise
