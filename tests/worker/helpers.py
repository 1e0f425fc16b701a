"""Building WorkerService instances over the tiny engine for tests (the fixtures are in conftest.py), and serving
an http-mode app under uvicorn on 127.0.0.1 for tests through a real server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from fastapi import FastAPI
from pydantic import SecretStr

from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import Engine
from worker.http_wire import bounded_server_options
from worker.service import WorkerService

# Small enough that the bad-input table can send an oversize payload cheaply.
TEST_MAX_AUDIO_BYTES = 2_000_000


class ModelOverrides(TypedDict, total=False):
    """The ModelSettings fields tests set, typed: mypy checks each against ModelSettings' own."""

    model: str
    model_cfg: Path | None
    ckpt_file: str | None
    device: str
    dtype: Literal["auto", "float16", "bfloat16", "float32"]
    attn_backend: Literal["torch", "flash_attn"]
    warmup: bool
    aligner_dir: Path
    aligner_preload: bool


class WorkerOverrides(TypedDict, total=False):
    """The WorkerSettings fields tests set, typed: mypy checks each against WorkerSettings' own."""

    max_audio_bytes: int
    max_output_bytes: int
    fetch_timeout_s: float
    allow_private_urls: bool
    concurrency: int
    max_batch: int
    batch_frames: int
    batch_wait_ms: float
    busy_wait_s: float
    api_key: SecretStr


def worker_settings(data_dir: Path, **overrides: Unpack[WorkerOverrides]) -> WorkerSettings:
    """WorkerSettings for a test: no .env file, `data_dir` for local voices, a small audio cap unless overridden."""
    overrides.setdefault("max_audio_bytes", TEST_MAX_AUDIO_BYTES)
    return WorkerSettings(_env_file=None, data_dir=data_dir, **overrides)


def make_service(
    engine: Engine, storage: StorageSettings, data_dir: Path, **worker_overrides: Unpack[WorkerOverrides]
) -> WorkerService:
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=storage,
        worker=worker_settings(data_dir, **worker_overrides),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """`app` under uvicorn on a free loopback port (a thread of this process), stopped on exit; yields the port.

    Its connections have a small kernel send buffer (accepted sockets inherit it from the listening one), as a
    busy host's may be: loopback's would otherwise grow to megabytes, and a test would need that much audio
    before the server blocks sending to a client that does not read."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **bounded_server_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def counting_chunks(service: WorkerService) -> list[object]:
    """The engine chunks the service makes from now on, as the inference thread makes them."""
    made: list[object] = []
    original = service._sampled_in_groups

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in original(*args, **kwargs):
            made.append(item)
            yield item

    service._sampled_in_groups = counting  # type: ignore[method-assign]
    return made
