"""Download the production weights into the Hugging Face cache at image build time; `--check` verifies them offline.

    python -m worker.prefetch            # Dockerfile.runpod, before HF_HUB_OFFLINE=1 is set
    python -m worker.prefetch --float16 DIR   # the cached checkpoint, as float16 in DIR; prints its settings
    python -m worker.prefetch --check    # HEALTHCHECK: exit 0 only if every file is cached and intact

`--check` reads the model settings as the worker does (the environment over the image's IMAGE_SETTINGS_FILE): local
files (F5TTS_CKPT_FILE and friends, the tiny model of a WEIGHTS=tiny image) are checked where they are named.

The files are the ones f5-tts itself resolves at load time (the checkpoint and vocab of `F5TTS_MODEL` from
SWivid's repos, the Vocos vocoder; see worker/model_facts.py), so a worker with `HF_HUB_OFFLINE=1` finds them
where f5-tts looks. Only huggingface_hub, python-dotenv and the standard library are imported: no torch, no f5_tts; the word
aligner's weights (torchaudio's bundle, converted to safetensors) import torch and torchaudio when they are baked.

`--float16` halves the image's largest file (the published checkpoint is float32, 1.35 GB): the worker on a GPU
runs the model in float16 (F5TTS_DTYPE=auto), and f5-tts's loader rounds each weight to float16 exactly as the
conversion here does, so a float16 worker loads the same bits from either file (tests/worker/test_prefetch.py
checks it). The float32 original leaves the cache; F5TTS_DTYPE=float32 or bfloat16 then run on float16-rounded
weights, which is why the image build can keep float32 instead (Dockerfile.runpod: WEIGHTS_DTYPE).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from worker.model_facts import (
    ALIGNER_BUNDLE,
    ALIGNER_CONFIG,
    ALIGNER_SAMPLE_RATE,
    ALIGNER_WEIGHTS,
    DEFAULT_MODEL,
    IMAGE_SETTINGS_FILE,
    PUBLISHED_MODELS,
    VOCOS_FILES,
    WHISPER_FILE_PATTERNS,
    WHISPER_REPO,
    HubFile,
    baked_files,
    default_aligner_dir,
)


class PrefetchError(RuntimeError):
    pass


def required_files(model: str) -> tuple[HubFile, ...]:
    """The checkpoint and vocabulary of `model` (worker/model_facts.py), then the vocoder's files."""
    if model not in PUBLISHED_MODELS:
        raise PrefetchError(f"no published weights known for model {model!r}; known: {', '.join(PUBLISHED_MODELS)}")
    return baked_files(model)


def download(model: str, cache_dir: str | None = None) -> list[Path]:
    """Fetch every file of `model` plus the vocoder into the HF cache (a no-op for files already there)."""
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(f.repo_id, f.filename, cache_dir=cache_dir)) for f in required_files(model)]


def download_whisper(cache_dir: str | None = None) -> Path:
    """Fetch the Whisper model f5-tts transcribes with (image build arg WITH_WHISPER=true): the worker runs with
    HF_HUB_OFFLINE=1, so transcription finds it only if it was baked in."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(WHISPER_REPO, allow_patterns=list(WHISPER_FILE_PATTERNS), cache_dir=cache_dir))


def write_aligner_dir(dest: Path, model: Any, *, builder: str, kwargs: dict[str, Any], labels: list[str]) -> Path:
    """An aligner directory (worker/aligner.py reads it): `model`'s weights built by torchaudio.models.`builder`
    (**kwargs), its output labels (blank first) and its input rate; written atomically, config last."""
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f"{ALIGNER_WEIGHTS}.{os.getpid()}.tmp"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)  # safetensors creates it owner-only
    os.replace(tmp, dest / ALIGNER_WEIGHTS)
    config: dict[str, Any] = {
        "source": ALIGNER_BUNDLE if builder == "wav2vec2_base" else "random weights",
        "builder": builder,
        "kwargs": kwargs,
        "labels": labels,
        "sample_rate": ALIGNER_SAMPLE_RATE,
    }
    tmp = dest / f"{ALIGNER_CONFIG}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, dest / ALIGNER_CONFIG)
    return dest


def download_aligner(dest: Path) -> Path:
    """torchaudio's WAV2VEC2_ASR_BASE_960H (downloaded by torchaudio, into a temporary folder), converted into an
    aligner directory at `dest`. The worker never downloads it: it reads only `dest`."""
    import tempfile

    import torchaudio

    bundle = getattr(torchaudio.pipelines, ALIGNER_BUNDLE)
    with tempfile.TemporaryDirectory() as tmp:
        model = bundle.get_model(dl_kwargs={"model_dir": tmp})
    labels = list(bundle.get_labels())
    # The bundle's architecture is torchaudio's public wav2vec2_base with a letter head; load_state_dict in the
    # worker is strict, so any mismatch fails the self-check at build time.
    return write_aligner_dir(dest, model, builder="wav2vec2_base", kwargs={"aux_num_out": len(labels)}, labels=labels)


def check_aligner(dest: Path) -> list[str]:
    """Problems with a baked aligner directory (offline, no torch)."""
    problems = []
    try:
        config = json.loads((dest / ALIGNER_CONFIG).read_text())
        if not {"builder", "labels", "sample_rate"} <= set(config):
            problems.append(f"{dest / ALIGNER_CONFIG}: not an aligner config")
    except (OSError, ValueError) as exc:
        problems.append(f"{dest / ALIGNER_CONFIG}: {type(exc).__name__}: {exc}")
    weights = dest / ALIGNER_WEIGHTS
    if not weights.is_file() or not safetensors_intact(weights):
        problems.append(f"{weights}: missing, truncated or corrupt")
    return problems


def settings_env() -> dict[str, str]:
    """The environment the worker's settings read: the process environment over the image's settings file."""
    baked = {key: value for key, value in dotenv_values(IMAGE_SETTINGS_FILE).items() if value is not None}
    return baked | dict(os.environ)


def aligner_dir(env: dict[str, str]) -> Path:
    """The directory F5TTS_ALIGNER_DIR names, else the default (worker/model_facts.py)."""
    return Path(env.get("F5TTS_ALIGNER_DIR") or default_aligner_dir())


def file_problem(path: Path) -> str | None:
    """What is wrong with a model file (missing, empty, truncated safetensors), or None."""
    if not path.is_file():
        return f"{path}: missing"
    if path.stat().st_size == 0:
        return f"{path}: empty"
    if path.suffix == ".safetensors" and not safetensors_intact(path):
        return f"{path}: truncated or corrupt safetensors"
    return None


def check_local(env: dict[str, str], cache_dir: str | None = None) -> list[str]:
    """Problems with the local model files the settings name (F5TTS_CKPT_FILE, F5TTS_VOCAB_FILE, F5TTS_VOCODER_DIR);
    without F5TTS_VOCODER_DIR, the vocoder is the one in the Hugging Face cache, checked there."""
    paths = [Path(env["F5TTS_CKPT_FILE"])]
    if vocab := env.get("F5TTS_VOCAB_FILE"):
        paths.append(Path(vocab))
    if vocoder := env.get("F5TTS_VOCODER_DIR"):
        paths += [Path(vocoder) / "config.yaml", Path(vocoder) / "pytorch_model.bin"]
    problems = [problem for problem in map(file_problem, paths) if problem]
    return problems if vocoder else problems + check_hub(VOCOS_FILES, cache_dir)


def safetensors_intact(path: Path) -> bool:
    """The header parses and the file is as long as its tensors say: catches truncated downloads cheaply."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            return False
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            return False
        try:
            header = json.loads(fh.read(header_len))
        except ValueError:
            return False
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return 8 + header_len + max(ends, default=0) <= size


def check(model: str, cache_dir: str | None = None) -> list[str]:
    """Problems with the cached weights of `model` (empty when the image is good); never touches the network."""
    return check_hub(required_files(model), cache_dir)


def check_hub(hub_files: tuple[HubFile, ...], cache_dir: str | None = None) -> list[str]:
    """Problems with `hub_files` in the Hugging Face cache (empty when each is there and intact)."""
    from huggingface_hub import try_to_load_from_cache

    problems = []
    for hub_file in hub_files:
        cached = try_to_load_from_cache(hub_file.repo_id, hub_file.filename, cache_dir=cache_dir)
        if not isinstance(cached, str):
            problems.append(f"{hub_file.uri}: not in the Hugging Face cache")
            continue
        path = Path(cached)
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{hub_file.uri}: empty or missing file")
        elif path.suffix == ".safetensors" and not safetensors_intact(path):
            problems.append(f"{hub_file.uri}: truncated or corrupt safetensors")
    return problems


def bake_float16(model: str, dest: Path, cache_dir: str | None = None) -> dict[str, str]:
    """The cached checkpoint of `model` written to `dest` with every float32 tensor as float16 (other tensors, e.g.
    EMA's step counter, as they are), its vocabulary next to it; the float32 file then leaves the cache. Returns the
    settings that make the worker load them (F5TTS_CKPT_FILE, F5TTS_VOCAB_FILE). Rounds as torch's cast does
    (to nearest, ties to even): what f5-tts's loader does when it casts the float32 weights for a float16 worker."""
    import torch
    from huggingface_hub import try_to_load_from_cache
    from safetensors.torch import load_file, save_file

    if problems := check(model, cache_dir):
        raise PrefetchError("; ".join(problems))
    published = PUBLISHED_MODELS[model]
    source, vocab = (
        Path(str(try_to_load_from_cache(f.repo_id, f.filename, cache_dir=cache_dir)))
        for f in (published.checkpoint, published.vocab)
    )
    tensors = {
        name: tensor.to(torch.float16) if tensor.dtype == torch.float32 else tensor
        for name, tensor in load_file(str(source)).items()
    }
    dest.mkdir(parents=True, exist_ok=True)
    checkpoint = dest / Path(published.checkpoint.filename).with_suffix(".float16.safetensors").name
    tmp = checkpoint.with_name(f"{checkpoint.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"source": published.checkpoint.uri, "dtype": "float16"})
    tmp.chmod(0o644)  # safetensors creates it owner-only
    os.replace(tmp, checkpoint)
    (dest / "vocab.txt").write_bytes(vocab.read_bytes())
    # The cache's entry is a link to a blob: both go, or the image keeps the 1.35 GB.
    blob = source.resolve()
    source.unlink()
    blob.unlink(missing_ok=True)
    return {"F5TTS_CKPT_FILE": str(checkpoint), "F5TTS_VOCAB_FILE": str(dest / "vocab.txt")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the cached weights offline instead of downloading")
    env = settings_env()
    parser.add_argument("--model", default=env.get("F5TTS_MODEL", DEFAULT_MODEL), help="F5-TTS model name")
    parser.add_argument("--cache-dir", default=None, help="HF cache directory (default: HF_HOME / HF_HUB_CACHE)")
    parser.add_argument("--whisper", action="store_true", help=f"also fetch {WHISPER_REPO} (the Whisper extra)")
    parser.add_argument(
        "--float16",
        metavar="DIR",
        type=Path,
        help="write the cached checkpoint to DIR in float16, drop the float32 one, print the settings that load it",
    )
    args = parser.parse_args(argv)
    try:
        if args.float16:
            for key, value in bake_float16(args.model, args.float16, args.cache_dir).items():
                print(f"{key}={value}")
            return 0
        if args.check:
            ckpt = env.get("F5TTS_CKPT_FILE", "")
            local = bool(ckpt) and not ckpt.startswith("hf://")
            model_problems = check_local(env, args.cache_dir) if local else check(args.model, args.cache_dir)
            problems = model_problems + check_aligner(aligner_dir(env))
            for problem in problems:
                print(f"prefetch: {problem}", file=sys.stderr)
            if not problems:
                print(f"prefetch: weights for {args.model}, the vocoder and the aligner are cached")
            return 1 if problems else 0
        for path in download(args.model, args.cache_dir):
            print(f"prefetch: {path}")
        if args.whisper:
            print(f"prefetch: {download_whisper(args.cache_dir)}")
        print(f"prefetch: {download_aligner(aligner_dir(env))}")
        problems = check(args.model, args.cache_dir) + check_aligner(aligner_dir(env))
        for problem in problems:
            print(f"prefetch: {problem}", file=sys.stderr)
        return 1 if problems else 0
    except PrefetchError as exc:
        print(f"prefetch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
