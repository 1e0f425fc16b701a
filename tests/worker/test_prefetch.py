"""worker.prefetch: `--check` against a Hugging Face cache laid out in tmp (offline, as the HEALTHCHECK runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support import fake_hub_file, fill_model_cache, run_python
from worker import prefetch
from worker.config import ModelSettings
from worker.model_facts import ALIGNER_BUNDLE, PUBLISHED_MODELS, HubFile


def build_aligner(hf_home: Path) -> Path:
    """A baked aligner where `--check` looks for it by default (under HF_HOME): the tiny random one."""
    from worker.tiny import TINY_ALIGNER, build_random_aligner

    dest = hf_home / "f5tts-aligner" / ALIGNER_BUNDLE.lower()
    return build_random_aligner(dest, builder="wav2vec2_model", kwargs=TINY_ALIGNER)


def run_prefetch(*args: str, hf_home: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "F5TTS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", **extra_env)
    return run_python("-m", "worker.prefetch", *args, env=env, timeout=60)


@pytest.mark.parametrize("model", list(PUBLISHED_MODELS))
def test_required_files_are_the_model_f5_tts_configures_and_the_vocoder_it_fetches(model, tiny_model_env, monkeypatch):
    """What the image bakes for `model`: its checkpoint and vocabulary, in the model's folder of the repository, for a
    model f5-tts ships a config of; then the vocoder files f5-tts's own load_vocoder asks the Hub for (its download
    faked: answered with the tiny model's vocoder)."""
    from worker.lean_imports import import_f5_infer

    utils_infer = import_f5_infer()  # as the worker imports it (its Whisper and training stacks stood in)
    asked: list[HubFile] = []
    tiny_vocos = Path(tiny_model_env["F5TTS_VOCODER_DIR"])

    def fake_hf_hub_download(repo_id: str, filename: str, cache_dir: str | None = None) -> str:
        asked.append(HubFile(repo_id, filename))
        return str(tiny_vocos / filename)

    monkeypatch.setattr(utils_infer, "hf_hub_download", fake_hf_hub_download)
    utils_infer.load_vocoder("vocos", is_local=False, device="cpu")
    checkpoint, vocab, *vocoder = prefetch.required_files(model)
    assert vocoder == asked
    assert files("f5_tts").joinpath(f"configs/{model}.yaml").is_file()
    assert checkpoint.repo_id == vocab.repo_id and checkpoint.filename.startswith(f"{model}/")
    assert checkpoint.filename.endswith(".safetensors") and vocab.filename == f"{model}/vocab.txt"


def test_unknown_models_have_no_required_files():
    with pytest.raises(prefetch.PrefetchError, match="F5TTS_v1_Base"):
        prefetch.required_files("E3TTS")


@pytest.mark.integration  # starts a Python process
def test_check_passes_on_a_complete_cache(tmp_path):
    fill_model_cache(tmp_path / "hub")
    build_aligner(tmp_path)
    result = run_prefetch("--check", hf_home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cached" in result.stdout


@pytest.mark.integration  # starts a Python process
def test_check_names_a_missing_or_truncated_aligner(tmp_path):
    fill_model_cache(tmp_path / "hub")
    weights = build_aligner(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    result = run_prefetch("--check", hf_home=tmp_path)
    assert result.returncode == 1 and f"{weights}: missing, truncated or corrupt" in result.stderr
    elsewhere = run_prefetch("--check", hf_home=tmp_path, F5TTS_ALIGNER_DIR=str(tmp_path / "nowhere"))
    assert elsewhere.returncode == 1 and "nowhere/config.json" in elsewhere.stderr


@pytest.mark.integration  # starts a Python process
def test_check_fails_naming_what_is_missing_or_truncated(tmp_path):
    paths = fill_model_cache(tmp_path / "hub")
    paths["pytorch_model.bin"].unlink()
    checkpoint = paths["F5TTS_v1_Base/model_1250000.safetensors"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8])  # an interrupted download

    result = run_prefetch("--check", hf_home=tmp_path)
    assert result.returncode == 1
    assert "vocos-mel-24khz/pytorch_model.bin: not in the Hugging Face cache" in result.stderr
    assert "model_1250000.safetensors: truncated or corrupt" in result.stderr
    assert "vocab.txt" not in result.stderr


@pytest.mark.integration  # starts a Python process
def test_check_of_local_model_files_checks_them_where_the_settings_name_them(tmp_path: Path) -> None:
    """F5TTS_CKPT_FILE and friends (an image built with WEIGHTS=tiny sets them): no Hub cache is looked at."""
    model = tmp_path / "model"
    (model / "vocos").mkdir(parents=True)
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(model / "model.safetensors"))
    (model / "vocab.txt").write_text("a\n")
    (model / "vocos" / "config.yaml").write_text("x: 1\n")
    (model / "vocos" / "pytorch_model.bin").write_bytes(b"x" * 16)
    build_aligner(tmp_path)
    local = {
        "F5TTS_MODEL": "F5TTS_tiny",
        "F5TTS_CKPT_FILE": str(model / "model.safetensors"),
        "F5TTS_VOCAB_FILE": str(model / "vocab.txt"),
        "F5TTS_VOCODER_DIR": str(model / "vocos"),
    }
    result = run_prefetch("--check", hf_home=tmp_path, **local)
    assert result.returncode == 0, result.stderr
    assert "weights for F5TTS_tiny" in result.stdout

    (model / "vocos" / "pytorch_model.bin").unlink()
    (model / "vocab.txt").write_text("")
    broken = run_prefetch("--check", hf_home=tmp_path, **local)
    assert broken.returncode == 1
    assert f"{model / 'vocos' / 'pytorch_model.bin'}: missing" in broken.stderr
    assert f"{model / 'vocab.txt'}: empty" in broken.stderr
    assert "Hugging Face cache" not in broken.stderr


@pytest.mark.integration  # starts a Python process
def test_check_of_an_empty_cache_and_an_unknown_model(tmp_path):
    assert run_prefetch("--check", hf_home=tmp_path).returncode == 1
    unknown = run_prefetch("--check", "--model", "E3TTS", hf_home=tmp_path)
    assert unknown.returncode == 2 and "F5TTS_v1_Base" in unknown.stderr


@pytest.mark.integration  # starts a Python process
def test_prefetch_check_imports_neither_torch_nor_f5_tts(tmp_path):
    fill_model_cache(tmp_path / "hub")
    aligner = build_aligner(tmp_path)
    code = (
        "import sys; from worker import prefetch; "
        f"assert prefetch.check('F5TTS_v1_Base', {str(tmp_path / 'hub')!r}) == []; "
        f"assert prefetch.check_aligner(__import__('pathlib').Path({str(aligner)!r})) == []; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'f5_tts', 'torchaudio', 'vocos')))"
    )
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_download_fetches_each_file_into_the_given_cache(tmp_path, monkeypatch):
    """The download path without a network: huggingface_hub's downloader replaced by one that fills the cache."""
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, cache_dir=None):
        calls.append((repo_id, filename, cache_dir))
        return str(fake_hub_file(Path(cache_dir), repo_id, filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    # torchaudio's bundle download replaced too: a model of the bundle's family, random, instead of 360 MB.
    import torchaudio

    from worker.tiny import TINY_ALIGNER

    bundle = getattr(torchaudio.pipelines, ALIGNER_BUNDLE)
    downloads = []

    def fake_get_model(dl_kwargs):
        downloads.append(dl_kwargs)
        return torchaudio.models.wav2vec2_model(**TINY_ALIGNER)

    monkeypatch.setattr(bundle, "get_model", fake_get_model)
    monkeypatch.setenv("F5TTS_ALIGNER_DIR", str(tmp_path / "aligner"))
    assert prefetch.main(["--cache-dir", str(tmp_path)]) == 0
    assert len(downloads) == 1 and prefetch.check_aligner(tmp_path / "aligner") == []
    assert [(r, f) for r, f, _ in calls] == [(f.repo_id, f.filename) for f in prefetch.required_files("F5TTS_v1_Base")]
    assert {c for _, _, c in calls} == {str(tmp_path)}


@pytest.mark.parametrize("cut", [0, 4, 12])
def test_safetensors_check_catches_broken_headers(tmp_path, cut):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.zeros(8, dtype=np.float32)}, str(path))
    assert prefetch.safetensors_intact(path)
    path.write_bytes(path.read_bytes()[:cut])
    assert not prefetch.safetensors_intact(path)


def test_float16_bake_gives_a_float16_worker_the_same_weights_in_half_the_bytes(
    tiny_model_env: dict[str, str], make_model_settings: Callable[..., ModelSettings], tmp_path: Path
) -> None:
    """`--float16` on a real checkpoint (the tiny model's, in the published layout: `ema_model.` keys, EMA's
    `initted` and `step`), cached as huggingface_hub caches it (a snapshot link to a blob): the worker's own load
    (Engine.load: f5-tts's load_model on the CPU in float32, then the cast to float16) gives bit for bit the same
    model from the baked file as from the original, and `--check` accepts the settings it printed."""
    import torch
    from safetensors import safe_open

    from worker.engine import Engine

    cached = fill_model_cache(tmp_path / "hub")
    snapshot = cached["F5TTS_v1_Base/model_1250000.safetensors"]
    blob = snapshot.parents[3] / "blobs" / "0123abcd"
    blob.parent.mkdir()
    shutil.copyfile(tiny_model_env["F5TTS_CKPT_FILE"], blob)
    snapshot.unlink()
    snapshot.symlink_to(blob)
    original = tmp_path / "original.safetensors"
    shutil.copyfile(blob, original)
    build_aligner(tmp_path)

    dest = tmp_path / "f5tts-float16"
    baked = run_prefetch("--float16", str(dest), hf_home=tmp_path)
    assert baked.returncode == 0, baked.stderr
    settings = dict(line.split("=", 1) for line in baked.stdout.splitlines())
    checkpoint = dest / "model_1250000.float16.safetensors"
    assert settings == {"F5TTS_CKPT_FILE": str(checkpoint), "F5TTS_VOCAB_FILE": str(dest / "vocab.txt")}
    assert not snapshot.exists() and not blob.exists()  # the float32 file left the cache, link and blob
    assert (dest / "vocab.txt").read_bytes() == cached["F5TTS_v1_Base/vocab.txt"].read_bytes()
    with safe_open(str(checkpoint), "pt") as baked_file, safe_open(str(original), "pt") as original_file:
        names = set(original_file.keys())
        assert set(baked_file.keys()) == names
        for name in names:
            before, after = original_file.get_tensor(name), baked_file.get_tensor(name)
            assert after.dtype == (torch.float16 if before.dtype == torch.float32 else before.dtype), name
    assert checkpoint.stat().st_size < 0.55 * original.stat().st_size

    from_original, from_baked = (
        Engine.load(make_model_settings(ckpt_file=str(path), dtype="float16", device="cpu")).model.state_dict()
        for path in (original, checkpoint)
    )
    assert from_original.keys() == from_baked.keys()
    for name, tensor in from_original.items():
        assert tensor.dtype == from_baked[name].dtype, name
        assert tensor.numpy().tobytes() == from_baked[name].numpy().tobytes(), name  # bit for bit

    checked = run_prefetch("--check", hf_home=tmp_path, **settings)
    assert checked.returncode == 0, checked.stderr
    cached["pytorch_model.bin"].unlink()  # the vocoder stays in the Hub cache: still checked there
    broken = run_prefetch("--check", hf_home=tmp_path, **settings)
    assert (
        broken.returncode == 1 and "vocos-mel-24khz/pytorch_model.bin: not in the Hugging Face cache" in broken.stderr
    )


def test_float16_bake_refuses_an_incomplete_cache(tmp_path: Path) -> None:
    cached = fill_model_cache(tmp_path / "hub")
    checkpoint = cached["F5TTS_v1_Base/model_1250000.safetensors"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8])
    baked = run_prefetch("--float16", str(tmp_path / "dest"), hf_home=tmp_path)
    assert baked.returncode == 2 and "model_1250000.safetensors: truncated or corrupt" in baked.stderr
    assert baked.stdout == "" and checkpoint.exists() and not (tmp_path / "dest").exists()
