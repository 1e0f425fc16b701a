"""Shared worker fixtures: the tiny random-weight F5-TTS model, built once per session and loaded through
f5-tts's real loaders.

Other test modules rely on these names: `tiny_model_env`, `engine`, `make_model_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from worker.config import ModelSettings
from worker.engine import Engine
from worker.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`F5TTS_*` variables selecting a tiny checkpoint built for this session (nothing is downloaded)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def make_model_settings(tiny_model_env: dict[str, str]) -> Callable[..., ModelSettings]:
    """ModelSettings for the tiny model, fields overridable (`make_model_settings(attn_backend="flash_attn")`).

    Built with the process's own F5TTS_* variables hidden, so a developer's environment cannot leak in;
    os.environ is left as it was.
    """

    def make(**overrides: object) -> ModelSettings:
        values = {key.removeprefix("F5TTS_").lower(): value for key, value in tiny_model_env.items()}
        values.update(overrides)
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("F5TTS_")]:
                mp.delenv(key)
            return ModelSettings(_env_file=None, **values)

    return make


@pytest.fixture(scope="session")
def engine(make_model_settings: Callable[..., ModelSettings]) -> Engine:
    """The tiny model loaded once per session with Engine.load (f5-tts's load_model / load_vocoder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing in a test may reach the hub
        return Engine.load(make_model_settings())
