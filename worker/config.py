"""Worker configuration: every setting comes from an environment variable, read once per process.

A variable set to an empty string counts as unset: RunPod's console and Hub form leave a blank field empty.

The README's "Configuration" table is generated from the field descriptions here
(`python -m worker.config --update-readme`; a test fails when it is stale), so a setting is documented where it
is declared.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.model_facts import ALIGNER_BUNDLE, DEFAULT_MODEL, IMAGE_SETTINGS_FILE, default_aligner_dir

# RunPod refuses a job result larger than this for /runsync and /status (its documented payload limit).
RUNPOD_RESULT_LIMIT_BYTES = 20 * 1024 * 1024


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "f5tts-worker"


class ModelSettings(BaseSettings):
    """Which F5-TTS model to load, and how. In the image, the build's choices (IMAGE_SETTINGS_FILE) come under
    the environment."""

    model_config = SettingsConfigDict(
        env_prefix="F5TTS_",
        extra="ignore",
        env_ignore_empty=True,
        protected_namespaces=(),
        env_file=IMAGE_SETTINGS_FILE,
    )

    model: str = Field(
        DEFAULT_MODEL, description="Model name: picks `f5_tts/configs/<model>.yaml` and the published checkpoint."
    )
    model_cfg: Path | None = Field(
        None, description="Model YAML (f5-tts config format); default: the one shipped with f5-tts for `F5TTS_MODEL`."
    )
    ckpt_file: str | None = Field(
        None,
        description="Checkpoint (.safetensors/.pt), local path or `hf://owner/repo/file`; default: the published "
        "checkpoint of `F5TTS_MODEL` from the Hugging Face cache. The image's settings name the float16 copy its "
        "build baked (`python -m worker.prefetch --float16`; docs/image.md).",
    )
    vocab_file: str | None = Field(
        None, description="Vocabulary file; default: the one next to the checkpoint, else f5-tts's."
    )
    vocoder_dir: Path | None = Field(
        None,
        description="Local Vocos directory (config.yaml + pytorch_model.bin); default: charactr/vocos-mel-24khz from the HF cache.",
    )
    device: str = Field(
        "auto",
        description="`cuda`, `cuda:N`, `cpu` or `auto`: cuda when usable, else cpu with a warning; on RunPod "
        "(`RUNPOD_POD_ID` set) `auto` means `cuda`. Without a usable GPU, `cuda` fails every job with "
        "`model_unavailable` and the reason, never a silent CPU worker (the image sets `cuda`).",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto",
        description="Weights dtype; `auto` is float16 on CUDA and float32 on CPU. The image's checkpoint is baked in "
        "float16: `float32` or `bfloat16` want an image built with `WEIGHTS_DTYPE=float32`.",
    )
    attn_backend: Literal["torch", "flash_attn"] = Field(
        "torch",
        description="DiT attention: torch SDPA or flash-attn (the image sets `flash_attn`, or `torch` when built with "
        "`FLASH_ATTN=none`).",
    )
    warmup: bool = Field(True, description="Run one short synthesis before taking the first job.")
    auto_transcribe: bool = Field(
        False,
        description="Transcribe references that come without a transcript (F5's Whisper path). Needs the Whisper "
        "extra: image build arg `WITH_WHISPER=true` (its weights baked in), or `make setup WITH_WHISPER=1`.",
    )
    aligner_dir: Path = Field(
        default_factory=default_aligner_dir,
        description=f"Word aligner for `word_timestamps` and `subtitle_format` (torchaudio's {ALIGNER_BUNDLE}, "
        "baked by `python -m worker.prefetch`): a directory of config.json + model.safetensors; default: "
        "`$HF_HOME/f5tts-aligner/` (the image's is baked in).",
    )
    aligner_preload: bool = Field(
        False,
        description="Load the word aligner at start; otherwise it is loaded by the first job that asks for word "
        "timings or subtitles.",
    )


class StorageSettings(BaseSettings):
    """The S3-compatible bucket (Backblaze B2 in production). Names follow RunPod's own `BUCKET_*` convention."""

    model_config = SettingsConfigDict(env_prefix="BUCKET_", extra="ignore", env_ignore_empty=True)

    endpoint_url: str | None = Field(
        None, description="S3 endpoint, e.g. `https://s3.us-west-004.backblazeb2.com`. Unset: no bucket."
    )
    name: str | None = Field(None, description="Bucket name. Unset: no bucket (base64 delivery, voices on local disk).")
    region: str | None = Field(None, description="Region; default: taken from a B2 endpoint URL, else `us-east-1`.")
    access_key_id: SecretStr | None = Field(None, description="Key id (B2 application key id).")
    secret_access_key: SecretStr | None = Field(None, description="Secret key (B2 application key).")
    url_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned audio URLs, seconds.")
    prefix: str = Field("", description="Key prefix inside the bucket (lets several deployments share one bucket).")

    @property
    def configured(self) -> bool:
        return bool(self.endpoint_url and self.name)


class WorkerSettings(BaseSettings):
    """Limits and local paths of the worker process."""

    model_config = SettingsConfigDict(env_prefix="F5TTS_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Local voices (no bucket) and the voice cache."
    )
    max_audio_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest reference audio accepted (decoded bytes)."
    )
    max_output_bytes: int = Field(
        RUNPOD_RESULT_LIMIT_BYTES,
        ge=1024,
        description="Largest base64 result returned inline (RunPod's limit is 20 MB).",
    )
    fetch_timeout_s: float = Field(15.0, gt=0, le=300, description="Timeout for fetching reference audio by URL.")
    allow_private_urls: bool = Field(
        False, description="Allow reference URLs on loopback/private/link-local addresses (devstack and tests only)."
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Jobs one worker runs at once (queue mode: RunPod's concurrency_modifier; http mode: the "
        "synthesis slots); default: `F5TTS_MAX_BATCH`, so concurrent jobs can fill a batch.",
    )
    max_batch: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Most text chunks (of one job or of concurrent ones, with the same `nfe_step`, `cfg_strength` "
        "and `sway_sampling_coef`) sampled in one model call; default: 8 on a GPU (where one chunk leaves it mostly "
        "idle), 1 on a CPU (where a batch costs more than its chunks one by one). A batch mate never changes a "
        "chunk's words, length or voice; its samples agree within float rounding.",
    )
    batch_frames: int = Field(
        16384,
        ge=1,
        description="Most mel frames (~10.7 ms each) one model call pads to: chunks in it x the longest chunk's "
        "reference + text frames. Bounds the GPU memory a batch takes; a chunk over it alone still runs.",
    )
    batch_wait_ms: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="How long a chunk waits for other jobs' chunks to share its model call; default: 5 on a GPU, "
        "0 on a CPU.",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    serve: Literal["queue", "http"] = Field(
        "queue",
        description="`queue`: RunPod's job queue (`runpod.serverless.start`); `http`: an HTTP server on `PORT` for "
        "RunPod load-balancing endpoints (OpenAI-compatible `/v1/audio/speech`, ElevenLabs-compatible "
        "`/elevenlabs/v1/...`, the native contract; docs/http.md).",
    )
    api_key: SecretStr | None = Field(
        None,
        description="http mode: key every request but the health check must carry (`Authorization: Bearer <key>`, "
        "or ElevenLabs' `xi-api-key: <key>`). Leave unset on RunPod "
        "(its load balancer checks the key); set it anywhere else so the server is never open by accident.",
    )
    bind_host: str = Field(
        "0.0.0.0", description="http mode: address the server listens on (the devstack uses 127.0.0.1)."
    )
    busy_wait_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="http mode: how long a request waits for one of the `F5TTS_CONCURRENCY` synthesis slots "
        "before it is answered 503 with Retry-After (RunPod drops requests an overloaded worker piles up).",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description="http mode: how long the server waits for a client to take the next part of a response; a "
        "client that reads no faster is dropped and its synthesis slot freed.",
    )
    max_request_bytes: int = Field(
        30 * 1024 * 1024,
        ge=1024,
        description="http mode: largest request body (RunPod's load balancer takes 30 MB); a chunked body is "
        "counted as it arrives and refused with 413 at the limit.",
    )


class HttpSettings(BaseSettings):
    """Where the http serving mode listens: RunPod's own variable names for load-balancing endpoints."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", env_ignore_empty=True)

    port: int = Field(80, ge=1, le=65535, description="http mode: port of the API server (RunPod's default is 80).")
    port_health: int | None = Field(
        None, ge=1, le=65535, description="http mode: port of the health check; default: `PORT`."
    )
    health_check_path: str = Field(
        "/ping", pattern=r"^/[A-Za-z0-9/_.-]*$", description="http mode: path RunPod's load balancer polls."
    )


class Settings:
    """All settings, grouped; built once per process by `get_settings()`."""

    def __init__(
        self,
        model: ModelSettings | None = None,
        storage: StorageSettings | None = None,
        worker: WorkerSettings | None = None,
        http: HttpSettings | None = None,
    ) -> None:
        self.model = model or ModelSettings()
        self.storage = storage or StorageSettings()
        self.worker = worker or WorkerSettings()
        self.http = http or HttpSettings()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_markdown() -> str:
    """A Markdown table of every environment variable, for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in (ModelSettings, StorageSettings, WorkerSettings, HttpSettings):
        prefix = cls.model_config["env_prefix"]
        for name, field in cls.model_fields.items():
            default = "(computed)" if field.default_factory else field.default
            default = (
                "unset" if default is None else f"`{str(default).lower() if isinstance(default, bool) else default}`"
            )
            rows.append(f"| `{prefix}{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


README_MARKERS = ("<!-- config-table:start -->", "<!-- config-table:end -->")


def readme_with_table(readme: str) -> str:
    """The README text with the configuration table between its markers replaced by the current one."""
    start, end = README_MARKERS
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{settings_markdown()}\n{end}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--update-readme"]:
        readme = Path("README.md")
        readme.write_text(readme_with_table(readme.read_text()))
    else:
        print(settings_markdown())
