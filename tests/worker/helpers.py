"""Building WorkerService instances over the tiny engine for tests (the fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict, Unpack

from pydantic import SecretStr

from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import Engine
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
