"""Dockerfile.runpod: hadolint-clean, and built from exactly the project's pins."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from f5tts_infra.worker_env import validate_worker_env

from tests.infra.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile.runpod"
WHEEL = re.compile(
    r"^flash_attn-(?P<version>[\d.]+)\+cu(?P<cuda>\d+)torch(?P<torch>\d+\.\d+)cxx11abi(?P<abi>TRUE|FALSE)"
    r"-cp(?P<py>\d+)-cp\d+-linux_x86_64\.whl$"
)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")
    ]


def _args() -> dict[str, str]:
    return dict(arg.split("=", 1) for kind, arg in _instructions() if kind == "ARG" and "=" in arg)


def _env() -> dict[str, str]:
    env = {}
    for kind, args in _instructions():
        if kind == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def _pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements/worker.txt").read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in requirements/worker.txt"
    return match.group(1)


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_rule_is_justified_inline():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[number - 1].strip()
            assert above.startswith("#") and "hadolint" not in above and len(above) > 20, f"line {number + 1}"


def test_flash_attn_wheel_matches_the_pinned_torch_python_and_cuda():
    args = _args()
    wheel = WHEEL.match(args["FLASH_ATTN_WHEEL"])
    assert wheel, args["FLASH_ATTN_WHEEL"]
    assert wheel["version"] == args["FLASH_ATTN_VERSION"] == "2.8.3"

    torch = _pin("torch")
    assert torch == "2.8.0" and _pin("torchaudio") == "2.8.0"
    assert ".".join(torch.split(".")[:2]) == wheel["torch"]
    # PyPI's torch wheels are built with the C++11 ABI since 2.7; the wheel must be the abiTRUE build.
    assert wheel["abi"] == "TRUE"

    python = args["PYTHON_VERSION"]
    assert python.replace(".", "") == wheel["py"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python}" in requires
    assert f"--python-version {python}" in (ROOT / "requirements/worker.txt").read_text()

    base = next(args_ for kind, args_ in _instructions() if kind == "FROM")
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-", base)
    assert cuda, base
    assert cuda.group(1) == wheel["cuda"][:2] == "12"
    # torch's own CUDA runtime (pip) and the base image's are the same minor release.
    assert _pin("nvidia-cuda-runtime-cu12").startswith(f"{cuda.group(1)}.{cuda.group(2)}.")


def test_runtime_pins_are_installed_from_the_shared_hash_pinned_file():
    runs = [args for kind, args in _instructions() if kind == "RUN"]
    installs = [r for r in runs if "pip install" in r and "requirements/" in r]
    assert len(installs) == 1
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0]
    assert "-r requirements/worker.txt" in installs[0]
    copies = [args for kind, args in _instructions() if kind == "COPY"]
    assert "requirements/worker.txt requirements/worker.txt" in copies
    # Nothing else gets installed by name from an index: the only other install is the pinned flash-attn wheel.
    others = [r for r in runs if "pip install" in r and r not in installs]
    assert len(others) == 1 and '"/tmp/${FLASH_ATTN_WHEEL}"' in others[0]


def test_weights_are_baked_then_the_runtime_is_offline():
    order = [(kind, args) for kind, args in _instructions()]
    prefetch = order.index(("RUN", "python -m worker.prefetch"))
    offline = next(i for i, (kind, args) in enumerate(order) if kind == "ENV" and "HF_HUB_OFFLINE=1" in args)
    assert prefetch < offline
    env = _env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["F5TTS_ATTN_BACKEND"] == "flash_attn"
    validate_worker_env({k: v for k, v in env.items() if k.startswith("F5TTS_")})  # values the worker accepts

    healthcheck = next(args for kind, args in order if kind == "HEALTHCHECK")
    assert '"python", "-m", "worker.prefetch", "--check"' in healthcheck
    assert order[-1] == ("CMD", '["python", "-m", "worker.handler"]')


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"  # deny by default: no .git, .venv, tests or local secrets in the context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = []
    for kind, args in _instructions():
        if kind == "COPY" and "--from" not in args:
            sources += [s for s in shlex.split(args) if not s.startswith("--")][:-1]
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source


@pytest.mark.parametrize("path", ["worker/prefetch.py", "requirements/worker.txt"])
def test_copied_files_exist(path):
    assert (ROOT / path).is_file()
