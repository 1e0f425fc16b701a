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
import importlib
import logging
import platform
import sys
import threading
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from worker import batcher, log_redaction
from worker.async_bridge import iterate_in_thread
from worker.config import get_settings
from worker.service import WorkerService
from worker.stand_ins import StandIn, import_with_stand_ins

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

        def load_engine():
            if startup_failure is not None:
                raise RuntimeError(startup_failure)
            from worker.engine import Engine

            return Engine.load(settings.model)

        _service = WorkerService(settings, load_engine)
        if start:
            _service.start()
    return _service


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "Unable to get processor info."


def import_runpod() -> types.ModuleType:
    """`runpod`, imported without two start-up costs it pays for features a worker never uses.

    At import, runpod's debugger module asks py-cpuinfo for the processor's name, which starts a second Python
    interpreter (~1.1 s of a ~4.7 s cold start on the tiny model), and its CLI's SSH helpers import paramiko
    (~0.2 s). While runpod is imported, `cpuinfo` is a stand-in that reads the name from /proc/cpuinfo and
    `paramiko` one that imports the real module on first use; both are removed right after. Modules already
    imported are used as they are.
    """
    cpuinfo = types.ModuleType("cpuinfo")
    cpuinfo.get_cpu_info = lambda: {"brand_raw": _processor_name()}
    return import_with_stand_ins("runpod", {"cpuinfo": cpuinfo, "paramiko": StandIn("paramiko")})


def load_runpod() -> tuple[types.ModuleType, str | None]:
    """`runpod`, and why its lean import failed (None when it did not).

    A failed lean import (a runpod upgrade that breaks a stand-in) falls back to the plain import, so the worker
    can still answer: every job then gets model_unavailable with the reason, as for a failed model load, instead
    of a crash loop that RunPod bills and that shows nobody the cause.
    """
    try:
        return import_runpod(), None
    except Exception as exc:
        log.exception("runpod's lean import failed; every job will get model_unavailable")
        return importlib.import_module("runpod"), f"runpod's import failed: {type(exc).__name__}: {exc}"


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
    build_service(runpod_failure)
    jobs_at_once = batcher.concurrency(settings)
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
