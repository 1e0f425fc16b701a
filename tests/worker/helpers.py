"""Building WorkerService instances over the tiny engine for tests (the fixtures are in conftest.py)."""

from __future__ import annotations

from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.service import WorkerService

# Small enough that the bad-input table can send an oversize payload cheaply.
TEST_MAX_AUDIO_BYTES = 2_000_000


def make_service(engine, storage: StorageSettings, data_dir, **worker_overrides) -> WorkerService:
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=storage,
        worker=WorkerSettings(
            _env_file=None, data_dir=data_dir, max_audio_bytes=TEST_MAX_AUDIO_BYTES, **worker_overrides
        ),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service
