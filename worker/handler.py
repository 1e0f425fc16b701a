"""RunPod entry point: `python -m worker.handler` (what the image runs).

The engine is built once, before the first job (model load + warm-up); a failure to build it is kept and
returned to every job as `model_unavailable` (see WorkerService). The handler is an async generator so that
`stream: true` jobs reach RunPod's `/stream` chunk by chunk; with `return_aggregate_stream` the same items are
collected into the job's output list for `/runsync` and `/status`. A job that is not streamed yields exactly one
item, so its output is a one-element list.

`python -m worker.handler --test_input '{"input": {...}}'` runs one job locally and prints its result;
`python -m worker.handler --self-check [--skip-device]` checks a start's imports, model files and device
(worker/self_check.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from worker import log_redaction
from worker.async_bridge import iterate_in_thread
from worker.config import get_settings
from worker.lean_imports import load_runpod
from worker.service import WorkerService

if TYPE_CHECKING:  # imported when a worker loads the model, not with this module (torch)
    from worker.engine import Engine

log = logging.getLogger("worker")

_service: WorkerService | None = None


def build_service(startup_failure: str | None = None, *, start: bool = True) -> WorkerService:
    """The process's one WorkerService, its engine loaded (or its load failure kept) unless `start` is false.

    `startup_failure`, a fault found before the model load (runpod's import), is kept the same way: the engine
    is not loaded and every job gets model_unavailable with that reason.
    """
    global _service
    if _service is None:
        settings = get_settings()

        def load_engine() -> Engine:
            if startup_failure is not None:
                raise RuntimeError(startup_failure)
            from worker.engine import Engine

            return Engine.load(settings.model)

        _service = WorkerService(settings, load_engine)
        if start:
            _service.start()
    return _service


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    # RunPod stops a job by cancelling this coroutine; the flag tells the job's thread to stop at the next chunk
    # instead of computing the rest of a result nobody will receive.
    cancelled = threading.Event()
    try:
        async for item in iterate_in_thread(build_service().run(job.get("input"), cancelled)):
            yield item
    finally:
        cancelled.set()


async def run_collected(job: dict[str, Any]) -> Any:
    """Non-streaming form of `handler` for runpod's `--test_input` mode, which cannot drive generators."""
    items = [item async for item in handler(job)]
    failed = [item for item in items if "error" in item]
    if failed:
        return failed[0]  # runpod turns a dict's "error" key into a failed job
    return items[0] if len(items) == 1 else items


def main() -> None:
    settings = get_settings()
    log_redaction.install(settings.worker.log_level)  # before runpod is imported: it reads its level then
    if "--self-check" in sys.argv[1:]:
        from worker.self_check import main as self_check

        raise SystemExit(self_check(sys.argv[1:]))
    if settings.worker.serve == "http":  # RunPod load-balancing endpoint: an HTTP server instead of the job queue
        from worker.http_server import serve

        asyncio.run(serve(build_service(start=False), settings))  # loads the model while /ping says 204
        return
    runpod, runpod_failure = load_runpod()  # not at module level: importers of this module (tests, devstack) need none
    jobs_at_once = build_service(runpod_failure).concurrency  # after the load: for the device it loaded on
    local_test = any(arg.startswith("--test_input") for arg in sys.argv[1:])
    runpod.serverless.start(
        {
            "handler": run_collected if local_test else handler,
            "concurrency_modifier": lambda _current: jobs_at_once,
            "return_aggregate_stream": True,
        }
    )


if __name__ == "__main__":
    main()
