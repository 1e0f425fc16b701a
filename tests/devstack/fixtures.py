"""Shared pytest fixtures of the local stack.

Other test areas use them from their conftest.py:

    from tests.devstack.fixtures import devstack  # noqa: F401

`devstack` is one stack with one real worker (`python -m worker.handler` on the tiny random-weight model, local S3,
queue emulator), started once per session however many conftest files import it, and stopped at the end.
`shared_stack(kind, **options)` is the body of such a fixture for any kind of stack (lb_fixtures.py uses it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from devstack.testing import StackHandle, running_stack

_lock = threading.Lock()
_shared: dict[str, dict[str, object]] = {}  # kind of stack → its users, context and handle


def shared_stack(kind: str, **options: object) -> Iterator[StackHandle]:
    """The body of a session fixture: one `running_stack(**options)` per `kind`, started by its first user and
    stopped when its last user is done."""
    # A fixture imported into two conftest files is two fixtures to pytest; sharing one stack between them
    # saves a worker start-up (model load and warm-up) per extra importer.
    with _lock:
        entry = _shared.setdefault(kind, {"users": 0})
        if entry["users"] == 0:
            context = running_stack(**options)
            entry["stack"] = context.__enter__()
            entry["context"] = context
        entry["users"] += 1
    try:
        yield entry["stack"]
    finally:
        with _lock:
            entry["users"] -= 1
            if entry["users"] == 0:
                entry.pop("context").__exit__(None, None, None)
                entry.pop("stack")


@pytest.fixture(scope="session")
def devstack() -> Iterator[StackHandle]:
    yield from shared_stack("queue", workers=1)
