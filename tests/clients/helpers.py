"""Helpers that let one test body drive the sync `Client` and the `AsyncClient` alike."""

from __future__ import annotations

import inspect
import io
import wave
from typing import Any, TypedDict


class Timing(TypedDict):
    """The client options that set how long it waits between retries and polls."""

    backoff_base: float
    backoff_max: float
    poll_interval: float
    poll_interval_max: float


# Fast retries and polls: the behaviour under test is the same, the waits are just shorter.
FAST = Timing(backoff_base=0.01, backoff_max=0.05, poll_interval=0.01, poll_interval_max=0.02)


async def resolve(value: Any) -> Any:
    """The value of a sync call, or the awaited value of an async one."""
    return await value if inspect.isawaitable(value) else value


async def collect(stream: Any, into: list[Any] | None = None) -> list[Any]:
    """Every item of a sync or async iterable, appended to `into` one by one (so a failure keeps the earlier ones)."""
    items = [] if into is None else into
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            items.append(item)
    else:
        for item in stream:
            items.append(item)
    return items


def pcm_wav(frames: int, value: int = 1000) -> bytes:
    """A mono 16-bit 24 kHz WAV of `frames` samples all equal to `value`: chunks whose joins a test can check."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(value.to_bytes(2, "little", signed=True) * frames)
    return buffer.getvalue()
