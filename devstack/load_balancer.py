"""A local emulator of RunPod's load-balancing endpoints, in front of N workers in `http` serving mode.

What it does, as RunPod documents it (serverless/load-balancing):
- every request needs `Authorization: Bearer <api key>`; otherwise 401;
- each worker's health check (`HEALTH_CHECK_PATH`, default `/ping`, on `PORT_HEALTH`) is polled: 200 is healthy,
  204 initialising, anything else (or no answer) unhealthy; requests go only to healthy workers, the least
  busy first;
- with no healthy worker, a request waits (RunPod: up to 2 min) and then gets `{"error": "no workers available"}`
  (status 503 here; RunPod's docs give the body, not the status);
- request and response bodies are capped at 30 MB (a chunked request body is counted as it arrives), and a
  request may run 5.5 min; request heads are bounded (431), as any proxy's are;
- the path is forwarded as received (percent-encoding kept), or refused with 400 when it cannot be (WebSocket
  handshakes alike);
- responses are streamed through as the worker sends them (an httpx streaming proxy); nothing is retried;
- WebSockets pass through to the worker (RunPod's load-balancing endpoints carry them): the same key check and
  routing at the handshake (a refusal is an HTTP answer, as for a request), then every message both ways, and
  each side's close code and reason passed on to the other.

`LoadBalancerStack` runs it with local S3 and the workers (`python -m worker.handler` with `F5TTS_SERVE=http`);
`python -m devstack up --endpoint-type load_balancer` and `running_stack(endpoint_type="load_balancer")` use it.
Its `base_url` stands for `https://<ENDPOINT_ID>.api.runpod.ai`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import websockets
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from devstack.local_stack import LocalStack
from devstack.model import ModelChoice, ModelMode
from devstack.s3 import LocalS3
from devstack.serving import LoopbackServer
from devstack.workers import WorkerProcess, stack_worker_env
from worker.http_wire import bounded_server_options

log = logging.getLogger("devstack.lb")

MB = 1024 * 1024
# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own; `host` names the worker, not the endpoint.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_WORKER_SERVER_HEADERS = {"date", "server"}  # this server sets its own
# A WebSocket handshake's own headers: the proxy makes its own handshake with the worker.
_WEBSOCKET_HEADERS = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}
# Close codes that never travel in a close frame (RFC 6455 §7.4.1): what the other side is told instead.
_UNSENDABLE_CLOSE_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
HEALTHY, INITIALIZING, UNHEALTHY = "healthy", "initializing", "unhealthy"


@dataclass
class LoadBalancerConfig:
    endpoint_id: str = "local"
    api_key: str = field(default_factory=lambda: "local-" + secrets.token_urlsafe(16))
    no_worker_timeout_s: float = 120.0  # RunPod: "Request timeout 2 min (no worker available)"
    processing_timeout_s: float = 330.0  # RunPod: 5.5 min per request
    payload_limit_bytes: int = 30 * MB
    health_interval_s: float = 0.25


@dataclass
class Backend:
    """One worker as the load balancer sees it."""

    worker_id: str
    url: str  # http://127.0.0.1:<PORT>
    health_url: str  # http://127.0.0.1:<PORT_HEALTH><HEALTH_CHECK_PATH>
    state: str = INITIALIZING
    in_flight: int = 0
    served: int = 0
    answered: bool = False  # the health check has answered at least once
    last_picked: float = 0.0
    last_status: int | None = None  # of the last health check; None: no answer (refused, timed out)


class LoadBalancer:
    """The routing state and the ASGI app. Runs on one event loop; `backends` may be added while it runs."""

    def __init__(self, config: LoadBalancerConfig | None = None) -> None:
        self.config = config or LoadBalancerConfig()
        self.backends: dict[str, Backend] = {}
        self._changed = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}", self._proxy, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                ),
                WebSocketRoute("/{path:path}", self._proxy_websocket),
            ],
            lifespan=self._lifespan,
        )

    def add(self, backend: Backend) -> None:
        self.backends[backend.worker_id] = backend

    def remove(self, worker_id: str) -> None:
        self.backends.pop(worker_id, None)

    def states(self) -> dict[str, str]:
        return {b.worker_id: b.state for b in self.backends.values()}

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.processing_timeout_s, connect=5.0), limits=limits
        )
        poller = asyncio.create_task(self._poll_health())
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await self._http.aclose()

    async def _poll_health(self) -> None:
        assert self._http is not None
        while True:
            for backend in list(self.backends.values()):
                try:
                    answer = await self._http.get(backend.health_url, timeout=2.0)
                    state = {200: HEALTHY, 204: INITIALIZING}.get(answer.status_code, UNHEALTHY)
                    backend.answered, backend.last_status = True, answer.status_code
                except httpx.HTTPError:
                    backend.last_status = None
                    # A container still starting has no server yet: initialising until it first answers.
                    state = UNHEALTHY if backend.answered else INITIALIZING
                if state != backend.state:
                    log.info("worker %s is %s", backend.worker_id, state)
                    backend.state = state
                    self._changed.set()
            await asyncio.sleep(self.config.health_interval_s)

    async def _pick(self) -> Backend | None:
        """The least busy healthy worker (round robin among equals); waits for one up to `no_worker_timeout_s`."""
        deadline = time.monotonic() + self.config.no_worker_timeout_s
        while True:
            healthy = [b for b in self.backends.values() if b.state == HEALTHY]
            if healthy:
                chosen = min(healthy, key=lambda b: (b.in_flight, b.last_picked))  # least busy, then round robin
                chosen.last_picked = time.monotonic()
                return chosen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))

    def _unauthorized(self, headers: Mapping[str, str]) -> Response | None:
        """401 unless the endpoint's key came as `Authorization: Bearer <key>` (requests and WebSockets alike)."""
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.config.api_key}".encode()):
            return JSONResponse({"error": "unauthorized: missing or invalid API key"}, status_code=401)
        return None

    async def _proxy(self, request: Request) -> Response:
        if (refusal := self._unauthorized(request.headers)) is not None:
            return refusal
        too_large = JSONResponse(
            {"error": f"request payload too large ({self.config.payload_limit_bytes // MB} MB limit)"}, status_code=413
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.config.payload_limit_bytes:
            return too_large
        target = _forwarded_target(request)
        if target is None:
            return _unforwardable()
        # Requests are small (≤ the limit); responses are what streams. A chunked body announces no length: its
        # bytes are counted as they arrive, and reading stops at the limit.
        body = bytearray()
        async for data in request.stream():
            body += data
            if len(body) > self.config.payload_limit_bytes:
                return too_large
        backend = await self._pick()
        if backend is None:
            return JSONResponse({"error": "no workers available"}, status_code=503)
        assert self._http is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS | {"authorization"}]
        upstream_request = self._http.build_request(request.method, backend.url, headers=headers, content=bytes(body))
        upstream_request.url = upstream_request.url.copy_with(raw_path=target)
        backend.in_flight += 1
        backend.served += 1
        try:
            upstream = await self._http.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            backend.in_flight -= 1
            log.warning("worker %s did not answer: %s", backend.worker_id, exc)
            return JSONResponse({"error": f"worker {backend.worker_id} did not answer"}, status_code=502)

        async def done() -> None:
            backend.in_flight -= 1
            await upstream.aclose()

        dropped = _HOP_HEADERS | _WORKER_SERVER_HEADERS
        response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=response_headers,
            background=BackgroundTask(done),
        )

    async def _proxy_websocket(self, websocket: WebSocket) -> None:
        """The handshake is checked and routed as a request is; once the worker accepts, messages flow both ways
        until either side closes, and its close code and reason reach the other side."""
        if (refusal := self._unauthorized(websocket.headers)) is not None:
            await websocket.send_denial_response(refusal)
            return
        target = _forwarded_target(websocket)
        if target is None:
            await websocket.send_denial_response(_unforwardable())
            return
        backend = await self._pick()
        if backend is None:
            await websocket.send_denial_response(JSONResponse({"error": "no workers available"}, status_code=503))
            return
        skipped = _HOP_HEADERS | _WEBSOCKET_HEADERS | {"authorization"}
        headers = [(k, v) for k, v in websocket.headers.items() if k.lower() not in skipped]
        url = "ws" + backend.url.removeprefix("http") + target.decode("ascii")  # an ASCII URL, as checked
        backend.in_flight += 1
        backend.served += 1
        try:
            try:
                upstream = await websockets.connect(
                    url,
                    additional_headers=headers,
                    subprotocols=websocket.scope.get("subprotocols") or None,
                    max_size=self.config.payload_limit_bytes,
                    compression=None,
                    proxy=None,
                    open_timeout=5.0,
                )
            except websockets.InvalidStatus as exc:  # the worker refused the handshake: its answer goes back
                answer = exc.response
                dropped = _HOP_HEADERS | _WORKER_SERVER_HEADERS
                await websocket.send_denial_response(
                    Response(
                        answer.body or b"",
                        status_code=answer.status_code,
                        headers={k: v for k, v in answer.headers.raw_items() if k.lower() not in dropped},
                    )
                )
                return
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                log.warning("worker %s did not answer the WebSocket handshake: %s", backend.worker_id, exc)
                error = {"error": f"worker {backend.worker_id} did not answer"}
                await websocket.send_denial_response(JSONResponse(error, status_code=502))
                return
            async with upstream:
                await websocket.accept(subprotocol=upstream.subprotocol)
                await _relay(websocket, upstream)
        finally:
            backend.in_flight -= 1


async def _relay(client: WebSocket, upstream: websockets.ClientConnection) -> None:
    """Messages both ways until one side closes; the other side is then closed with its code and reason. The
    session ends with the worker's side: a client that leaves closes it, and its close ends the worker's."""

    async def client_to_worker() -> None:
        try:
            while True:
                message = await client.receive()
                if message["type"] == "websocket.disconnect":
                    code: int = message.get("code") or 1000
                    await upstream.close(_UNSENDABLE_CLOSE_CODES.get(code, code), message.get("reason") or "")
                    return
                await upstream.send(message["text"] if message.get("text") is not None else message.get("bytes", b""))
        except websockets.ConnectionClosed:
            return  # the worker closed: worker_to_client passes its close on

    forward = asyncio.create_task(client_to_worker())
    try:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await client.send_text(data)
                else:
                    await client.send_bytes(data)
        code = upstream.close_code or 1006
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client may be gone already
            await client.close(_UNSENDABLE_CLOSE_CODES.get(code, code), upstream.close_reason or "")
    finally:
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)


def _unforwardable() -> Response:
    """The answer to a request or handshake whose path would reach the worker rewritten (`_forwarded_target`)."""
    return JSONResponse({"error": "the request path cannot be forwarded as received"}, status_code=400)


def _forwarded_target(request: HTTPConnection) -> bytes | None:
    """The path and query of a request or WebSocket handshake exactly as received (still percent-encoded: `%2f` is
    not a `/` to the worker), or None when the client that forwards it would rewrite it (dot segments, bytes a URL
    cannot carry)."""
    received = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    target = received + (b"?" + query if query else b"")
    try:
        forwarded = httpx.URL("http://worker").copy_with(raw_path=target).raw_path
    except (httpx.InvalidURL, UnicodeDecodeError):
        return None
    return target if forwarded == target else None


# ------------------------------------------------------------------------------------------------ the stack
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoadBalancerStack(LocalStack):
    """Local S3 + the load-balancer emulator + N workers in http mode. Use as a context manager."""

    run_dir_prefix = "devstack-lb-"

    def __init__(
        self,
        workers: int = 1,
        *,
        port: int = 0,
        model: ModelMode | ModelChoice | None = "auto",
        api_key: str | None = None,
        worker_cmd: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
        ready_timeout_s: float = 240.0,
        stop_grace_s: float = 5.0,
        echo_logs: IO[str] | None = None,
        config: LoadBalancerConfig | None = None,
    ) -> None:
        super().__init__(
            workers,
            server=LoopbackServer(port, what="load-balancer emulator", thread_name="devstack-lb"),
            s3=LocalS3(),
            worker_cmd=worker_cmd,
            worker_env=worker_env,
            model=model,
            ready_timeout_s=ready_timeout_s,
            stop_grace_s=stop_grace_s,
            echo_logs=echo_logs,
        )
        self.config = config or LoadBalancerConfig()
        if api_key is not None:
            self.config.api_key = api_key
        self.balancer: LoadBalancer | None = None
        self._workers: list[WorkerProcess] = []

    endpoint_type = "load_balancer"

    @property
    def endpoint_url(self) -> str:
        """The base URL: it stands for `https://<ENDPOINT_ID>.api.runpod.ai`."""
        return self.base_url

    @property
    def workers(self) -> dict[str, int]:
        return {w.worker_id: w.pid for w in self._workers if w.exit_code() is None}

    def worker_states(self) -> dict[str, str]:
        """Worker id → healthy / initializing / unhealthy, as the load balancer last saw it."""
        return self._call(self._running_balancer().states)

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {w.worker_id}\n{w.log_tail(lines)}" for w in self._workers)

    def _running_balancer(self) -> LoadBalancer:
        if self.balancer is None:
            raise RuntimeError("the load-balancer emulator is not running")
        return self.balancer

    def _call(self, fn: Any) -> Any:
        return self._server.call(fn)

    def _start_server(self) -> None:
        def make_app() -> Any:
            self.balancer = LoadBalancer(self.config)  # on the server's loop: its asyncio.Event belongs there
            return self.balancer.app

        self._server.start(make_app, **bounded_server_options())
        log.info("load-balancer emulator at %s", self.base_url)

    def add_worker(self, extra_env: dict[str, str] | None = None) -> str:
        """Start one more worker (as RunPod scales up); it gets requests once its health check says 200."""
        return self._spawn(len(self._workers) + 1, extra_env)

    def _spawn(self, slot: int, extra_env: dict[str, str] | None = None) -> str:
        worker_id = f"local-lb-worker-{slot}"
        assert self._run_dir is not None
        workdir = self._run_dir / worker_id
        port, health_port = _free_port(), _free_port()
        env = stack_worker_env(workdir, self.worker_count, self.s3, self.model)
        # What a RunPod load-balancing endpoint sets (the infra program does the same), on loopback here.
        env.update(
            {
                "F5TTS_SERVE": "http",
                "PORT": str(port),
                "PORT_HEALTH": str(health_port),
                "F5TTS_BIND_HOST": "127.0.0.1",
                "RUNPOD_ENDPOINT_ID": self.config.endpoint_id,
                "RUNPOD_POD_ID": worker_id,
            }
        )
        env.update(self.extra_worker_env)
        env.update(extra_env or {})
        worker = WorkerProcess(worker_id, self.worker_cmd, env, workdir, echo=self.echo_logs)
        worker.start()
        self._workers.append(worker)
        path = env.get("HEALTH_CHECK_PATH", "/ping")
        backend = Backend(worker_id, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health_port}{path}")
        self._call(lambda: self._running_balancer().add(backend))
        return worker_id

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            for worker in self._workers:
                if worker.exit_code() is not None:
                    raise RuntimeError(
                        f"worker {worker.worker_id} exited with {worker.exit_code()}:\n{worker.log_tail()}"
                    )
            # Ready once every worker is healthy or has said it is not (an error status: a model that failed to
            # load keeps it out of the routing pool, as on RunPod; tests of that case need the stack up). A health
            # check that went unanswered (a worker busy loading its model) is waited out.
            settled = self._call(
                lambda: {
                    b.worker_id: b.state == HEALTHY or (b.last_status or 204) != 204
                    for b in self._running_balancer().backends.values()
                }
            )
            if settled and all(settled.values()):
                states = self.worker_states()
                if not any(state == HEALTHY for state in states.values()):
                    log.warning("no worker is healthy: %s", states)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers not healthy after {self.ready_timeout_s:.0f} s ({self.worker_states()}):\n{self.log_tails()}"
                )
            time.sleep(0.1)

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.stop(self.stop_grace_s)
