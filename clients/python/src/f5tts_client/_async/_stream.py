"""A streaming synthesis: submit with `stream: true`, then poll `/stream/<id>` and hand out chunks as they come."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from time import monotonic
from typing import Any, BinaryIO, Self

from f5tts_client._async._jobs import AsyncJob
from f5tts_client._async._transport import AsyncTransport
from f5tts_client._audio_sink import AudioSink
from f5tts_client._exceptions import F5TTSError, JobTimeout, UnexpectedResponse
from f5tts_client._generated import models
from f5tts_client._retry import Deadline
from f5tts_client._types import AudioChunk, RunPodJobStatus

# An empty `/stream` answer that took at least this long was held by the API (a long poll), not refused at once.
LONG_POLL_S = 1.0


class AsyncAudioStream:
    """Chunks of one streaming synthesis, in order, each as soon as the worker produced it.

    Iterate it once. `job_id` is known after the first chunk was asked for; `summary` (the contract's
    `StreamEnd`: total duration, seed, timings) once iteration ended. As a context manager it cancels the job
    when left before the end, so an abandoned stream does not keep a GPU busy.

    Each chunk is a complete audio file; decoded and joined in order they are exactly the non-streamed result of
    the same input and seed (the worker cross-fades across chunk joins before sending). `save()` writes them into
    one file, or a pipe into a player, as they arrive.
    """

    def __init__(self, transport: AsyncTransport, job_input: dict[str, Any], timeout: float) -> None:
        self._transport = transport
        self._job_input = job_input
        self._timeout = timeout
        self._started = False
        self.job_id: str | None = None
        self.summary: models.StreamEnd | None = None
        self.finished = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(job_id={self.job_id!r}, finished={self.finished})"

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        if self._started:
            raise RuntimeError("a stream can be iterated only once")
        self._started = True
        return self._chunks()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the job if it is still running (no-op once the stream ended)."""
        if self.job_id is not None and not self.finished:
            self.finished = True
            with contextlib.suppress(F5TTSError):  # best effort: the job ends by itself anyway
                await self._transport.cancel(self.job_id, Deadline(self._transport.settings.request_timeout))

    async def save(self, target: str | os.PathLike[str] | BinaryIO) -> models.StreamEnd:
        """Write the audio into one playable file (a path, or an open binary stream such as a player's stdin) as
        each chunk arrives; returns the summary. wav, mp3 and ogg only: FLAC files cannot be joined."""
        fmt = self._job_input.get("format", "wav")
        sink = AudioSink(target if hasattr(target, "write") else Path(target), fmt)  # type: ignore[arg-type]
        try:
            async for chunk in self:
                sink.write(chunk.audio)
        finally:
            sink.close()
        if self.summary is None:  # _chunks raises before this; kept for the type checker
            raise UnexpectedResponse(f"streaming job {self.job_id} ended without its summary item")
        return self.summary

    async def _chunks(self) -> AsyncIterator[AudioChunk]:
        settings = self._transport.settings
        deadline = Deadline(self._timeout)
        state = await self._transport.submit(self._job_input, deadline=deadline)
        self.job_id = state.id
        next_index = 0
        # Chunks that came after a gap wait here for the missing one, so the caller always gets them in order.
        # (A gap means a `/stream` answer was lost after the API had handed its items out; see _fill_gaps.)
        held: dict[int, AudioChunk] = {}
        interval = settings.poll_interval
        while True:
            asked = monotonic()
            answer = await self._transport.stream(self.job_id, deadline)
            long_polled = monotonic() - asked >= LONG_POLL_S
            for item in answer.items:
                chunk = self._read_item(item)
                if chunk is None or chunk.index < next_index:
                    continue  # the summary, or a chunk already handed out
                held[chunk.index] = chunk
                while next_index in held:
                    yield held.pop(next_index)
                    next_index += 1
            if answer.status in RunPodJobStatus.TERMINAL:
                break
            if answer.items:
                interval = settings.poll_interval
            else:
                # An answer the API held until its wait ran out (a long poll) is followed at once: a chunk finished
                # just after it is not delayed by a sleep on top. One answered at once waits, slowing down.
                if not long_polled:
                    await asyncio.sleep(deadline.cap(interval))
                    interval = min(interval * 1.5, settings.poll_interval_max)
                if deadline.expired:
                    raise JobTimeout(
                        f"streaming job {self.job_id} did not finish within {deadline.seconds:g} s", job_id=self.job_id
                    )
        self.finished = True
        final = None
        if answer.status != RunPodJobStatus.COMPLETED:
            # The error (or cancellation) is on the job's status, not in its stream.
            final = await self._transport.status(self.job_id, deadline)
            AsyncJob(self._transport, self.job_id, lambda output: output, final)._outcome(final)
        if held or self.summary is None or next_index < self.summary.chunks:
            final = final or await self._transport.status(self.job_id, deadline)
            for item in final.output if isinstance(final.output, list) else []:
                chunk = self._read_item(item)
                if chunk is not None and chunk.index >= next_index:
                    held.setdefault(chunk.index, chunk)
            for index in sorted(held):
                if index != next_index:
                    raise UnexpectedResponse(f"streaming job {self.job_id}: chunk {next_index} was lost")
                yield held.pop(index)
                next_index += 1
        if self.summary is None:
            raise UnexpectedResponse(f"streaming job {self.job_id} ended without its summary item")

    def _read_item(self, item: Any) -> AudioChunk | None:
        """A chunk, or None for the summary (kept on `self.summary`)."""
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "chunk":
            return AudioChunk.model_validate(item)
        if kind == "end":
            self.summary = models.StreamEnd.model_validate(item)
            return None
        raise UnexpectedResponse(f"job {self.job_id}: unknown stream item {str(item)[:200]!r}")
