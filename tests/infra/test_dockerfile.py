"""Dockerfile.runpod: hadolint-clean, built from exactly the project's pins, in an order that keeps the runtime
offline. What the built image does is tests/image's to check."""

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


def _expand(text: str, args: dict[str, str]) -> str:
    """`text` with the ARG defaults it names (`${NAME}`) substituted, as the build does without --build-arg."""
    while (expanded := re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)) != text:
        text = expanded
    return text


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
    base = _expand(next(args_ for kind, args_ in _instructions() if kind == "FROM"), args)
    assert base.startswith(f"python:{python}-") and "cuda" not in base, base
    assert _pin("nvidia-cuda-runtime-cu12").startswith(f"{wheel['cuda'][:2]}.")


def _pip_commands() -> list[tuple[str, list[str]]]:
    """Every pip command the RUN instructions run (direct or through scripts/image-pip.sh): (its RUN, its words)."""
    commands = []
    for kind, run in _instructions():
        if kind == "RUN":
            for match in re.finditer(r"(?:\bpip|image-pip\.sh)\s+(?:install|download)\b[^&;|]*", run):
                commands.append((run, shlex.split(match.group(0))[1:]))
    return commands


def test_nothing_is_installed_but_the_hash_pinned_sets_and_the_flash_attn_wheel():
    """The supply-chain property: every pip command reads a hash-checked requirements file, or installs the one
    flash-attn wheel the pins are checked against above; none resolves dependencies or names a package."""
    commands = _pip_commands()
    assert commands, "no pip command found: the parser no longer matches the Dockerfile"
    pinned_sets = set()
    for run, words in commands:
        assert "--no-deps" in words, words  # the compiled sets are complete; f5-tts's extras stay out
        if "-r" in words:
            assert "--require-hashes" in words, words
            # The set is chosen in the same RUN (`pins=...`); collect every file it can name.
            pinned_sets |= set(re.findall(r"requirements/\w+\.txt", run))
        else:
            (wheel,) = [w for w in words[1:] if not w.startswith("-")]
            assert wheel.endswith(".whl") or "${wheel}" in wheel, words
            assert "${FLASH_ATTN_WHEEL}" in run  # the wheel whose tags the pins test checks
    # The same files `make setup` syncs the test environment to, so the tests run on what the image runs.
    assert pinned_sets == {"requirements/worker.txt", "requirements/whisper.txt"}


def test_installed_packages_are_pruned_in_the_layer_that_installs_them():
    # A later RUN cannot shrink the image: deleted files stay in the earlier layer.
    for run, words in _pip_commands():
        if "-r" in words and words[0] == "install":
            assert "scripts/prune-site-packages.sh" in run


def test_weights_are_baked_then_the_runtime_is_offline_on_the_gpu():
    order = _instructions()
    prefetch = next(i for i, (kind, args) in enumerate(order) if kind == "RUN" and "python -m worker.prefetch" in args)
    offline = next(i for i, (kind, args) in enumerate(order) if kind == "ENV" and "HF_HUB_OFFLINE=1" in args)
    assert prefetch < offline  # the download happens before the Hub is switched off, nothing after it
    env = _env()
    assert env["F5TTS_DEVICE"] == "cuda"  # never a silent CPU worker
    validate_worker_env({k: v for k, v in env.items() if k.startswith("F5TTS_")})  # values the worker accepts


def test_the_attention_backend_is_recorded_where_the_worker_reads_it():
    # It follows FLASH_ATTN at build time, so it is written into the image's settings file, not set by ENV.
    assert "F5TTS_ATTN_BACKEND" not in _env()
    (flash_attn,) = [args for kind, args in _instructions() if kind == "RUN" and "FLASH_ATTN_WHEEL" in args]
    assert str(IMAGE_SETTINGS_FILE) in flash_attn  # the file worker/config.py reads (worker/model_facts.py)
    written = set(re.findall(r"F5TTS_ATTN_BACKEND=(\w+)", flash_attn))
    assert written == {"torch", "flash_attn"}  # one per outcome: without the wheel, and with it
    for backend in written:
        validate_worker_env({"F5TTS_ATTN_BACKEND": backend})


def test_the_self_check_runs_at_build_after_everything_a_start_needs():
    order = _instructions()
    check = next(i for i, (kind, args) in enumerate(order) if kind == "RUN" and "worker.handler --self-check" in args)
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


def test_runpod_hub_builds_the_same_dockerfile():
    # A link, not a copy: one Dockerfile to keep right (.runpod/handler.py is run by tests/infra/test_runpod_hub.py).
    assert (REPO_ROOT / ".runpod" / "Dockerfile").resolve() == DOCKERFILE.resolve()
