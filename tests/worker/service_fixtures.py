"""Fixtures building WorkerService instances over the tiny engine (tests/worker/conftest.py) and a real S3
protocol server (tests/worker/s3_server.py). Import the fixtures by name into a test module."""

from __future__ import annotations

import io
import socket
import subprocess
import tempfile
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf
from pydantic import SecretStr

from tests.worker.s3_server import S3Bucket, s3_bucket, s3_server  # noqa: F401 - fixtures, found by name
from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.service import WorkerService
from worker.voices import builtin_audio_file

# Small enough that the bad-input table can send an oversize payload cheaply.
TEST_MAX_AUDIO_BYTES = 2_000_000


def make_service(engine, storage: StorageSettings, data_dir, **worker_overrides) -> WorkerService:
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=storage,
        worker=WorkerSettings(_env_file=None, data_dir=data_dir, max_audio_bytes=TEST_MAX_AUDIO_BYTES, **worker_overrides),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


@pytest.fixture
def s3_service(engine, s3_bucket: S3Bucket, tmp_path) -> WorkerService:  # noqa: F811
    return make_service(engine, s3_bucket.settings(), tmp_path)


@pytest.fixture
def bucket_keys(s3_bucket: S3Bucket) -> Callable[[], list[str]]:  # noqa: F811
    return s3_bucket.keys


@pytest.fixture
def local_service(engine, tmp_path) -> WorkerService:
    return make_service(engine, StorageSettings(_env_file=None), tmp_path)


@pytest.fixture
def tiny_limit_service(engine, tmp_path) -> WorkerService:
    return make_service(engine, StorageSettings(_env_file=None), tmp_path, max_output_bytes=1024)


@pytest.fixture
def failed_service(tmp_path) -> WorkerService:
    def broken_engine():
        raise FileNotFoundError("no such checkpoint: /nowhere/model.safetensors")

    settings = Settings(
        model=ModelSettings(_env_file=None),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path),
    )
    service = WorkerService(settings, engine_factory=broken_engine)
    service.start()
    return service


@pytest.fixture
def unreachable_storage_service(engine, tmp_path) -> WorkerService:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = StorageSettings(
        _env_file=None,
        endpoint_url=f"http://127.0.0.1:{port}",
        name="nowhere",
        access_key_id=SecretStr("AKIAUNREACHABLE"),
        secret_access_key=SecretStr("test-secret-never-shown"),
    )
    return make_service(engine, storage, tmp_path)


@pytest.fixture(scope="session")
def reference_wav() -> bytes:
    """The clip that ships with f5-tts, as 16-bit WAV bytes (what a user would upload)."""
    samples, rate = sf.read(builtin_audio_file(), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def ffprobe_duration() -> Callable[[bytes], float]:
    """Duration as FFmpeg decodes it: every sample counted, independent of the encoder's own bookkeeping."""

    def duration(data: bytes) -> float:
        with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
            handle.write(data)
            handle.flush()
            pcm = subprocess.run(
                ["ffmpeg", "-v", "error", "-i", handle.name, "-f", "f32le", "-ac", "1", "-ar", "24000", "-"],
                check=True,
                capture_output=True,
            ).stdout
        return len(np.frombuffer(pcm, dtype=np.float32)) / 24000

    return duration
