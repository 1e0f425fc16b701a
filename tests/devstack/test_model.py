"""Which weights the devstack picks: real ones when configured or in the Hugging Face cache, else the tiny model.

The cache here is a directory laid out the way huggingface_hub lays out its cache (refs + snapshots), holding
empty files: whether the weights are usable is the worker's concern; whether they are *there* is the launcher's.
"""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest

from devstack import model as devstack_model
from devstack.model import ModelChoiceError, choose_model, find_real_weights, hub_unreachable_reason
from tests.support import fake_hub_file, hf_cache_file


def _cache_file(hub: Path, repo: str, filename: str) -> None:
    hf_cache_file(hub, repo, filename).write_bytes(b"")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    # .invalid never resolves (RFC 2606): whatever this machine's network, nothing here reaches a real Hub.
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    for name in ("F5TTS_CKPT_FILE", "F5TTS_MODEL", "F5TTS_VOCODER_DIR", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return hub


def test_nothing_configured_or_cached_means_no_real_weights(hub):
    assert find_real_weights() is None
    with pytest.raises(ModelChoiceError, match=r"worker\.prefetch"):
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
    assert "mine.safetensors" in (find_real_weights() or "")


def test_auto_falls_back_to_the_tiny_noise_model(hub):
    choice = choose_model("auto")
    assert choice.kind == "tiny" and choice.is_noise
    assert choice.env["F5TTS_MODEL"] == "F5TTS_tiny"
    assert Path(choice.env["F5TTS_CKPT_FILE"]).is_file()


@pytest.mark.timeout(120)
def test_demo_mode_with_an_unreachable_hub_falls_back_at_once_and_says_why(hub, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded when the Hub is unreachable")

    monkeypatch.setattr(devstack_model, "fetch_real_weights", no_download)
    choice = choose_model("auto", fetch=True, out=io.StringIO())
    assert choice.kind == "tiny" and choice.is_noise
    assert "the Hugging Face Hub is unreachable: hub.invalid does not resolve" in choice.description
    with pytest.raises(ModelChoiceError, match=r"hub\.invalid does not resolve"):
        choose_model("real", fetch=True)
    out = io.StringIO()
    devstack_model.announce_model(choice, out)
    assert "ITS AUDIO IS NOISE" in out.getvalue() and "unreachable" in out.getvalue()


@pytest.mark.timeout(30)
def test_a_resolver_that_never_answers_does_not_hold_the_demo(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(20))
    assert hub_unreachable_reason(timeout_s=0.5) == "no DNS answer for hub.example within 0.5 s"


def test_a_closed_port_and_offline_mode_are_unreachable(monkeypatch):
    with socket.socket() as sock:  # a loopback port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port} does not accept connections" in (hub_unreachable_reason() or "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable_reason() == "HF_HUB_OFFLINE is set"


def test_demo_mode_with_a_reachable_hub_fetches_the_real_weights_once(hub, monkeypatch):
    """The Hub itself is faked (nothing may download in a test): huggingface_hub's downloader fills the cache."""
    import huggingface_hub

    fetched = []

    def fake_download(repo_id, filename, cache_dir=None):
        fetched.append(f"{repo_id}/{filename}")
        return str(fake_hub_file(Path(cache_dir), repo_id, filename))

    monkeypatch.setattr(devstack_model, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = io.StringIO()
    choice = choose_model("auto", fetch=True, out=out)
    assert choice.kind == "real" and "F5TTS_v1_Base from the Hugging Face cache" in choice.description
    assert "fetching F5TTS_v1_Base and the Vocos vocoder" in out.getvalue()
    assert fetched == [
        "SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors",
        "SWivid/F5-TTS/F5TTS_v1_Base/vocab.txt",
        "charactr/vocos-mel-24khz/config.yaml",
        "charactr/vocos-mel-24khz/pytorch_model.bin",
    ]
    assert choose_model("auto", fetch=True).kind == "real" and len(fetched) == 4  # cached now: no second fetch


def test_a_failed_download_falls_back_to_the_tiny_model_with_the_reason(hub, monkeypatch):
    import huggingface_hub

    def broken_download(*args, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(devstack_model, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken_download)
    choice = choose_model("auto", fetch=True, out=io.StringIO())
    assert choice.kind == "tiny"
    assert "the download failed: ConnectionError: connection reset by peer" in choice.description
