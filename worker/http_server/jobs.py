"""Driving a service job from a request: the job's blocking generator on a thread of its own
(`worker.async_bridge`), its error item raised as a ContractError, the bodies streamed from its items (which
`responses.OwningStreamingResponse` sends, releasing what the request holds however the stream ends), and the
whole-file answers stopped when their client leaves (`unless_client_leaves`)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from worker.async_bridge import iterate_in_thread
from worker.http_server.errors import error_item
from worker.schema import ContractError, ErrorCode, SynthesizeInput
from worker.service import SpeechPiece, WorkerService

log = logging.getLogger("worker.http")


def speech_items(service: WorkerService, job: SynthesizeInput, cancelled: threading.Event) -> Iterator[Any]:
    """The job's thread: the Speech first (reference resolved, errors raised early), then its pieces."""
    speech = service.speak(job, cancelled)
    yield speech
    yield from speech.pieces


async def piece_samples(first: SpeechPiece | None, pieces: AsyncIterator[SpeechPiece]) -> AsyncIterator[np.ndarray]:
    """The samples of `first`, then of every later piece."""
    if first is None:
        return
    yield first.samples
    async for piece in pieces:
        yield piece.samples


async def ndjson(first: dict[str, Any], items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Result items as JSON lines. An error after the first item (e.g. the inline size cap) is the stream's
    last line, as in the queue's /stream."""
    yield (json.dumps(first) + "\n").encode()
    async for item in items:
        yield (json.dumps(item) + "\n").encode()


async def run_one(service: WorkerService, job_input: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming job on the service, on one thread; its `{"error"}` item raised as a ContractError."""
    items = [item async for item in iterate_in_thread(service.run(job_input), name="job")]
    if not items:
        raise ContractError(ErrorCode.internal, "the job ended without a result")
    error = error_item(items[0])
    if error is not None:
        raise ContractError(error.code, error.message, error.field)
    return items[0]


async def unless_client_leaves(request: Request, answer: Coroutine[Any, Any, Response]) -> Response:
    """`answer` (a route that makes its whole answer before sending any of it), cancelled when the client leaves
    first. Nothing is sent until the end, so no failed send would tell; without this the synthesis would run on
    for nobody, holding its slot. Cancelling it releases what it holds (its `async with` blocks) at once."""
    work = asyncio.create_task(answer)
    gone = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        work.cancel()  # a no-op once it is done; else the client left (or this request was cancelled)
        await asyncio.gather(work, gone, return_exceptions=True)
    if work.cancelled():
        log.info("the client left before its answer was made: stopped %s %s", request.method, request.url.path[:200])
        return Response(status_code=499)  # nginx's "client closed request"; no one reads it
    return work.result()  # the route's own errors are raised here, for its API's error envelope


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects. The body is read already: what the server has next is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
