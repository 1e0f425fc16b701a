"""`lb_devstack`: one load-balancer devstack (RunPod's load balancer emulated in front of one real worker in http
mode, `python -m worker.handler` with `F5TTS_SERVE=http` on the tiny model, local S3), started once per session
and stopped when the last user is done. Registered for every test folder by tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.devstack.fixtures import shared_stack


@pytest.fixture(scope="session")
def lb_devstack() -> Iterator[object]:
    yield from shared_stack("load_balancer", workers=1, endpoint_type="load_balancer")
