"""F5-TTS inside the worker: loaded once through f5-tts's own loaders, then chunks sampled alone or in batches.

The model and vocoder are loaded by `f5_tts.infer.utils_infer` (`load_model`, `load_vocoder`). Each chunk is set
up exactly as f5-tts's `infer_batch_process` sets one up (the same loudness, resampling, duration and text) and
sampled by f5-tts's own `CFM.sample`, so a chunk alone gives the bytes f5-tts gives for it. What f5-tts lacks for
batches is added here: several chunks of different voices, texts and lengths in one `CFM.sample` call, each with
its own noise seed and its padding masked, so a chunk's audio does not depend on its batch mates
(worker.batcher decides what runs together). The files come from `worker.model_files`, the lean import of f5-tts
from `worker.lean_imports`. The text is cut by `worker.chunk_plan` rather than f5-tts's
`chunk_text`: a short first chunk for streams, and no chunk the model cannot take.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import random
import threading
import time
import types
import unittest.mock
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

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
class Sampling:
    """The flow-matching settings of a chunk; one CFM.sample call takes one set for its whole batch."""

    nfe_step: int
    cfg_strength: float
    sway_sampling_coef: float


@dataclass(eq=False)
class VoicePrompt:
    """A speech's reference, shared by its chunks: the samples, and the tensor made of them on first use (on the
    inference thread, like all torch work)."""

    samples: np.ndarray  # float32 mono
    sample_rate: int
    text: str  # the transcript as F5 gets it (ending in ". ")
    prepared: tuple[torch.Tensor, torch.Tensor] | None = None  # (24 kHz wave on the device, original RMS)


@dataclass(frozen=True, eq=False)
class ChunkRequest:
    """One text chunk to sample: all its own inputs, so that it can share a batch with any other request that
    has the same `sampling`."""

    prompt: VoicePrompt
    text: str
    speed: float
    seed: int  # its noise's seed (the speech's seed + its index)
    sampling: Sampling
    frames: int  # mel frames (reference + chunk) it occupies in a batch, as planned
    index: int = 0  # 0-based position in the chunk plan
    count: int = 1  # chunks in the plan
    pause_before: float = 0.0
    pause_after: float = 0.0

    def generated(self, samples: np.ndarray, inference_s: float) -> GeneratedChunk:
        return GeneratedChunk(
            self.text,
            samples,
            inference_s,
            index=self.index,
            count=self.count,
            pause_before=self.pause_before,
            pause_after=self.pause_after,
        )


@dataclass(frozen=True)
class _SampleInput:
    cond: torch.Tensor  # the reference mel, frames x channels
    text: list[str]  # reference transcript + chunk, as F5's tokens (pinyin for Chinese)
    duration: int  # total frames, reference included
    ref_frames: int  # frames cut off the front (the reference's, as infer_batch_process counts them)
    rms: torch.Tensor  # the reference's original loudness
    quiet_reference: bool  # raised to TARGET_RMS for the model: the output is scaled back


@contextlib.contextmanager
def _noise_per_item(generators: list[torch.Generator]) -> Iterator[None]:
    """CFM.sample draws its starting noise with one `torch.randn(duration_i, channels)` per item, in order,
    from one global RNG (or one seed for all). While this is entered, cfm.py's `torch` answers the i-th of those
    draws from generators[i] (every other name is torch's own), so each item's noise comes from its own seed;
    the model itself (another module) is untouched. Only the inference thread samples, so patching the module
    for the call is safe; the draw count is checked in case a future f5-tts draws differently."""
    draws = iter(generators)
    drawn = 0

    class TorchForCfm(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def randn(*size: Any, **kwargs: Any) -> torch.Tensor:
            nonlocal drawn
            drawn += 1
            return torch.randn(*size, generator=next(draws), **kwargs)

    cfm = importlib.import_module("f5_tts.model.cfm")  # imported with the model (lean: import_f5_infer)
    with unittest.mock.patch.object(cfm, "torch", TorchForCfm("torch")):
        yield
    if drawn != len(generators):
        raise RuntimeError(f"CFM.sample drew noise {drawn} times for {len(generators)} items")


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
            with contextlib.redirect_stdout(output), warnings.catch_warnings():
                # f5-tts warns that torch attention with a mask takes memory (b x h x n x n): the batch's frame
                # budget (F5TTS_BATCH_FRAMES) is what bounds it.
                warnings.filterwarnings("ignore", "attn_mask_enabled=True with attn_backend='torch'")
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

    def plan(
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
    ) -> list[ChunkRequest]:
        """Everything `sample` needs to speak `text` in the voice of the reference, one request per text chunk;
        no torch yet. Inputs are checked here: a text that cannot be spoken is refused before any audio.

        Chunk i is sampled from noise seeded with `seed + i`, drawn for it alone, so its audio depends only on
        the seed and the input, whatever else runs between its chunks or beside it in a batch.
        """
        if not ref_text or not ref_text.strip():
            raise ContractError(ErrorCode.invalid_input, "the reference transcript is empty", "ref_text")
        reference = np.array(samples, dtype=np.float32).reshape(-1)  # a private, writable copy for torch
        if reference.size == 0 or sample_rate <= 0:
            raise ContractError(ErrorCode.invalid_input, "the reference audio is empty", "ref_audio")
        prompt = VoicePrompt(reference, sample_rate, chunk_plan.terminated_transcript(ref_text.strip()))
        seconds = reference.size / sample_rate
        chunks = self.split_text(text, prompt.text, seconds, speed)
        plan_voice = chunk_plan.Voice(prompt.text, seconds)
        sampling = Sampling(nfe_step, cfg_strength, sway_sampling_coef)
        return [
            ChunkRequest(
                prompt,
                chunk.text,
                speed,
                seed + index,
                sampling,
                frames=chunk_plan.chunk_frames(chunk.text, plan_voice, speed),
                index=index,
                count=len(chunks),
                pause_before=chunk.pause_before,
                pause_after=chunk.pause_after,
            )
            for index, chunk in enumerate(chunks)
        ]

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
        """`plan`, then each chunk sampled on its own when it is asked for (the worker batches through
        worker.batcher instead; this is the one-at-a-time path of warm-up and benches)."""
        requests = self.plan(
            samples,
            sample_rate,
            ref_text,
            text,
            speed=speed,
            nfe_step=nfe_step,
            cfg_strength=cfg_strength,
            sway_sampling_coef=sway_sampling_coef,
            seed=seed,
        )
        return self._one_by_one(requests)

    def _one_by_one(self, requests: list[ChunkRequest]) -> Iterator[GeneratedChunk]:
        for request in requests:
            started = time.perf_counter()
            (wave,) = self.sample([request])
            yield request.generated(wave, time.perf_counter() - started)  # the wave is on the CPU: synced

    def sample(self, requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        """The waves of `requests` (float32 mono at `sample_rate`, in order) from one CFM.sample call.

        Each item is prepared exactly as f5-tts's `infer_batch_process` prepares a chunk (loudness, 24 kHz,
        duration from the reference's speaking rate, short texts slowed), so a request alone gives the bytes
        f5-tts itself gives for it. In a batch, each item keeps its own reference mel, text, duration and noise;
        the padding is masked (the model is loaded with attention masks on, and CFM.sample masks the conv
        positional embedding and text positions per item: the F5-TTS#1179 fix), so an item's audio equals its
        audio alone within float rounding. The vocoder runs per item, on exactly its own frames.
        """
        sampling = requests[0].sampling
        if any(request.sampling != sampling for request in requests):
            raise ValueError("one sample call takes one set of sampling settings")
        model: Any = self.model  # f5-tts's CFM (untyped)
        vocoder: Any = self.vocoder
        items = [self._sample_input(request) for request in requests]
        lens = torch.tensor([item.cond.shape[0] for item in items], device=self.device)
        # Padding past each reference is cut off by `lens` (CFM's cond mask) before the model sees it.
        cond = torch.nn.utils.rnn.pad_sequence([item.cond for item in items], batch_first=True)
        duration = torch.tensor([item.duration for item in items], device=self.device)
        generators = [self._noise_generator(request.seed) for request in requests]
        with torch.inference_mode(), _noise_per_item(generators):
            generated, _ = model.sample(
                cond=cond,
                text=[item.text for item in items],
                duration=duration,
                lens=lens,
                steps=sampling.nfe_step,
                cfg_strength=sampling.cfg_strength,
                sway_sampling_coef=sampling.sway_sampling_coef,
            )
            generated = generated.to(torch.float32)
            waves = []
            for item, mel in zip(items, generated, strict=True):
                wave = vocoder.decode(mel[item.ref_frames : item.duration].T.unsqueeze(0))
                if item.quiet_reference:
                    wave = wave * item.rms / TARGET_RMS
                waves.append(np.asarray(wave.squeeze().cpu().numpy(), dtype=np.float32).reshape(-1))
        return waves

    def _sample_input(self, request: ChunkRequest) -> _SampleInput:
        """One request as infer_batch_process's `_infer_basic` sets up its CFM.sample call."""
        f5 = self._f5
        audio, rms = self._prepared_reference(request.prompt)
        ref_text = request.prompt.text
        if len(ref_text[-1].encode("utf-8")) == 1:
            ref_text += " "
        gen_bytes = len(request.text.encode("utf-8"))
        local_speed = request.speed if gen_bytes >= chunk_plan.F5_SHORT_BYTES else chunk_plan.F5_SHORT_SPEED
        ref_frames = audio.shape[-1] // f5.hop_length
        duration = ref_frames + int(ref_frames / len(ref_text.encode("utf-8")) * gen_bytes / local_speed)
        (text,) = f5.convert_char_to_pinyin([ref_text + request.text])
        cond = cast(Any, self.model).mel_spec(audio).permute(0, 2, 1)[0]  # what CFM.sample makes of the wave, per item
        # CFM.sample's own floor and clamp, applied here so each item's frames are known for the vocoder.
        duration = min(max(max(len(text), cond.shape[0]) + 1, duration), CFM_MAX_DURATION)
        return _SampleInput(cond, text, duration, ref_frames, rms, quiet_reference=bool(rms < TARGET_RMS))

    def _prepared_reference(self, prompt: VoicePrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference wave as infer_batch_process feeds it to the model (raised to the target loudness when
        quieter, resampled to 24 kHz, on the device) and its original RMS; made once per speech."""
        if prompt.prepared is None:
            audio = torch.from_numpy(prompt.samples).unsqueeze(0)
            rms = torch.sqrt(torch.mean(torch.square(audio)))
            if rms < TARGET_RMS:
                audio = audio * TARGET_RMS / rms
            if prompt.sample_rate != self._f5.target_sample_rate:
                import torchaudio  # imported by f5-tts already

                audio = torchaudio.transforms.Resample(prompt.sample_rate, self._f5.target_sample_rate)(audio)
            prompt.prepared = (audio.to(self.device), rms)
        return prompt.prepared

    def _noise_generator(self, seed: int) -> torch.Generator:
        """A generator in the state `torch.manual_seed(seed)` leaves the device's default one in: alone, an item
        draws the very noise f5-tts draws for it after seeding."""
        return torch.Generator(device=self.device).manual_seed(seed % 2**32)

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
