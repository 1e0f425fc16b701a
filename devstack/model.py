"""Which F5-TTS weights the devstack's workers load.

Real weights when they are configured (`F5TTS_CKPT_FILE` in the environment) or already in the Hugging Face cache
(put there by `python -m worker.prefetch`); otherwise — for the devstack only, the production worker never falls
back — a tiny random-weight checkpoint, built once into `.devstack/cache/` and announced loudly: it produces noise.
Nothing here downloads.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from devstack.workers import REPO_ROOT, developer_hf_home

log = logging.getLogger("devstack.model")

CACHE_DIR = REPO_ROOT / ".devstack" / "cache"
ModelMode = Literal["auto", "real", "tiny"]

ENGINE_SOURCE = REPO_ROOT / "worker" / "engine.py"
VOCODER_FILES = ["config.yaml", "pytorch_model.bin"]

TINY_BANNER = """
################################################################################
##  NO F5-TTS WEIGHTS ARE CONFIGURED OR CACHED: USING A TINY RANDOM-WEIGHT MODEL.
##  ITS AUDIO IS NOISE, NOT SPEECH. The path is real (queue -> worker -> S3 ->
##  presigned URL); only the voice is not. For speech, fetch the weights once
##  with `python -m worker.prefetch`, or set F5TTS_CKPT_FILE.
################################################################################
"""


class ModelUnavailable(RuntimeError):
    pass


@dataclass
class ModelChoice:
    kind: Literal["real", "tiny"]
    env: dict[str, str]  # F5TTS_* variables for the workers (real weights: the developer's own pass through)
    description: str

    @property
    def is_noise(self) -> bool:
        return self.kind == "tiny"


def _engine_constant(name: str) -> object:
    """A literal constant of worker/engine.py, read without importing it (importing it imports torch)."""
    for node in ast.parse(ENGINE_SOURCE.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} not found in {ENGINE_SOURCE}")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache the workers will search (read from the environment now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return developer_hf_home() / "hub"


def _in_hf_cache(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename, cache_dir=hf_hub_cache()), str)


def _hf_location_cached(location: str) -> bool:
    owner, _, rest = location.removeprefix("hf://").partition("/")
    repo, _, filename = rest.partition("/")
    return _in_hf_cache(f"{owner}/{repo}", filename)


def find_real_weights() -> str | None:
    """A description of the real weights the workers would load (as worker.engine resolves them), or None."""
    if os.environ.get("F5TTS_CKPT_FILE"):
        return f"configured checkpoint {os.environ['F5TTS_CKPT_FILE']}"
    model = os.environ.get("F5TTS_MODEL", "F5TTS_v1_Base")
    checkpoint = _engine_constant("DEFAULT_CHECKPOINTS").get(model)
    if checkpoint is None or not _hf_location_cached(checkpoint):
        return None
    vocoder_repo = _engine_constant("VOCOS_REPO")
    if not os.environ.get("F5TTS_VOCODER_DIR") and not all(_in_hf_cache(vocoder_repo, f) for f in VOCODER_FILES):
        return None
    return f"{model} from the Hugging Face cache ({hf_hub_cache()})"


def tiny_model_env(cache_dir: Path = CACHE_DIR, timeout_s: float = 300) -> dict[str, str]:
    """Build the tiny checkpoint once (keyed by worker/tiny.py's content) and return its F5TTS_* variables.

    Built by `python -m worker.tiny DEST` in a child process, so the caller never imports torch; a file lock
    keeps concurrent test sessions from building the same directory twice.
    """
    source = (REPO_ROOT / "worker" / "tiny.py").read_bytes()
    dest = cache_dir / f"tiny-{hashlib.sha256(source).hexdigest()[:12]}"
    marker = dest / "devstack-env.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return json.loads(marker.read_text())
        log.info("building the tiny random-weight model in %s", dest)
        done = subprocess.run(
            [sys.executable, "-m", "worker.tiny", str(dest)],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if done.returncode != 0:
            raise ModelUnavailable(f"building the tiny model failed:\n{done.stderr[-3000:]}")
        env = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", done.stdout, flags=re.MULTILINE))
        if not env:
            raise ModelUnavailable(f"`python -m worker.tiny` printed no KEY=VALUE lines:\n{done.stdout[-2000:]}")
        marker.write_text(json.dumps(env, indent=2))
        return env


def choose_model(mode: ModelMode = "auto") -> ModelChoice:
    if mode in ("auto", "real"):
        real = find_real_weights()
        if real is not None:
            return ModelChoice("real", {}, real)
        if mode == "real":
            raise ModelUnavailable(
                "no real F5-TTS weights: set F5TTS_CKPT_FILE, or fetch them with `python -m worker.prefetch`"
            )
    return ModelChoice("tiny", tiny_model_env(), "tiny random-weight model (produces noise)")


def announce_model(choice: ModelChoice, out: IO[str]) -> None:
    """Say which model the workers load; loudly when it is the noise-making tiny one."""
    if choice.is_noise:
        print(TINY_BANNER, file=out, flush=True)
    print(f"model: {choice.description}", file=out, flush=True)
