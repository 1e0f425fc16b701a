"""Shared pytest fixtures of the local stack.

Other test areas use them from their conftest.py:

    from tests.devstack.fixtures import devstack  # noqa: F401

`devstack` is one stack with one real worker (`python -m worker.handler` on the tiny random-weight model, local S3,
queue emulator), started once per session however many conftest files import it, and stopped at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from devstack.testing import StackHandle, running_stack

_lock = threading.Lock()
_shared: dict[str, object] = {"users": 0}


@pytest.fixture(scope="session")
def devstack() -> Iterator[StackHandle]:
    # A fixture imported into two conftest files is two fixtures to pytest; sharing one stack between them
    # saves a worker start-up (model load and warm-up) per extra importer.
    with _lock:
        if _shared["users"] == 0:
            context = running_stack(workers=1)
            _shared["stack"] = context.__enter__()
            _shared["context"] = context
        _shared["users"] += 1
    try:
        yield _shared["stack"]
    finally:
        with _lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared.pop("context").__exit__(None, None, None)
                _shared.pop("stack")
