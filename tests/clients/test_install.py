"""`pip install ./clients/python` into an empty virtualenv works without torch, and `f5tts --help` runs.

Offline by construction: nothing may be downloaded at test time. So the empty venv (`python -m venv`, no system
site-packages) gets, through one `.pth` file, exactly the distributions the package may need and nothing else:
the dependency closure of httpx and pydantic, and setuptools as the build backend, all taken from the project's
environment. pip then runs with `--no-index --no-build-isolation` and *does* resolve the package's declared
dependencies: it finds them installed, so a dependency outside that closure (torch, f5-tts, anything) would make
the install fail with "No matching distribution". pip also runs without any configuration (PIP_CONFIG_FILE is
os.devnull), so a machine's pip.conf cannot add wheel folders or indexes. torch is not importable in that venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

CLIENT_SRC = REPO_ROOT / "clients" / "python"
ALLOWED_DEPENDENCIES = {"httpx", "pydantic"}
# No pip configuration at all: a machine's pip.conf or PIP_* variables may name local wheel folders or indexes.
PIP_ENV = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "PIP_CONFIG_FILE": os.devnull}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: set[str]) -> set[str]:
    """The distributions `roots` need, following Requires-Dist entries that apply without extras."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = _normal(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or []:
            spec, _, marker = requirement.partition(";")
            if "extra" in marker:
                continue
            if "python_version" in marker and '< "3.1' in marker.replace("'", '"'):
                continue  # backports for older Pythons
            todo.append(re.split(r"[\s\[<>=!~;(]", spec.strip(), maxsplit=1)[0])
    return seen


def _link_distribution(name: str, target: Path) -> None:
    """Make one installed distribution importable from `target` (its top-level files and its metadata)."""
    dist = metadata.distribution(name)
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        source = Path(str(dist.locate_file(top)))  # a Path for installed distributions, typed as a protocol
        if source.exists() and not (target / top).exists() and not top.endswith(".pth"):
            (target / top).symlink_to(source)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("empty-venv")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )

    # The venv's bundled setuptools (65) cannot build a wheel without the `wheel` package: use the project's.
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True, env=PIP_ENV)
    available = root / "available"
    available.mkdir()
    for name in _closure(ALLOWED_DEPENDENCIES) | {"setuptools"}:
        _link_distribution(name, available)
    (site / "offline-deps.pth").write_text(f"{available}\n")

    # A copy, so the build leaves nothing (build/, *.egg-info) in the repository.
    source = root / "f5tts-client"
    shutil.copytree(CLIENT_SRC, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [py, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        check=False,
        env=PIP_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return env_dir


def test_the_package_declares_only_httpx_and_pydantic(installed):
    py = installed / "bin" / "python"
    requires = json.loads(
        subprocess.check_output(
            [py, "-c", "import json, importlib.metadata as m; print(json.dumps(m.requires('f5tts-client')))"]
        )
    )
    assert {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requires} == ALLOWED_DEPENDENCIES
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True, check=False, env=PIP_ENV)
    assert check.returncode == 0, check.stdout


def test_it_imports_without_torch(installed):
    probe = (
        "import importlib.util, sys; import f5tts_client; "
        "print(importlib.util.find_spec('torch') is None, 'torch' in sys.modules, f5tts_client.__file__)"
    )
    out = subprocess.check_output([installed / "bin" / "python", "-c", probe], text=True).split()
    assert out[:2] == ["True", "False"]
    assert str(installed) in out[2]  # the installed copy, not the repository's source


def test_the_cli_runs(installed):
    result = subprocess.run([installed / "bin" / "f5tts", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: f5tts" in result.stdout and "voices" in result.stdout and "say" in result.stdout
    say = subprocess.run([installed / "bin" / "f5tts", "say", "--help"], capture_output=True, text=True, check=False)
    assert "--nfe-step" in say.stdout and "--stream" in say.stdout  # the contract's options


def test_the_installed_playground_serves_its_page(installed):
    """The page is package data: an installed copy (not the checkout) must carry it and serve it."""
    probe = (
        "import httpx; from f5tts_client import Client; from f5tts_client.playground import Playground\n"
        "with Client(api_key='k', endpoint_url='http://127.0.0.1:9/v2/none') as c, Playground(c) as p:\n"
        "    page = httpx.get(p.url).text\n"
        "print('Speak' in page, p.token in page, '{{' in page)"
    )
    out = subprocess.check_output([installed / "bin" / "python", "-c", probe], text=True, env=PIP_ENV).split()
    assert out == ["True", "True", "False"]
