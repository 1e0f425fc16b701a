"""`lb_devstack`: one load-balancer devstack (RunPod's load balancer emulated in front of one real worker in http
mode, `python -m worker.handler` with `F5TTS_SERVE=http` on the tiny model, local S3), started once per session
however many test modules import it, and stopped when the last one is done.

    from tests.devstack.lb_fixtures import lb_devstack  # noqa: F401
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from devstack.testing import running_stack

_lock = threading.Lock()
_shared: dict[str, object] = {"users": 0}


@pytest.fixture(scope="session")
def lb_devstack() -> Iterator[object]:
    with _lock:
        if _shared["users"] == 0:
            context = running_stack(workers=1, endpoint_type="load_balancer")
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
