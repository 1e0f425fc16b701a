"""worker.model_files: the files a model setting names, resolved to local paths (through a Hugging Face cache laid
out in tmp, offline), the architecture read from f5-tts's own model configs, and all of it without torch."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import yaml

from tests.support import fill_model_cache, run_python, worker_env
from worker.config import ModelSettings
from worker.model_facts import DEFAULT_MODEL, MEL_SETTINGS, PUBLISHED_MODELS, VOCOS_FILES
from worker.model_files import EngineLoadError, read_model_config, resolve_file, resolve_model_files

F5_CONFIG = Path(str(files("f5_tts").joinpath(f"configs/{DEFAULT_MODEL}.yaml")))
F5_VOCAB = Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, the only one searched (HF_HUB_OFFLINE=1: nothing is downloaded)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def model_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModelSettings]:
    """ModelSettings from `overrides` alone: a developer's F5TTS_* variables hidden."""
    for key in [k for k in os.environ if k.startswith("F5TTS_")]:
        monkeypatch.delenv(key)

    def make(**overrides: Any) -> ModelSettings:
        return ModelSettings(_env_file=None, **overrides)

    return make


def local_model(folder: Path, *, vocab: bool) -> Path:
    """A checkpoint in `folder`, with a vocab.txt beside it or not; the checkpoint's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if vocab:
        (folder / "vocab.txt").write_text("a\nb\n")
    return folder / "model.safetensors"


def local_vocoder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for hub_file in VOCOS_FILES:
        (folder / hub_file.filename).write_bytes(b"x")
    return folder


# ------------------------------------------------------------------------------------------------ resolution
def test_the_published_model_resolves_to_its_cached_files(hub: Path, model_settings) -> None:
    cached = fill_model_cache(hub)
    published = PUBLISHED_MODELS[DEFAULT_MODEL]
    resolved = resolve_model_files(model_settings())
    assert resolved.model_cfg == F5_CONFIG
    assert resolved.ckpt_file == cached[published.checkpoint.filename]
    assert resolved.vocab_file == cached[published.vocab.filename]  # the vocabulary published beside it
    assert resolved.vocoder_dir == cached["config.yaml"].parent == cached["pytorch_model.bin"].parent


def test_a_vocabulary_missing_from_the_cache_falls_back_to_f5_tts_own(
    hub: Path, model_settings, caplog: pytest.LogCaptureFixture
) -> None:
    fill_model_cache(hub)[PUBLISHED_MODELS[DEFAULT_MODEL].vocab.filename].unlink()
    with caplog.at_level(logging.WARNING, logger="worker.model_files"):
        resolved = resolve_model_files(model_settings())
    assert resolved.vocab_file == F5_VOCAB
    assert "vocab.txt is not available" in caplog.text and "bundled vocabulary" in caplog.text


def test_a_hub_file_offline_and_not_cached_fails_without_download(hub: Path) -> None:
    with pytest.raises(EngineLoadError, match="HF_HUB_OFFLINE=1: only the local cache was searched"):
        resolve_file("hf://example-owner/not-a-repo/model.safetensors", "checkpoint")


@pytest.mark.parametrize("vocab", [True, False])
def test_a_local_checkpoint_takes_the_vocabulary_beside_it_else_f5_tts_own(
    tmp_path: Path, model_settings, vocab: bool
) -> None:
    ckpt = local_model(tmp_path / "model", vocab=vocab)
    vocoder = local_vocoder(tmp_path / "vocos")
    resolved = resolve_model_files(model_settings(ckpt_file=str(ckpt), vocoder_dir=vocoder))
    assert resolved.ckpt_file == ckpt and resolved.vocoder_dir == vocoder
    assert resolved.vocab_file == (ckpt.with_name("vocab.txt") if vocab else F5_VOCAB)


def test_an_explicit_vocabulary_wins_over_the_one_beside_the_checkpoint(tmp_path: Path, model_settings) -> None:
    ckpt = local_model(tmp_path / "model", vocab=True)
    mine = tmp_path / "mine.txt"
    mine.write_text("c\n")
    settings = model_settings(ckpt_file=str(ckpt), vocab_file=str(mine), vocoder_dir=local_vocoder(tmp_path / "v"))
    assert resolve_model_files(settings).vocab_file == mine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ckpt_file": "no/such/model.safetensors"}, "checkpoint not found"),
        ({"model": "NoSuchModel"}, "model config not found"),
        (
            {"model": "NoSuchModel", "model_cfg": F5_CONFIG, "ckpt_file": None},
            "no published checkpoint for model 'NoSuchModel'",
        ),
        ({"ckpt_file": "hf://owner-only"}, "is not of the form hf://owner/repo/path"),
        ({"ckpt_file": "hf://owner/repo/"}, "is not of the form hf://owner/repo/path"),
        ({"vocab_file": "no/such/vocab.txt"}, "vocabulary not found"),
    ],
)
def test_resolution_failures_name_the_setting(tmp_path: Path, model_settings, overrides: dict, message: str) -> None:
    complete = {
        "ckpt_file": str(local_model(tmp_path / "model", vocab=True)),
        "vocoder_dir": local_vocoder(tmp_path / "vocos"),
    }
    with pytest.raises(EngineLoadError, match=message):
        resolve_model_files(model_settings(**{**complete, **overrides}))


def test_a_vocoder_directory_without_its_weights_is_refused(tmp_path: Path, model_settings) -> None:
    vocoder = local_vocoder(tmp_path / "vocos")
    (vocoder / "pytorch_model.bin").unlink()
    settings = model_settings(ckpt_file=str(local_model(tmp_path / "model", vocab=True)), vocoder_dir=vocoder)
    with pytest.raises(EngineLoadError, match=f"vocoder directory {vocoder} lacks pytorch_model.bin"):
        resolve_model_files(settings)


# ------------------------------------------------------------------------------------------------ model configs
def f5_config_with(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    """f5-tts's own config of the default model, changed by `change(model_section)`, written to tmp."""
    config = yaml.safe_load(F5_CONFIG.read_text())
    change(config["model"])
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("backend", ["torch", "flash_attn"])
def test_a_shipped_config_gives_its_architecture_with_the_backend_and_masks_on(backend: str) -> None:
    shipped = yaml.safe_load(F5_CONFIG.read_text())["model"]
    backbone, arch = read_model_config(F5_CONFIG, backend)
    assert backbone == shipped["backbone"] == "DiT"
    assert arch == {**shipped["arch"], "attn_backend": backend, "attn_mask_enabled": True}
    assert shipped["arch"].get("attn_mask_enabled") is False  # what the override is for


def test_every_published_model_has_a_readable_config() -> None:
    for model in PUBLISHED_MODELS:
        backbone, _ = read_model_config(Path(str(files("f5_tts").joinpath(f"configs/{model}.yaml"))), "torch")
        assert backbone in {"DiT", "UNetT"}


def test_another_vocoder_is_refused(tmp_path: Path) -> None:
    path = f5_config_with(tmp_path, lambda model: model["mel_spec"].update(mel_spec_type="bigvgan"))
    with pytest.raises(EngineLoadError, match="only the Vocos vocoder is supported, not 'bigvgan'"):
        read_model_config(path, "torch")


def test_other_mel_settings_are_refused_naming_them(tmp_path: Path) -> None:
    hop = MEL_SETTINGS["hop_length"] * 2
    path = f5_config_with(tmp_path, lambda model: model["mel_spec"].update(hop_length=hop))
    with pytest.raises(EngineLoadError, match=f"got {{'hop_length': {hop}}}"):
        read_model_config(path, "torch")


@pytest.mark.parametrize("text", ["", "model: 3\n", "not: [valid", "model:\n  backbone: DiT\n"])
def test_a_file_that_is_no_f5_tts_config_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EngineLoadError, match="is not an f5-tts model config"):
        read_model_config(path, "torch")


# ------------------------------------------------------------------------------------------------ without torch
# A fresh interpreter where torch (and what needs it) cannot be imported at all: the reason model_files is its own
# module is that the self-check and the image build resolve and check files without loading a model.
TORCH_FREE_PROBE = """
import importlib.abc, json, sys

class RefuseTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchaudio", "vocos"):
            raise ModuleNotFoundError(f"{name} is refused in this probe", name=name)
        return None

sys.meta_path.insert(0, RefuseTorch())
from worker.config import Settings
from worker.model_files import resolve_model_files
from worker.self_check import check_model_files

settings = Settings()
resolved = resolve_model_files(settings.model)
try:
    check = "ok: " + check_model_files(settings)
except Exception as exc:
    check = f"failed: {type(exc).__name__}: {exc}"
print(json.dumps({"ckpt": str(resolved.ckpt_file), "check": check}))
"""


@pytest.mark.integration  # starts a Python interpreter
@pytest.mark.parametrize("truncated", [False, True])
def test_resolution_and_the_self_checks_file_check_run_without_torch(tmp_path: Path, truncated: bool) -> None:
    cached = fill_model_cache(tmp_path / "hf" / "hub")  # worker_env's HF_HOME is tmp_path/hf
    checkpoint = cached[PUBLISHED_MODELS[DEFAULT_MODEL].checkpoint.filename]
    if truncated:
        checkpoint.write_bytes(checkpoint.read_bytes()[:-8])  # an interrupted download
    result = run_python("-c", TORCH_FREE_PROBE, cwd=tmp_path, env=worker_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ckpt"] == str(checkpoint)
    if truncated:
        assert report["check"] == f"failed: FileNotFoundError: {checkpoint}: truncated or corrupt safetensors"
    else:
        assert report["check"].startswith(f"ok: {DEFAULT_MODEL}: {checkpoint.name}, vocabulary and Vocos present")
