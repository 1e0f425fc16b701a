"""F5-TTS inside the worker: loaded once through f5-tts's own loaders, then chunked generation.

Everything model-related goes through `f5_tts.infer.utils_infer` (`load_model`, `load_vocoder`,
`infer_batch_process`), so each chunk is synthesized exactly as f5-tts's own CLI would; this module only picks
the device and the dtype, seeds the RNGs and cuts the work into per-chunk steps. The files come from
`worker.model_files`, the lean import of f5-tts from `worker.lean_imports`. The text is cut by `worker.chunk_plan`
rather than f5-tts's `chunk_text`: a short first chunk for streams, and no chunk the model cannot take.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import random
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from worker import chunk_plan
from worker.config import ModelSettings
from worker.lean_imports import import_f5_infer
from worker.model_facts import (
    BUILTIN_REFERENCE_TEXT,
    SAMPLE_RATE,
    builtin_audio_file,
)
from worker.model_files import EngineLoadError, read_model_config, resolve_model_files
from worker.schema import ContractError, ErrorCode

log = logging.getLogger("worker.engine")

TARGET_RMS = 0.1  # f5-tts's default reference loudness

WHISPER_MISSING = (
    "automatic transcription (F5TTS_AUTO_TRANSCRIBE) needs the Whisper extra, which this worker lacks: send the "
    "reference's transcript (ref_text, or text for upload_voice), or build the image with "
    "--build-arg WITH_WHISPER=true (locally: make setup WITH_WHISPER=1)"
)


@dataclass(frozen=True)
class GeneratedChunk:
    text: str
    samples: np.ndarray  # float32 mono at Engine.sample_rate
    inference_s: float
    index: int = 0  # 0-based position in the chunk plan
    count: int = 1  # chunks in the plan: the consumer knows the last one when it comes
    pause_before: float = 0.0  # seconds of silence the text asks for before it (first chunk only)
    pause_after: float = 0.0  # ... and after it (a break or paragraph boundary): no cross-fade there


# ------------------------------------------------------------------------------------------------ engine
def on_runpod() -> bool:
    """RunPod sets RUNPOD_POD_ID in every worker it starts."""
    return bool(os.environ.get("RUNPOD_POD_ID"))


def cuda_unusable_reason(device: str = "cuda") -> str | None:
    """Why `device` (cuda or cuda:N) cannot run a kernel, or None when it can. Asks CUDA itself, so the reason
    is the driver's ("no NVIDIA driver", "CUDA driver version is insufficient", ...), not a guess."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    try:
        torch.cuda.init()
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            return f"{device} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        (torch.zeros(1, device=device) + 1).item()  # a real allocation and kernel launch
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def resolve_device(setting: str) -> str:
    """The torch device for F5TTS_DEVICE. Never a silent CPU fallback where a GPU was meant: `cuda` without a
    usable GPU raises (every job then gets model_unavailable with the reason), and so does `auto` on RunPod,
    where a CPU worker would be ~50x slower and still billed as a GPU; elsewhere `auto` may pick the CPU, with
    a warning that says why."""
    requested = setting
    if setting == "auto":
        if on_runpod():
            setting = "cuda"  # RunPod runs this worker on GPUs only: a missing GPU is a fault, not a choice
        elif (reason := cuda_unusable_reason()) is None:
            return "cuda"
        else:
            log.warning("F5TTS_DEVICE=auto: running on the CPU (much slower) because CUDA is not usable: %s", reason)
            return "cpu"
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise EngineLoadError(f"F5TTS_DEVICE={setting!r} is not a device (auto, cpu, cuda or cuda:N)") from exc
    if device.type not in ("cpu", "cuda"):
        raise EngineLoadError(f"F5TTS_DEVICE={setting!r}: only cpu and cuda are supported")
    if device.type == "cuda" and (reason := cuda_unusable_reason(str(device))) is not None:
        where = " (auto means cuda on RunPod)" if requested == "auto" else ""
        raise EngineLoadError(f"F5TTS_DEVICE={requested!r}{where} but no usable GPU: {reason}")
    return str(device)


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def seed_everything(seed: int) -> None:
    """Seed every RNG inference may touch (torch also seeds all CUDA devices)."""
    seed %= 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# CFM.sample clamps any duration to this many frames (its `max_duration` default); the plan's limit for a model
# whose text embedding has no precomputed positions.
CFM_MAX_DURATION = 65536
# F5 resamples the reference to 24 kHz before counting its frames; a frame or two of rounding must not tip a
# chunk planned at the edge over the model's range.
POSITION_MARGIN_FRAMES = 2


class Engine:
    """One loaded F5-TTS model and vocoder; build it once per process with `Engine.load`."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        *,
        f5: types.ModuleType,
        model: torch.nn.Module,
        vocoder: torch.nn.Module,
        device: str,
        dtype: torch.dtype,
        model_name: str,
        attn_backend: str,
    ) -> None:
        self._f5 = f5
        self.model = model
        self.vocoder = vocoder
        self.device = device
        self.dtype = str(dtype).removeprefix("torch.")  # the weights' dtype by name ("float16"), as health reports it
        self.model_name = model_name
        self.attn_backend = attn_backend
        self._asr_lock = threading.Lock()

    @classmethod
    def load(cls, settings: ModelSettings) -> Engine:
        """Load model and vocoder with f5-tts's `load_model` / `load_vocoder`. Raises EngineLoadError."""
        started = time.perf_counter()
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        model_files = resolve_model_files(settings)
        backbone, arch = read_model_config(model_files.model_cfg, settings.attn_backend)
        f5 = import_f5_infer()
        model_cls = getattr(importlib.import_module("f5_tts.model"), backbone, None)
        if model_cls is None:
            raise EngineLoadError(f"model config {model_files.model_cfg}: unknown backbone {backbone!r}")
        output = io.StringIO()  # f5-tts's loaders print; their output goes to the log instead
        try:
            with contextlib.redirect_stdout(output):
                # Loaded on the CPU in float32 (f5-tts picks the dtype by device), then cast once to the
                # configured dtype on the target device: no double rounding through float16 for bfloat16.
                model = f5.load_model(
                    model_cls,
                    arch,
                    str(model_files.ckpt_file),
                    mel_spec_type="vocos",
                    vocab_file=str(model_files.vocab_file),
                    device="cpu",
                ).to(device=device, dtype=dtype)
                vocoder = f5.load_vocoder(
                    vocoder_name="vocos", is_local=True, local_path=str(model_files.vocoder_dir), device=device
                )
        except Exception as exc:
            raise EngineLoadError(
                f"loading {settings.model} from {model_files.ckpt_file} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            log.debug("f5-tts loaders said:\n%s", output.getvalue())
        log.info(
            "loaded %s (%s, attention %s) on %s as %s in %.1f s",
            settings.model,
            model_files.ckpt_file.name,
            settings.attn_backend,
            device,
            dtype,
            time.perf_counter() - started,
        )
        return cls(
            f5=f5,
            model=model,
            vocoder=vocoder,
            device=device,
            dtype=dtype,
            model_name=settings.model,
            attn_backend=settings.attn_backend,
        )

    # ------------------------------------------------------------------------------------------- synthesis
    @property
    def max_frames(self) -> int:
        """The longest sequence (reference + chunk, in mel frames) the loaded model can take: the text
        embedding's precomputed positions where it has them (8192 for F5's DiT, ~87 s), else CFM's own clamp."""
        text_embed = getattr(getattr(self.model, "transformer", None), "text_embed", None)
        limit = (
            getattr(text_embed, "precompute_max_pos", None) if getattr(text_embed, "extra_modeling", False) else None
        )
        return int(limit or CFM_MAX_DURATION)

    def split_text(
        self, text: str, ref_text: str, ref_seconds: float, speed: float = 1.0
    ) -> list[chunk_plan.PlannedChunk]:
        """The chunk plan (worker.chunk_plan): a short first chunk, later ones up to f5-tts's character budget,
        every one fitting the model with the reference, the text's pauses between. Raises ContractError when the
        text cannot be spoken."""
        voice = chunk_plan.Voice(chunk_plan.terminated_transcript(ref_text), ref_seconds)
        return chunk_plan.plan_speech(text, voice, speed, self.max_frames - POSITION_MARGIN_FRAMES)

    def generate(
        self,
        samples: np.ndarray,
        sample_rate: int,
        ref_text: str,
        text: str,
        *,
        speed: float = 1.0,
        nfe_step: int = 32,
        cfg_strength: float = 2.0,
        sway_sampling_coef: float = -1.0,
        seed: int = 0,
    ) -> Iterator[GeneratedChunk]:
        """Speak `text` in the voice of the reference; one item per text chunk, computed when asked for.

        Inputs are checked here, before the first chunk is asked for. Chunk i is generated with the RNGs
        seeded from `seed + i`, so the result depends only on the seed and the input, even if other jobs run
        between two chunks.
        """
        if not ref_text or not ref_text.strip():
            raise ContractError(ErrorCode.invalid_input, "the reference transcript is empty", "ref_text")
        reference = np.array(samples, dtype=np.float32).reshape(-1)  # a private, writable copy for torch
        if reference.size == 0 or sample_rate <= 0:
            raise ContractError(ErrorCode.invalid_input, "the reference audio is empty", "ref_audio")
        ref_text = chunk_plan.terminated_transcript(ref_text.strip())
        chunks = self.split_text(text, ref_text, reference.size / sample_rate, speed)
        return self._generate(
            reference, sample_rate, ref_text, chunks, speed, nfe_step, cfg_strength, sway_sampling_coef, seed
        )

    def _generate(
        self,
        reference: np.ndarray,
        sample_rate: int,
        ref_text: str,
        chunks: list[chunk_plan.PlannedChunk],
        speed: float,
        nfe_step: int,
        cfg_strength: float,
        sway_sampling_coef: float,
        seed: int,
    ) -> Iterator[GeneratedChunk]:
        # One f5-tts generator for all chunks: it prepares the reference tensor (mono, loudness, resampling
        # to 24 kHz, transfer to the device) once. In streaming mode it yields each chunk's wave in pieces of
        # `chunk_size` samples; with an unbounded chunk_size that is exactly one piece per text chunk (a wave
        # is never empty: f5-tts generates at least one mel frame past the reference).
        pieces = self._f5.infer_batch_process(
            (torch.from_numpy(reference).unsqueeze(0), sample_rate),
            ref_text,
            [chunk.text for chunk in chunks],
            self.model,
            self.vocoder,
            mel_spec_type="vocos",
            progress=None,
            target_rms=TARGET_RMS,
            cross_fade_duration=0.0,
            nfe_step=nfe_step,
            cfg_strength=cfg_strength,
            sway_sampling_coef=sway_sampling_coef,
            speed=speed,
            fix_duration=None,
            device=self.device,
            streaming=True,
            chunk_size=sys.maxsize,
        )
        for index, chunk in enumerate(chunks):
            seed_everything(seed + index)
            started = time.perf_counter()
            wave, _ = next(pieces)
            inference_s = time.perf_counter() - started  # the wave is on the CPU by now: the device is synced
            samples = np.asarray(wave, dtype=np.float32).reshape(-1)
            yield GeneratedChunk(
                chunk.text,
                samples,
                inference_s,
                index=index,
                count=len(chunks),
                pause_before=chunk.pause_before,
                pause_after=chunk.pause_after,
            )
        pieces.close()

    def warmup(self) -> float:
        """One very short synthesis with the built-in reference: the first real job then finds kernels loaded and
        memory allocated. Returns the seconds of audio it generated."""
        import soundfile as sf

        samples, sample_rate = sf.read(str(builtin_audio_file()), dtype="float32")
        generated = self.generate(samples, sample_rate, BUILTIN_REFERENCE_TEXT, "Hello.", nfe_step=4, seed=0)
        return sum(chunk.samples.size for chunk in generated) / self.sample_rate

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        """F5's Whisper path (transformers' ASR pipeline, downloaded on first use); never called by default."""
        if importlib.util.find_spec("transformers") is None:
            raise ContractError(ErrorCode.invalid_input, WHISPER_MISSING)
        with self._asr_lock:
            if self._f5.asr_pipe is None:
                self._f5.initialize_asr_pipeline(device=self.device)
        audio = {"raw": np.asarray(samples, dtype=np.float32).reshape(-1), "sampling_rate": sample_rate}
        return self._f5.transcribe(audio)
