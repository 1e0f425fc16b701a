"""The native job contract over HTTP: `POST /job` takes `{"input": {...}}`, exactly as RunPod's queue API does,
and answers the job's output item (NDJSON items when `stream` is true), exactly what the queue mode's handler
yields. Errors have the OpenAI-compatible routes' shape (`errors.openai_error`), so one client parser reads both.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from worker.async_bridge import iterate_in_thread
from worker.http_server.errors import error_item
from worker.http_server.jobs import ndjson, unless_client_leaves
from worker.http_server.responses import OwningStreamingResponse
from worker.http_server.state import HttpState, State
from worker.schema import ContractError, ErrorCode

router = APIRouter()

# Actions that run the model (or decode and store audio): they take a synthesis slot.
HEAVY_ACTIONS = ("synthesize", "upload_voice")


class JobRequest(BaseModel):
    """A job of the native contract, as RunPod's queue API takes it: `{"input": {...}}`."""

    input: dict[str, Any] = Field(description="The job's input object (see the job contract).")


@router.post(
    "/job",
    summary="Run one job of the native contract: the same input and output as the queue mode's jobs",
    responses={200: {"content": {"application/json": {}, "application/x-ndjson": {}}}},
)
async def job(body: JobRequest, state: State, request: Request) -> Response:
    # The answer (or a stream's first item) is made before anything is sent: stopped if the client leaves first.
    return await unless_client_leaves(request, _job(body, state))


async def _job(body: JobRequest, state: HttpState) -> Response:
    action = body.input.get("action", "synthesize")
    async with contextlib.AsyncExitStack() as stack:
        if action in HEAVY_ACTIONS:
            await stack.enter_async_context(state.slots.slot())
        cancelled = threading.Event()
        stack.callback(cancelled.set)
        items = iterate_in_thread(state.service.run(body.input, cancelled), name="job")
        stack.push_async_callback(items.aclose)
        first = await anext(items, None)
        if first is None:
            raise ContractError(ErrorCode.internal, "the job ended without a result")
        error = error_item(first)
        if error is not None:
            raise ContractError(error.code, error.message, error.field)
        if not (action == "synthesize" and body.input.get("stream") is True):
            return JSONResponse(first)
        return OwningStreamingResponse(ndjson(first, items), stack.pop_all(), media_type="application/x-ndjson")
    raise AssertionError("unreachable")  # pragma: no cover
