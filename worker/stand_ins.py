"""Importing a module with some of its dependencies stood in for, when they cost start-up time for features
the worker never uses (f5-tts's trainer and Whisper path, runpod's CPU probe). The stand-ins live in
`sys.modules` only for the duration of that one import; anything imported later gets the real module.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

_import_lock = threading.Lock()


class StandIn(types.ModuleType):
    """A placeholder module, in sys.modules only while `import_with_stand_ins` runs.

    Attributes set on it serve the `from x import y` statements that run at import time; any other attribute
    resolves, on first use, to the real module's (imported then, since the stand-in is gone by that time).
    """

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or sys.modules.get(self.__name__) is self:
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__name__), attr)


def deferred(module: str, name: str) -> Callable[..., Any]:
    """A callable that imports `module` when first called and forwards the call to its `name`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call


class DeferredAttribute:
    """`module.name` (a class, an enum), imported when one of its attributes is first read."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(getattr(importlib.import_module(self._module), self._name), attr)


def import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    """Import `name` while each module of `stand_ins` not imported yet is replaced by its stand-in.

    A module that is already imported is used as it is, and so is `name` itself if it is.
    """
    with _import_lock:
        if (module := sys.modules.get(name)) is not None:
            return module
        installed = [key for key in stand_ins if key not in sys.modules]
        for key in installed:
            sys.modules[key] = stand_ins[key]
        try:
            return importlib.import_module(name)
        finally:
            for key in installed:
                if sys.modules.get(key) is stand_ins[key]:
                    del sys.modules[key]
