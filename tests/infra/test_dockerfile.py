"""Dockerfile.runpod: hadolint-clean, and built from exactly the project's pins."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from f5tts_infra.worker_env import validate_worker_env

from tests.support import REPO_ROOT
from worker.model_facts import IMAGE_SETTINGS_FILE

DOCKERFILE = REPO_ROOT / "Dockerfile.runpod"
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
    env: dict[str, str] = {}
    for kind, args in _instructions():
        if kind == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (REPO_ROOT / "requirements/worker.txt").read_text(), re.MULTILINE)
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
    assert wheel["version"] == args["FLASH_ATTN_VERSION"]

    torch = _pin("torch")
    assert _pin("torchaudio") == torch  # released in lockstep: another pair is not a tested set
    assert ".".join(torch.split(".")[:2]) == wheel["torch"]
    # PyPI's torch wheels are built with the C++11 ABI since 2.7; the wheel must be the abiTRUE build.
    assert wheel["abi"] == "TRUE"

    python = args["PYTHON_VERSION"]
    assert python.replace(".", "") == wheel["py"]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python}" in requires
    assert f"--python-version {python}" in (REPO_ROOT / "requirements/worker.txt").read_text()

    # The base is a slim Python of that version, not a CUDA image: CUDA's user-space libraries come from the
    # nvidia-* pins that torch's wheel depends on (CUDA 12, as the wheel), the driver from the host.
    # (BASE_IMAGE: another base of the same release and Python where this one cannot be pulled; scripts/base-image.sh.)
    assert next(args_ for kind, args_ in _instructions() if kind == "FROM") == "${BASE_IMAGE}"
    assert args["BASE_IMAGE"] == "python:${PYTHON_VERSION}-slim-bookworm"
    assert "nvidia/cuda" not in DOCKERFILE.read_text().split("FROM", 1)[1]
    assert _pin("nvidia-cuda-runtime-cu12").startswith(f"{wheel['cuda'][:2]}.")


def test_runtime_pins_are_installed_from_the_shared_hash_pinned_file():
    runs = [args for kind, args in _instructions() if kind == "RUN"]
    installs = [r for r in runs if "image-pip.sh install" in r and "requirements/" in r]
    assert len(installs) == 1
    (install,) = installs
    # Downloaded into pip's cache mount, then installed from there only: hash-checked both times.
    downloads = "/root/.cache/pip/downloads"
    assert f'image-pip.sh download --require-hashes --no-deps --dest {downloads} -r "${{pins}}"' in install
    assert (
        f'image-pip.sh install --require-hashes --no-deps --no-index --find-links {downloads} -r "${{pins}}"' in install
    )
    # The pins are worker.txt, or whisper.txt (the same set plus the Whisper extra) with WITH_WHISPER=true.
    assert "${WITH_WHISPER}" in install and {"requirements/worker.txt", "requirements/whisper.txt"} <= set(
        re.findall(r"requirements/\w+\.txt", install)
    )
    assert _args()["WITH_WHISPER"] == "false"
    assert "scripts/prune-site-packages.sh" in install  # pruned in the same layer, or the files stay in the image
    copies = [args for kind, args in _instructions() if kind == "COPY"]
    assert "requirements/worker.txt requirements/whisper.txt requirements/" in copies
    # Nothing else gets installed by name from an index: the only other install is the pinned flash-attn wheel.
    others = [r for r in runs if ("pip install" in r or "image-pip.sh" in r) and r not in installs]
    assert len(others) == 1 and 'scripts/image-pip.sh install --no-deps "${wheel}"' in others[0]
    # A download is cached under a folder keyed by its URL; a wheel of another source is never taken for it.
    assert (
        'wheel="/root/.cache/pip/flash-attn/$(printf %s "${FLASH_ATTN}" | sha256sum | cut -c1-16)/${FLASH_ATTN_WHEEL}"'
        in others[0]
    )
    # Every install reads the pip configuration the builder passes as secrets, and pip's cache mount.
    for run in [*installs, *others]:
        assert "--mount=type=secret,id=pip-conf --mount=type=secret,id=pip-cert" in run
        assert "--mount=type=cache,target=/root/.cache/pip" in run


def test_weights_are_baked_then_the_runtime_is_offline_on_the_gpu():
    order = [(kind, args) for kind, args in _instructions()]
    prefetch = next(i for i, (kind, args) in enumerate(order) if kind == "RUN" and "python -m worker.prefetch" in args)
    assert "python -m worker.prefetch --whisper" in order[prefetch][1]  # the Whisper extra's weights, when asked
    offline = next(i for i, (kind, args) in enumerate(order) if kind == "ENV" and "HF_HUB_OFFLINE=1" in args)
    assert prefetch < offline
    env = _env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["F5TTS_DEVICE"] == "cuda"  # never a silent CPU worker
    # The attention backend follows FLASH_ATTN, in the settings file the worker reads under its environment.
    assert "F5TTS_ATTN_BACKEND" not in env
    (flash_attn,) = [args for kind, args in order if kind == "RUN" and "FLASH_ATTN_WHEEL" in args]
    settings = str(IMAGE_SETTINGS_FILE)
    assert f"install -o worker -m 644 <(echo F5TTS_ATTN_BACKEND=torch) {settings}" in flash_attn
    assert flash_attn.endswith(f"install -o worker -m 644 <(echo F5TTS_ATTN_BACKEND=flash_attn) {settings}")
    validate_worker_env({k: v for k, v in env.items() if k.startswith("F5TTS_")})  # values the worker accepts

    healthcheck = next(args for kind, args in order if kind == "HEALTHCHECK")
    assert '"python", "-m", "worker.prefetch", "--check"' in healthcheck
    assert order[-1] == ("CMD", '["python", "-m", "worker.handler"]')


def test_the_self_check_runs_at_build_after_everything_a_start_needs():
    order = [(kind, args) for kind, args in _instructions()]
    check = order.index(("RUN", "python -m worker.handler --self-check --skip-device"))
    last_copy = max(i for i, (kind, _) in enumerate(order) if kind == "COPY")
    last_env = max(i for i, (kind, _) in enumerate(order) if kind == "ENV")
    flash_attn = next(i for i, (kind, args) in enumerate(order) if kind == "RUN" and "FLASH_ATTN_WHEEL" in args)
    assert check > max(last_copy, last_env, flash_attn)  # the worker code, settings and flash-attn of a real start


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [p for p in (REPO_ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"  # deny by default: no .git, .venv, tests or local secrets in the context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = []
    for kind, args in _instructions():
        if kind == "COPY" and "--from" not in args:
            sources += [s for s in shlex.split(args) if not s.startswith("--")][:-1]
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_everything_the_image_copies_is_in_the_repository():
    sources = [
        source
        for kind, args in _instructions()
        if kind == "COPY" and "--from" not in args
        for source in [s for s in shlex.split(args) if not s.startswith("--")][:-1]
    ]
    assert "worker" in sources or any(s.startswith("worker") for s in sources)
    missing = [source for source in sources if not (REPO_ROOT / source).exists()]
    assert missing == []


def test_runpod_hub_builds_the_same_dockerfile():
    hub_dockerfile = REPO_ROOT / ".runpod" / "Dockerfile"
    assert hub_dockerfile.resolve() == DOCKERFILE.resolve()  # a link: one Dockerfile to keep right
    assert (REPO_ROOT / ".runpod" / "handler.py").is_file() and (REPO_ROOT / ".runpod" / "README.md").is_file()
