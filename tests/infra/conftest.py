"""Fixtures for the infrastructure tests: Pulumi under mocks, B2 on b2sdk's RawSimulator, RunPod's REST API v2 on a
local fake that validates every request and response against RunPod's schema."""

from __future__ import annotations

import sys

from tests.support import REPO_ROOT

# The Pulumi program directory is the import root of `f5tts_infra`, exactly as for `pulumi up`.
_INFRA = str(REPO_ROOT / "infra")
if _INFRA not in sys.path:
    sys.path.insert(0, _INFRA)

import asyncio
import json
from typing import Any

import pulumi
import pytest
from b2sdk.v2 import B2Api
from f5tts_infra.b2_bucket import B2BucketProvider, B2KeyProvider

from tests.infra.fake_runpod_rest import FakeRunpodAccount, FakeRunpodServer
from tests.infra.helpers import BASE_CONFIG, PROJECT, SECRET_KEYS, RecordingMocks, SimulatedB2, configure


@pytest.fixture
def pulumi_stack():
    """Returns start(config, stack=...) -> RecordingMocks; installs mocks and the stack config."""
    # Pulumi's test runtime schedules on the thread's current event loop; give each test a fresh one (other
    # suites' asyncio.run() calls leave none behind).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def start(config: dict[str, Any] | None = None, stack: str = "dev") -> RecordingMocks:
        mocks = RecordingMocks()
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
        merged = {**BASE_CONFIG, **(config or {})}
        values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items() if v is not None}
        pulumi.runtime.set_all_config(values, [k for k in SECRET_KEYS if k in values])
        return mocks

    try:
        yield start
    finally:
        pulumi.runtime.set_all_config({}, [])
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture
def b2() -> SimulatedB2:
    return SimulatedB2()


@pytest.fixture
def b2_providers(b2: SimulatedB2):
    """Bucket and key providers wired to the simulator and configured with the account's master key."""

    class SimBucketProvider(B2BucketProvider):
        def _new_api(self) -> B2Api:
            return b2.api_for_key(None, None)

    class SimKeyProvider(B2KeyProvider):
        def _new_api(self) -> B2Api:
            return b2.api_for_key(None, None)

    config = b2.provider_config()
    return configure(SimBucketProvider(), config), configure(SimKeyProvider(), config)


# --- RunPod on a local fake -------------------------------------------------------------------------------------
@pytest.fixture
def runpod_api(monkeypatch: pytest.MonkeyPatch):
    """A fake RunPod REST v2 API on 127.0.0.1; the providers reach it through RUNPOD_API_BASE_URL.

    After the test: no request the providers sent may have broken the schema (unless the test cleared
    `account.requests` of the ones it sent on purpose), and no response of the fake may have either.
    """
    account = FakeRunpodAccount(api_key=BASE_CONFIG["runpod:token"])
    server = FakeRunpodServer(account).start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", server.base_url)
    try:
        yield account
    finally:
        server.stop()
    assert account.response_problems == [], "the fake answered outside RunPod's schema"
    assert account.request_problems == [], "a request broke RunPod's schema"
