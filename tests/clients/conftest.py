"""Fixtures of the client SDK tests: both client flavours (`flavour` is "sync" or "async") over a scripted fake
API; see helpers.py for driving either from one async test body."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from f5tts_client import AsyncClient, Client

from tests.clients.fake_runpod import API_KEY, ENDPOINT_URL, FakeRunPod
from tests.clients.helpers import FAST


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fake() -> FakeRunPod:
    return FakeRunPod()


@pytest.fixture
def make_client(fake: FakeRunPod, flavour: str) -> Iterator[Callable[..., Any]]:
    """`make_client(**options)`: a Client or AsyncClient (per `flavour`) talking to `fake`."""

    def make(**options: Any) -> Client | AsyncClient:
        options = {"api_key": API_KEY, "endpoint_url": ENDPOINT_URL, **FAST, **options}
        if flavour == "sync":
            return Client(http_client=httpx.Client(transport=httpx.MockTransport(fake)), **options)
        return AsyncClient(http_client=httpx.AsyncClient(transport=httpx.MockTransport(fake)), **options)

    yield make

