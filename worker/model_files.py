"""Where a model's files are: the config, checkpoint, vocabulary and vocoder a setting names, resolved to local
paths (through the Hugging Face cache for `hf://` locations), and the architecture an f5-tts model config
declares. No torch: the self-check and the image build resolve files without loading a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from worker.config import ModelSettings
from worker.model_facts import MEL_SETTINGS, PUBLISHED_MODELS, VOCOS_FILES, hf_hub_offline

log = logging.getLogger("worker.model_files")


class EngineLoadError(RuntimeError):
    """The model could not be loaded; the message says which file or setting is at fault."""


@dataclass(frozen=True)
class ModelFiles:
    """Everything `Engine.load` reads, resolved to local paths."""

    model_cfg: Path
    ckpt_file: Path
    vocab_file: Path
    vocoder_dir: Path


def resolve_file(location: str, what: str) -> Path:
    """A local path, or `hf://owner/repo/path/in/repo` through the Hugging Face cache (cache only when
    HF_HUB_OFFLINE=1; otherwise it downloads, which is what `worker.prefetch` relies on at image build)."""
    if location.startswith("hf://"):
        owner, _, rest = location.removeprefix("hf://").partition("/")
        repo, _, filename = rest.partition("/")
        if not (owner and repo and filename):
            raise EngineLoadError(f"{what}: {location!r} is not of the form hf://owner/repo/path")
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(repo_id=f"{owner}/{repo}", filename=filename, local_files_only=hf_hub_offline())
            )
        except Exception as exc:
            hint = " (HF_HUB_OFFLINE=1: only the local cache was searched)" if hf_hub_offline() else ""
            raise EngineLoadError(f"{what} {location} is not available{hint}: {type(exc).__name__}: {exc}") from exc
    path = Path(location).expanduser()
    if not path.is_file():
        raise EngineLoadError(f"{what} not found: {path}")
    return path


def resolve_model_files(settings: ModelSettings) -> ModelFiles:
    """Where the config, checkpoint, vocabulary and vocoder of `settings` are (downloading when allowed)."""
    model_cfg = settings.model_cfg or Path(str(files("f5_tts").joinpath(f"configs/{settings.model}.yaml")))
    if not model_cfg.is_file():
        raise EngineLoadError(f"model config not found: {model_cfg} (set F5TTS_MODEL_CFG for model {settings.model!r})")

    published = PUBLISHED_MODELS.get(settings.model)
    ckpt_location = settings.ckpt_file or (published.checkpoint.uri if published else None)
    if ckpt_location is None:
        known = ", ".join(PUBLISHED_MODELS)
        raise EngineLoadError(
            f"no published checkpoint for model {settings.model!r} (known: {known}); set F5TTS_CKPT_FILE"
        )
    ckpt_file = resolve_file(ckpt_location, "checkpoint")

    if settings.vocab_file:
        vocab_file = resolve_file(settings.vocab_file, "vocabulary")
    else:
        vocab_file = _default_vocab(ckpt_location, ckpt_file)

    if settings.vocoder_dir is not None:
        vocoder_dir = settings.vocoder_dir
    else:
        config, weights = VOCOS_FILES
        vocoder_dir = resolve_file(config.uri, "vocoder config").parent
        resolve_file(weights.uri, "vocoder weights")  # same snapshot folder
    for name in (hub_file.filename for hub_file in VOCOS_FILES):
        if not (vocoder_dir / name).is_file():
            raise EngineLoadError(f"vocoder directory {vocoder_dir} lacks {name}")
    return ModelFiles(model_cfg, ckpt_file, vocab_file, vocoder_dir)


def _default_vocab(ckpt_location: str, ckpt_file: Path) -> Path:
    """The vocab.txt next to the checkpoint (in its hub folder, or its local directory), else f5-tts's own."""
    try:
        if ckpt_location.startswith("hf://"):
            return resolve_file(ckpt_location.rsplit("/", 1)[0] + "/vocab.txt", "vocabulary")
        if (sibling := ckpt_file.with_name("vocab.txt")).is_file():
            return sibling
    except EngineLoadError as exc:
        log.warning("%s; using f5-tts's bundled vocabulary", exc)
    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def read_model_config(path: Path, attn_backend: str) -> tuple[str, dict[str, Any]]:
    """(backbone class name, architecture kwargs) from an f5-tts model YAML, attention backend overridden and
    attention masks on (every shipped config has them off): batched chunks of unequal length are padded, and
    without the mask a chunk would attend to its batch mates' padding. A batch of one passes no mask at all."""
    try:
        model = yaml.safe_load(path.read_text())["model"]
        backbone, arch, mel = model["backbone"], dict(model["arch"]), model["mel_spec"]
    except Exception as exc:
        raise EngineLoadError(
            f"model config {path} is not an f5-tts model config: {type(exc).__name__}: {exc}"
        ) from exc
    if mel.get("mel_spec_type", "vocos") != "vocos":
        raise EngineLoadError(f"model config {path}: only the Vocos vocoder is supported, not {mel['mel_spec_type']!r}")
    wrong = {k: mel.get(k) for k, v in MEL_SETTINGS.items() if mel.get(k, v) != v}
    if wrong:
        raise EngineLoadError(f"model config {path}: f5-tts's inference needs mel settings {MEL_SETTINGS}, got {wrong}")
    arch["attn_backend"] = attn_backend
    arch["attn_mask_enabled"] = True
    return backbone, arch
