"""requirements/*.txt: the runtime set keeps f5-tts's training, Gradio and plotting stacks out (excludes.txt), the
Whisper extra is the same set plus transformers, and the dev tools do not drag excluded packages back in."""

from __future__ import annotations

import re
from importlib.metadata import requires

from packaging.requirements import Requirement

from tests.support import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements"


def _names(path_name: str) -> list[str]:
    lines = (REQUIREMENTS / path_name).read_text().splitlines()
    return [Requirement(line.split("#")[0]).name for line in lines if line.split("#")[0].strip()]


def _pins(path_name: str) -> dict[str, str]:
    text = (REQUIREMENTS / path_name).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE))


def test_excluded_packages_are_in_no_compiled_set():
    excluded = set(_names("excludes.txt"))
    for compiled in ("worker.txt", "whisper.txt", "dev.txt"):
        assert not excluded & set(_pins(compiled)), compiled
    assert "transformers" not in _pins("worker.txt") and "transformers" not in _pins("dev.txt")


def test_every_exclusion_is_a_declared_dependency_of_f5_tts_or_torch():
    # An entry nothing declares any more would hide nothing and only mislead: drop it when f5-tts drops it.
    declared = {Requirement(r).name for dist in ("f5-tts", "torch") for r in requires(dist) or []}

    def normalise(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    assert {normalise(n) for n in _names("excludes.txt")} <= {normalise(n) for n in declared}


def test_the_whisper_set_is_the_runtime_set_plus_transformers():
    worker, whisper = _pins("worker.txt"), _pins("whisper.txt")
    assert {name: whisper.get(name) for name in worker} == worker  # same versions: one coherent set
    assert "transformers" in set(whisper) - set(worker)
    assert _names("whisper.in") == ["transformers"]


def test_dev_tools_share_the_runtime_pins():
    worker, dev = _pins("worker.txt"), _pins("dev.txt")
    assert {name: version for name, version in dev.items() if name in worker} == {
        name: worker[name] for name in dev if name in worker
    }
