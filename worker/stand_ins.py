"""Importing a module with some of its dependencies stood in for, when they cost start-up time for features
the worker never uses (f5-tts's trainer and Whisper path, runpod's CPU probe). The stand-ins live in
`sys.modules` only for the duration of that one import; anything imported later gets the real module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
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
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:  # read during the import itself: the stand-in lacks it
            raise AttributeError(f"the stand-in for {self.__name__} has no attribute {attr!r}", name=attr, obj=self)
        return getattr(importlib.import_module(self.__name__), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        # Declared so that the attributes a stand-in serves can be set on it (type checkers read this).
        super().__setattr__(attr, value)


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


class StandInError(ImportError):
    """An import with stand-ins failed: the message names the module and attribute it needed, and the installed
    versions of the importing package and of the stood-in one (one of them changed the import)."""


def distribution_version(module: str) -> str:
    """`name version` of the installed distribution that provides top-level module `module`."""
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or [top]
    try:
        return f"{names[0]} {importlib.metadata.version(names[0])}"
    except importlib.metadata.PackageNotFoundError:
        return f"{names[0]} (not installed)"


def _explain(name: str, installed: list[str], exc: Exception) -> str:
    """Why importing `name` failed, in terms of the stand-ins (the usual cause) or a missing real module."""
    importer = distribution_version(name)
    module = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    attr = getattr(exc, "name", None) if isinstance(exc, AttributeError) else None
    if isinstance(exc, ImportError) and (found := re.search(r"cannot import name '([^']+)'", str(exc))):
        attr = found.group(1)
    if isinstance(exc, AttributeError) and isinstance(stand_in := getattr(exc, "obj", None), StandIn):
        module = stand_in.__name__
    stood_in = (
        module if module in installed else next((m for m in installed if module and module.startswith(m + ".")), None)
    )
    if stood_in is not None:
        needed = f"{module}.{attr}" if attr else module
        return (
            f"importing {name} ({importer}) with stand-ins failed: it needs {needed}, which the stand-in for "
            f"{stood_in} ({distribution_version(stood_in)}) does not provide. {importer} or "
            f"{distribution_version(stood_in)} changed that import: add it to the stand-ins or drop the stand-in "
            f"({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, ModuleNotFoundError) and module:
        return (
            f"importing {name} ({importer}) failed: it imports {module}, which is not installed "
            f"(is it missing from requirements/worker.in?) ({type(exc).__name__}: {exc})"
        )
    return f"importing {name} ({importer}) failed: {type(exc).__name__}: {exc}"


def import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    """Import `name` while each module of `stand_ins` not imported yet is replaced by its stand-in.

    A module that is already imported is used as it is, and so is `name` itself if it is. A failure raises
    StandInError naming the module and attribute that was missing and the versions involved.
    """
    with _import_lock:
        if (module := sys.modules.get(name)) is not None:
            return module
        installed = [key for key in stand_ins if key not in sys.modules]
        for key in installed:
            sys.modules[key] = stand_ins[key]
        try:
            return importlib.import_module(name)
        except (ImportError, AttributeError) as exc:
            raise StandInError(_explain(name, installed, exc)) from exc
        finally:
            for key in installed:
                if sys.modules.get(key) is stand_ins[key]:
                    del sys.modules[key]
