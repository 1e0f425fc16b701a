"""The synthesis slots: at most `F5TTS_CONCURRENCY` syntheses (and voice uploads) at once.

A request that finds every slot busy waits at most `F5TTS_BUSY_WAIT_S`, then gets `overloaded` (503 with
Retry-After): RunPod drops what an overloaded worker piles up anyway, and a quick 503 lets it route elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from worker.schema import ContractError, ErrorCode


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
