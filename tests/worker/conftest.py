"""Shared worker fixtures: the tiny random-weight F5-TTS model, built once per session and loaded through
f5-tts's real loaders; a real S3 protocol server (moto, loopback) and buckets on it; WorkerService instances
over both.

Other test modules rely on these names (and on `tiny_model_env`, tests/support.py): `engine`, `make_model_settings`, `s3_server`,
`s3_bucket`, `s3_service`, `local_service`, `bucket_keys`, `reference_wav`...
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Unpack

import numpy as np
import pytest
import soundfile as sf
from pydantic import SecretStr

from tests.worker.helpers import ModelOverrides, make_service
from tests.worker.s3_server import S3Bucket, S3Server, running_s3_server
from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import Engine
from worker.model_facts import builtin_audio_file
from worker.service import WorkerService


@pytest.fixture(scope="session")
def make_model_settings(tiny_model_env: dict[str, str]) -> Callable[..., ModelSettings]:
    """ModelSettings for the tiny model, fields overridable (`make_model_settings(attn_backend="flash_attn")`).

    Read from the tiny model's F5TTS_* variables as a worker reads them, with the process's own hidden, so a
    developer's environment cannot leak in; os.environ is left as it was.
    """

    def make(**overrides: Unpack[ModelOverrides]) -> ModelSettings:
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("F5TTS_")]:
                mp.delenv(key)
            for key, value in tiny_model_env.items():
                mp.setenv(key, value)
            return ModelSettings(_env_file=None, **overrides)

    return make


@pytest.fixture(scope="session")
def engine(make_model_settings: Callable[..., ModelSettings]) -> Engine:
    """The tiny model loaded once per session with Engine.load (f5-tts's load_model / load_vocoder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing in a test may reach the hub
        return Engine.load(make_model_settings())


# ------------------------------------------------------------------------------------------------ S3
@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    bucket = s3_server.create_bucket()
    try:
        yield bucket
    finally:
        bucket.empty()
        bucket.client.delete_bucket(Bucket=bucket.name)


# ------------------------------------------------------------------------------------------------ services
@pytest.fixture
def s3_service(engine, s3_bucket: S3Bucket, tmp_path) -> WorkerService:
    return make_service(engine, s3_bucket.settings(), tmp_path)


@pytest.fixture
def bucket_keys(s3_bucket: S3Bucket) -> Callable[[], list[str]]:
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
