"""Shared pytest fixtures of the local stack.

tests/conftest.py registers this module for every test folder (`pytest_plugins`): a test asks for `devstack` by
name and imports nothing. `devstack` is one stack with one real worker (`python -m worker.handler` on the tiny
random-weight model, local S3, queue emulator), started once per session, and stopped at the end.
`shared_stack(kind, **options)` is the body of such a fixture for any kind of stack (lb_fixtures.py uses it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.testing import StackHandle, running_stack


@dataclass
class _SharedStack:
    """One kind of stack: how many fixtures use it, and, while any does, the running stack."""

    users: int = 0
    context: AbstractContextManager[StackHandle] | None = None
    stack: StackHandle | None = None


_lock = threading.Lock()
_shared: dict[str, _SharedStack] = {}  # by kind of stack


def shared_stack(kind: str, **options: Any) -> Iterator[StackHandle]:
    """The body of a session fixture: one `running_stack(**options)` per `kind`, started by its first user and
    stopped when its last user is done."""
    # A fixture also imported into a test module is a second fixture to pytest; sharing one stack between them
    # saves a worker start-up (model load and warm-up) per extra importer.
    with _lock:
        entry = _shared.setdefault(kind, _SharedStack())
        if entry.users == 0:
            entry.context = running_stack(**options)
            entry.stack = entry.context.__enter__()
        entry.users += 1
        stack = entry.stack
    assert stack is not None
    try:
        yield stack
    finally:
        with _lock:
            entry.users -= 1
            if entry.users == 0 and entry.context is not None:
                context, entry.context, entry.stack = entry.context, None, None
                context.__exit__(None, None, None)


@pytest.fixture(scope="session")
def devstack() -> Iterator[StackHandle]:
    yield from shared_stack("queue", workers=1)
