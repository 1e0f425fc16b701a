"""RunPod entry point: `python -m worker.handler` (what the image runs).

The engine is built once, before the first job (model load + warm-up); a failure to build it is kept and
returned to every job as `model_unavailable` (see WorkerService). The handler is an async generator so that
`stream: true` jobs reach RunPod's `/stream` chunk by chunk; with `return_aggregate_stream` the same items are
collected into the job's output list for `/runsync` and `/status`. A job that is not streamed yields exactly one
item, so its output is a one-element list.

`python -m worker.handler --test_input '{"input": {...}}'` runs one job locally and prints its result.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from worker.config import get_settings
from worker.service import WorkerService

log = logging.getLogger("worker")

_service: WorkerService | None = None


def build_service() -> WorkerService:
    """The process's one WorkerService, its engine loaded (or its load failure kept)."""
    global _service
    if _service is None:
        settings = get_settings()

        def load_engine():
            from worker.engine import Engine  # noqa: PLC0415 - torch is imported here, once

            return Engine.load(settings.model)

        _service = WorkerService(settings, load_engine)
        _service.start()
    return _service


_DONE = object()


async def _iterate_in_thread(items: Iterator[Any]) -> AsyncIterator[Any]:
    """Drive a blocking iterator from a worker thread, so the event loop (heartbeats, cancellation) stays free."""
    while True:
        item = await asyncio.to_thread(next, items, _DONE)
        if item is _DONE:
            return
        yield item


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    async for item in _iterate_in_thread(build_service().run(job.get("input"))):
        yield item


async def run_collected(job: dict[str, Any]) -> Any:
    """Non-streaming form of `handler` for runpod's `--test_input` mode, which cannot drive generators."""
    items = [item async for item in handler(job)]
    failed = [item for item in items if "error" in item]
    if failed:
        return failed[0]  # runpod turns a dict's "error" key into a failed job
    return items[0] if len(items) == 1 else items


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.worker.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    import runpod  # noqa: PLC0415 - not needed by importers of this module (tests, devstack)

    build_service()
    local_test = any(arg.startswith("--test_input") for arg in sys.argv[1:])
    runpod.serverless.start(
        {
            "handler": run_collected if local_test else handler,
            "concurrency_modifier": lambda _current: settings.worker.concurrency,
            "return_aggregate_stream": True,
        }
    )


if __name__ == "__main__":
    main()
