"""Facts about the F5-TTS models every part of the project shares: which files are published where, the
vocoder, the built-in reference clip, the audio format. Plain constants, no torch and no f5_tts import, so the
image build (`worker.prefetch`), the devstack and the bench can read them as cheaply as the engine does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face Hub repository."""

    repo_id: str
    filename: str

    @property
    def uri(self) -> str:
        """The `hf://owner/repo/path` form that F5TTS_CKPT_FILE and friends accept."""
        return f"hf://{self.repo_id}/{self.filename}"


@dataclass(frozen=True)
class PublishedModel:
    """A checkpoint SWivid publishes, with the vocabulary that sits next to it."""

    checkpoint: HubFile
    vocab: HubFile


def _published(repo_id: str, folder: str, checkpoint: str) -> PublishedModel:
    return PublishedModel(HubFile(repo_id, f"{folder}/{checkpoint}"), HubFile(repo_id, f"{folder}/vocab.txt"))


# The published checkpoints as f5-tts's own loaders resolve them (f5_tts.api.F5TTS, infer_cli), by model name
# (the name also picks f5-tts's `configs/<name>.yaml`).
PUBLISHED_MODELS: dict[str, PublishedModel] = {
    "F5TTS_v1_Base": _published("SWivid/F5-TTS", "F5TTS_v1_Base", "model_1250000.safetensors"),
    "F5TTS_Base": _published("SWivid/F5-TTS", "F5TTS_Base", "model_1200000.safetensors"),
    "E2TTS_Base": _published("SWivid/E2-TTS", "E2TTS_Base", "model_1200000.safetensors"),
}
DEFAULT_MODEL = "F5TTS_v1_Base"  # the model the image bakes in and the worker loads by default

# The Vocos vocoder f5-tts loads for every model above: its config and weights, in one snapshot folder.
VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_FILES = (HubFile(VOCOS_REPO, "config.yaml"), HubFile(VOCOS_REPO, "pytorch_model.bin"))

# The Whisper model f5-tts's transcription loads (initialize_asr_pipeline), for the optional Whisper extra, and the
# files of its repository that transformers' pipeline reads (weights as safetensors only).
WHISPER_REPO = "openai/whisper-large-v3-turbo"
WHISPER_FILE_PATTERNS = ("*.json", "*.txt", "model.safetensors")

# f5-tts's own example reference (a path inside the installed f5_tts package) and its transcript: the built-in
# `default` voice, and the warm-up's reference.
BUILTIN_REFERENCE_AUDIO = "infer/examples/basic/basic_ref_en.wav"
BUILTIN_REFERENCE_TEXT = "Some call me nature, others call me mother nature."


def builtin_audio_file() -> Path:
    """The f5-tts example clip, found without importing f5_tts (whose submodules pull in torch)."""
    spec = importlib.util.find_spec("f5_tts")  # finds the package without executing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location, BUILTIN_REFERENCE_AUDIO)
        if candidate.is_file():
            return candidate
    try:  # a layout where the package is not importable as such: ask the distribution's file list
        candidate = Path(
            str(importlib.metadata.distribution("f5-tts").locate_file(f"f5_tts/{BUILTIN_REFERENCE_AUDIO}"))
        )
        if candidate.is_file():
            return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"f5-tts's reference clip f5_tts/{BUILTIN_REFERENCE_AUDIO} is not installed")


# f5-tts's inference hard-codes these mel settings (load_model: 24 kHz, 100 mel channels, hop 256); every model
# config and every reference must agree with them.
SAMPLE_RATE = 24000
HOP_LENGTH = 256  # samples per mel frame: a frame is ~10.7 ms
N_MELS = 100
N_FFT = 1024
MEL_SETTINGS = {"target_sample_rate": SAMPLE_RATE, "n_mel_channels": N_MELS, "hop_length": HOP_LENGTH}


# Settings an image build chose (Dockerfile.runpod: the attention backend that follows from FLASH_ATTN, the tiny
# model's files with WEIGHTS=tiny), as KEY=VALUE lines; the process environment overrides each. Absent elsewhere.
IMAGE_SETTINGS_FILE = Path("/opt/f5tts/image.env")


def baked_files(model: str) -> tuple[HubFile, ...]:
    """Every Hub file a worker running `model` reads: checkpoint, vocabulary, vocoder. KeyError if unknown."""
    published = PUBLISHED_MODELS[model]
    return (published.checkpoint, published.vocab, *VOCOS_FILES)


# The word aligner (worker/aligner.py): torchaudio's WAV2VEC2_ASR_BASE_960H, wav2vec 2.0 "base" fine-tuned for
# English letters on LibriSpeech 960 h, published by fairseq under the MIT licence (MMS_FA, multilingual, is not
# used: its weights are CC-BY-NC, ruling out commercial deployments). `worker.prefetch` converts the bundle into
# a directory of ALIGNER_CONFIG (builder, labels, sample rate) + ALIGNER_WEIGHTS (safetensors): the format the
# worker loads, and the one `worker.tiny` writes random weights in.
ALIGNER_BUNDLE = "WAV2VEC2_ASR_BASE_960H"
ALIGNER_CONFIG = "config.json"
ALIGNER_WEIGHTS = "model.safetensors"
ALIGNER_SAMPLE_RATE = 16000  # wav2vec 2.0's input rate (its feature extractor's strides are set for it)


def default_aligner_dir() -> Path:
    """Where `worker.prefetch` bakes the aligner and the worker looks for it unless F5TTS_ALIGNER_DIR says
    otherwise: next to the Hugging Face cache (`HF_HOME`, /opt/hf in the image), so it is baked with the other
    weights by the same user."""
    return hf_home() / "f5tts-aligner" / ALIGNER_BUNDLE.lower()


def hf_home() -> Path:
    """The Hugging Face home of this environment, as huggingface_hub computes its default (read now, not at
    import: launchers and tests set HF_HOME for the processes they start)."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"


def hf_hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (huggingface_hub's own truthy spellings), read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
