"""`python -m worker.handler --self-check [--skip-device]`: what a real start needs, checked without a job.

It does the imports a real start does (runpod and f5-tts through their lean, stand-in imports; flash-attn when
F5TTS_ATTN_BACKEND=flash_attn), checks that the model files the settings name are there and complete (offline:
nothing is downloaded), loads the word aligner's weights into its architecture (on the CPU), and that the configured device can run a kernel. Dockerfile.runpod runs it at build
time with --skip-device (no GPU there), so an f5-tts or runpod upgrade that breaks a stand-in, a missing runtime
dependency or an incomplete weights download fails the build instead of a deploy. Exit status 0 when every
check passes, 1 otherwise; each check prints one line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from worker.config import Settings, get_settings


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _version(distribution: str) -> str:
    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} (not installed)"


def check_runpod() -> str:
    from worker.lean_imports import import_runpod

    import_runpod()
    return f"{_version('runpod')} imported (lean import)"


def check_f5_tts() -> str:
    from worker.lean_imports import F5_INFER_FUNCTIONS, import_f5_infer

    f5 = import_f5_infer()
    missing = [name for name in F5_INFER_FUNCTIONS if not hasattr(f5, name)]
    if missing:
        raise ImportError(f"{_version('f5-tts')}: f5_tts.infer.utils_infer lacks {', '.join(missing)}")
    return f"{_version('f5-tts')} inference imported (lean import: trainer, Whisper and plots stood in)"


def check_flash_attn() -> str:
    # f5-tts imports these two names when flash-attn is installed (f5_tts.model.modules); a wheel built for
    # another torch or C++ ABI fails right here with an undefined symbol.
    importlib.import_module("flash_attn").flash_attn_varlen_func  # noqa: B018
    importlib.import_module("flash_attn.bert_padding").unpad_input  # noqa: B018
    return f"{_version('flash-attn')} imported"


def _file_problem(path: Path) -> str | None:
    from worker.prefetch import safetensors_intact

    if not path.is_file():
        return f"{path}: missing"
    if path.stat().st_size == 0:
        return f"{path}: empty"
    if path.suffix == ".safetensors" and not safetensors_intact(path):
        return f"{path}: truncated or corrupt safetensors"
    return None


def check_model_files(settings: Settings) -> str:
    from worker.model_files import read_model_config, resolve_model_files

    files = resolve_model_files(settings.model)  # HF_HUB_OFFLINE=1 (set by main): the cache only
    read_model_config(files.model_cfg, settings.model.attn_backend)
    paths = [
        files.ckpt_file,
        files.vocab_file,
        files.vocoder_dir / "config.yaml",
        files.vocoder_dir / "pytorch_model.bin",
    ]
    problems = [p for p in map(_file_problem, paths) if p]
    if problems:
        raise FileNotFoundError("; ".join(problems))
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    return (
        f"{settings.model.model}: {files.ckpt_file.name}, vocabulary and Vocos present and complete ({size_mb:.0f} MB)"
    )


def check_aligner(settings: Settings) -> str:
    from worker.aligner import Aligner
    from worker.model_facts import ALIGNER_WEIGHTS

    directory = settings.model.aligner_dir
    if problem := _file_problem(directory / ALIGNER_WEIGHTS):
        raise FileNotFoundError(problem)
    aligner = Aligner.load(directory, device="cpu")  # strict: every weight of the architecture, none missing
    parameters = sum(p.numel() for p in aligner.model.parameters())
    return f"{directory}: {parameters / 1e6:.1f} M parameters loaded, {len(aligner.index)} labels"


def check_device(settings: Settings) -> str:
    import torch

    from worker.engine import resolve_device, resolve_dtype

    device = resolve_device(settings.model.device)
    dtype = str(resolve_dtype(settings.model.dtype, device)).removeprefix("torch.")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    return f"F5TTS_DEVICE={settings.model.device} -> {device} ({name}), dtype {dtype}"


def run_checks(settings: Settings, *, device: bool = True) -> list[CheckResult]:
    checks: list[tuple[str, Callable[[], str] | None]] = [
        ("runpod", check_runpod),
        ("f5-tts", check_f5_tts),
        ("flash-attn", check_flash_attn if settings.model.attn_backend == "flash_attn" else None),
        ("model files", lambda: check_model_files(settings)),
        ("aligner", lambda: check_aligner(settings)),
        ("device", (lambda: check_device(settings)) if device else None),
    ]
    results = []
    for name, check in checks:
        if check is None:
            why = "--skip-device" if name == "device" else f"F5TTS_ATTN_BACKEND={settings.model.attn_backend}"
            results.append(CheckResult(name, True, f"skipped ({why})"))
            continue
        try:
            results.append(CheckResult(name, True, check()))
        except Exception as exc:
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    return results


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.handler --self-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-device", action="store_true", help="skip the device check (image build: no GPU)")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"  # a check must never download what a start would lack
    started = time.perf_counter()
    results = run_checks(get_settings(), device=not args.skip_device)
    for result in results:
        print(f"self-check {'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}", file=out, flush=True)
    failed = [r.name for r in results if not r.ok]
    verdict = f"failed: {', '.join(failed)}" if failed else "passed"
    print(f"self-check {verdict} ({time.perf_counter() - started:.1f} s)", file=out, flush=True)
    return 1 if failed else 0
