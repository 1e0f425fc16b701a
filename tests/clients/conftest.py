"""Fixtures of the client SDK tests: both client flavours (`flavour` is "sync" or "async"), over a scripted fake
API (`make_client`) or over the devstack's real worker loop (`stack_client`); see helpers.py for driving either
flavour from one async test body."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from f5tts_client import AsyncClient, Client, cli

from devstack.testing import StackHandle
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


@pytest.fixture
def run_cli(
    fake: FakeRunPod, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """`run_cli(*argv)` -> (exit code, stdout, stderr), the `f5tts` command line talking to `fake`."""
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("F5TTS_ENDPOINT_URL", ENDPOINT_URL)

    def factory(**options: Any) -> Client:
        return Client(http_client=httpx.Client(transport=httpx.MockTransport(fake)), **{**options, **FAST})

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv), client_factory=factory)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@dataclass
class StackClient:
    """A client of the devstack, and the (method, route) of every request it sent."""

    client: Client | AsyncClient
    sent: list[tuple[str, str]] = field(default_factory=list)

    def count(self, method: str, route: str) -> int:
        return sum(1 for m, path in self.sent if m == method and (path.endswith(route) or route + "/" in path))


@pytest.fixture
async def stack_client(devstack: StackHandle, flavour: str) -> AsyncIterator[Callable[..., StackClient]]:
    """`stack_client(**options)`: a Client or AsyncClient (per `flavour`) of the shared devstack."""
    opened: list[httpx.Client | httpx.AsyncClient] = []

    def make(api_key: str | None = None, **options: Any) -> StackClient:
        made = StackClient(client=None)  # type: ignore[arg-type]
        options = {
            "api_key": api_key or devstack.api_key,
            "endpoint_url": devstack.endpoint_url,
            "timeout": 120,
            **options,
        }

        def record(request: httpx.Request) -> None:
            made.sent.append((request.method, request.url.path))

        async def record_async(request: httpx.Request) -> None:
            record(request)

        if flavour == "sync":
            sync_http = httpx.Client(event_hooks={"request": [record]})
            made.client = Client(http_client=sync_http, **options)
            opened.append(sync_http)
        else:
            async_http = httpx.AsyncClient(event_hooks={"request": [record_async]})
            made.client = AsyncClient(http_client=async_http, **options)
            opened.append(async_http)
        return made

    yield make
    for http in opened:
        if isinstance(http, httpx.AsyncClient):
            await http.aclose()
        else:
            http.close()
