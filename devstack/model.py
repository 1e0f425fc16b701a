"""Which F5-TTS weights the devstack's workers load.

Real weights when they are configured (`F5TTS_CKPT_FILE` in the environment) or already in the Hugging Face cache
(put there by `python -m worker.prefetch`, or by `make demo`). `choose_model(fetch=True)` (the demo) fetches them
first when the Hub is reachable: ~1.4 GB once, with a progress bar. Otherwise — for the devstack only, the
production worker never falls back — a tiny random-weight checkpoint, built once into `.devstack/cache/` and
announced loudly: it produces noise. Whether the Hub is reachable is asked with a bounded DNS lookup and TCP
connect, so an offline machine falls back at once instead of waiting on a download's timeouts.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from devstack.paths import REPO_ROOT
from worker.model_facts import DEFAULT_MODEL, PUBLISHED_MODELS, VOCOS_FILES, hf_home, hf_hub_offline

log = logging.getLogger("devstack.model")

CACHE_DIR = REPO_ROOT / ".devstack" / "cache"
ModelMode = Literal["auto", "real", "tiny"]

HUB_PROBE_TIMEOUT_S = 3.0  # DNS lookup and TCP connect, each: a reachable Hub answers in well under a second

TINY_BANNER = """
################################################################################
##  NO F5-TTS WEIGHTS ARE CONFIGURED OR CACHED: USING A TINY RANDOM-WEIGHT MODEL.
##  ITS AUDIO IS NOISE, NOT SPEECH. The path is real (queue -> worker -> S3 ->
##  presigned URL); only the voice is not. For speech, run `make demo` where
##  the Hugging Face Hub is reachable (it fetches ~1.4 GB once), or fetch the
##  weights with `python -m worker.prefetch`, or set F5TTS_CKPT_FILE.
################################################################################
"""


class ModelChoiceError(RuntimeError):
    pass


@dataclass
class ModelChoice:
    kind: Literal["real", "tiny"]
    env: dict[str, str]  # F5TTS_* variables for the workers (real weights: the developer's own pass through)
    description: str

    @property
    def is_noise(self) -> bool:
        return self.kind == "tiny"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache the workers will search (read from the environment now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return hf_home() / "hub"


def _in_hf_cache(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename, cache_dir=hf_hub_cache()), str)


def find_real_weights() -> str | None:
    """A description of the real weights the workers would load (as worker.engine resolves them), or None."""
    if os.environ.get("F5TTS_CKPT_FILE"):
        return f"configured checkpoint {os.environ['F5TTS_CKPT_FILE']}"
    model = os.environ.get("F5TTS_MODEL", DEFAULT_MODEL)
    published = PUBLISHED_MODELS.get(model)
    if published is None or not _in_hf_cache(published.checkpoint.repo_id, published.checkpoint.filename):
        return None
    if not os.environ.get("F5TTS_VOCODER_DIR") and not all(_in_hf_cache(f.repo_id, f.filename) for f in VOCOS_FILES):
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
            raise ModelChoiceError(f"building the tiny model failed:\n{done.stderr[-3000:]}")
        env = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", done.stdout, flags=re.MULTILINE))
        if not env:
            raise ModelChoiceError(f"`python -m worker.tiny` printed no KEY=VALUE lines:\n{done.stdout[-2000:]}")
        marker.write_text(json.dumps(env, indent=2))
        return env


def hub_unreachable_reason(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face Hub (HF_ENDPOINT) cannot be reached from here, or None when a TCP connection opens.

    Both steps are bounded: the DNS lookup runs in a thread given `timeout_s` (a resolver that does not answer
    would otherwise hold the caller for its own retries), and the connect has the same timeout.
    """
    if hf_hub_offline():
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        addresses = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM).result(timeout_s)
    except concurrent.futures.TimeoutError:
        return f"no DNS answer for {host} within {timeout_s:g} s"
    except OSError as exc:
        return f"{host} does not resolve ({exc})"
    finally:
        pool.shutdown(wait=False)
    reason = f"{host} resolves to no address"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout_s)
                sock.connect(address)
                return None
        except OSError as exc:
            reason = f"{host}:{port} does not accept connections ({exc})"
    return reason


def fetch_real_weights(out: IO[str]) -> str | None:
    """Download the default model and Vocos into the HF cache the workers search (huggingface_hub's progress
    bars show on stderr); None when done, else why not."""
    from worker import prefetch

    model = os.environ.get("F5TTS_MODEL", DEFAULT_MODEL)
    if model not in PUBLISHED_MODELS:
        return f"F5TTS_MODEL={model} has no published weights"
    print(f"fetching {model} and the Vocos vocoder (~1.4 GB, once) into {hf_hub_cache()}...", file=out, flush=True)
    try:
        prefetch.download(model, cache_dir=str(hf_hub_cache()))
    except Exception as exc:
        return f"the download failed: {type(exc).__name__}: {exc}"
    problems = prefetch.check(model, cache_dir=str(hf_hub_cache()))
    return "; ".join(problems) or None


def choose_model(mode: ModelMode = "auto", *, fetch: bool = False, out: IO[str] = sys.stderr) -> ModelChoice:
    """Real weights when configured or cached, or — with `fetch` — fetched now if the Hub is reachable; else
    (mode auto) the tiny model. `why_not` on the tiny choice says why no real weights were used."""
    why_not = "no real weights are configured or cached"
    if mode in ("auto", "real"):
        real = find_real_weights()
        if real is None and fetch:
            unreachable = hub_unreachable_reason()
            if unreachable:
                why_not = f"the Hugging Face Hub is unreachable: {unreachable}"
            else:
                why_not = fetch_real_weights(out) or "the fetched weights are not in the cache the workers search"
            real = find_real_weights()
        if real is not None:
            return ModelChoice("real", {}, real)
        if mode == "real":
            raise ModelChoiceError(
                f"no real F5-TTS weights ({why_not}): set F5TTS_CKPT_FILE, or fetch them with `python -m worker.prefetch`"
            )
    return ModelChoice("tiny", tiny_model_env(), f"tiny random-weight model (produces noise): {why_not}")


def announce_model(choice: ModelChoice, out: IO[str]) -> None:
    """Say which model the workers load; loudly when it is the noise-making tiny one."""
    if choice.is_noise:
        print(TINY_BANNER, file=out, flush=True)
    print(f"model: {choice.description}", file=out, flush=True)
