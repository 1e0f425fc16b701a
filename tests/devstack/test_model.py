"""Which weights the devstack picks: real ones when configured or in the Hugging Face cache, else the tiny model.

The cache here is a directory laid out the way huggingface_hub lays out its cache (refs + snapshots), holding
empty files: whether the weights are usable is the worker's concern; whether they are *there* is the launcher's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.model import ModelUnavailable, choose_model, find_real_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_file(hub: Path, repo: str, filename: str) -> None:
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    path = folder / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    for name in ("F5TTS_CKPT_FILE", "F5TTS_MODEL", "F5TTS_VOCODER_DIR"):
        monkeypatch.delenv(name, raising=False)
    return hub


def test_nothing_configured_or_cached_means_no_real_weights(hub):
    assert find_real_weights() is None
    with pytest.raises(ModelUnavailable, match="worker.prefetch"):
        choose_model("real")


def test_the_default_model_in_the_hf_cache_is_found_only_with_its_vocoder(hub):
    _cache_file(hub, "SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors")
    assert find_real_weights() is None  # no vocoder yet
    _cache_file(hub, "charactr/vocos-mel-24khz", "config.yaml")
    _cache_file(hub, "charactr/vocos-mel-24khz", "pytorch_model.bin")
    found = find_real_weights()
    assert found is not None and "F5TTS_v1_Base" in found
    choice = choose_model("auto")
    assert choice.kind == "real" and not choice.is_noise and choice.env == {}


def test_a_configured_checkpoint_wins(hub, monkeypatch):
    monkeypatch.setenv("F5TTS_CKPT_FILE", "weights/mine.safetensors")
    assert "mine.safetensors" in find_real_weights()


def test_auto_falls_back_to_the_tiny_noise_model(hub):
    choice = choose_model("auto")
    assert choice.kind == "tiny" and choice.is_noise
    assert choice.env["F5TTS_MODEL"] == "F5TTS_tiny"
    assert Path(choice.env["F5TTS_CKPT_FILE"]).is_file()
