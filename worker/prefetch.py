"""Download the production weights into the Hugging Face cache at image build time; `--check` verifies them offline.

    python -m worker.prefetch            # Dockerfile.runpod, before HF_HUB_OFFLINE=1 is set
    python -m worker.prefetch --check    # HEALTHCHECK: exit 0 only if every file is cached and intact

The files are the ones f5-tts itself resolves at load time (the checkpoint and vocab of `F5TTS_MODEL` from
SWivid's repos, the Vocos vocoder; see worker/model_facts.py), so a worker with `HF_HUB_OFFLINE=1` finds them
where f5-tts looks. Only huggingface_hub and the standard library are imported: no torch, no f5_tts.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path

from worker.model_facts import (
    DEFAULT_MODEL,
    PUBLISHED_MODELS,
    WHISPER_FILE_PATTERNS,
    WHISPER_REPO,
    HubFile,
    baked_files,
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
    """Problems with the cached weights (empty when the image is good); never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    problems = []
    for hub_file in required_files(model):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the cached weights offline instead of downloading")
    parser.add_argument("--model", default=os.environ.get("F5TTS_MODEL", DEFAULT_MODEL), help="F5-TTS model name")
    parser.add_argument("--cache-dir", default=None, help="HF cache directory (default: HF_HOME / HF_HUB_CACHE)")
    parser.add_argument("--whisper", action="store_true", help=f"also fetch {WHISPER_REPO} (the Whisper extra)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.model, args.cache_dir)
            for problem in problems:
                print(f"prefetch: {problem}", file=sys.stderr)
            if not problems:
                print(f"prefetch: weights for {args.model} and the vocoder are cached")
            return 1 if problems else 0
        for path in download(args.model, args.cache_dir):
            print(f"prefetch: {path}")
        if args.whisper:
            print(f"prefetch: {download_whisper(args.cache_dir)}")
        problems = check(args.model, args.cache_dir)
        for problem in problems:
            print(f"prefetch: {problem}", file=sys.stderr)
        return 1 if problems else 0
    except PrefetchError as exc:
        print(f"prefetch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
