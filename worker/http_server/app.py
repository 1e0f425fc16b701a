"""The app: the routers of each API on one `WorkerService`, the state they share, the checks every request
passes (the optional key, the body cap), the health check, and the server that runs it all."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from worker.config import Settings
from worker.http_server import elevenlabs, elevenlabs_realtime, native, openai
from worker.http_server.body_limit import BodyLimitMiddleware
from worker.http_server.errors import (
    ErrorEnvelope,
    HttpError,
    elevenlabs_error,
    envelope_for,
    install_error_handlers,
    openai_error,
)
from worker.http_server.send_timeout import SendTimeoutMiddleware
from worker.http_server.slots import SynthesisSlots
from worker.http_server.state import HttpState, http_state
from worker.http_wire import bounded_server_options
from worker.schema import ErrorBody, ErrorCode
from worker.service import WorkerService

log = logging.getLogger("worker.http")

# Each API's error envelope, by the path prefix of its routes (the longest prefix that matches wins).
ERROR_ENVELOPES: dict[str, ErrorEnvelope] = {"/": openai_error, elevenlabs.PREFIX: elevenlabs_error}


def create_app(service: WorkerService, settings: Settings, *, start_service: bool = True) -> FastAPI:
    """The API on `service`. With `start_service`, the model loads in the background while /ping says 204."""
    state = HttpState(
        service=service,
        settings=settings,
        slots=SynthesisSlots(service.concurrency, settings.worker.busy_wait_s),
        loading=start_service and service.engine is None and service.startup_error is None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(state)) if state.loading else None
        yield
        if task is not None and not task.done():
            task.cancel()

    app = FastAPI(
        title="F5-TTS worker (http mode)",
        description="OpenAI- and ElevenLabs-compatible speech APIs and the native job contract of the F5-TTS "
        "RunPod worker.",
        lifespan=lifespan,
        # No redirects (`/v1/audio/speech/` is a 404): a redirect names this server's own address, which behind
        # the load balancer is the worker's, with no key in front of it.
        redirect_slashes=False,
    )
    app.state.http = state
    install_error_handlers(app, ERROR_ENVELOPES, log)
    # Outermost last: the send timeout around everything, then the key check, then the body cap.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.worker.max_request_bytes)
    app.middleware("http")(_guard(settings))
    app.add_middleware(SendTimeoutMiddleware, timeout_s=settings.worker.send_timeout_s)
    app.add_api_route(
        settings.http.health_check_path, ping, methods=["GET"], summary="Health check (RunPod's load balancer polls it)"
    )
    app.include_router(openai.router)
    app.include_router(native.router)
    app.include_router(elevenlabs.router, prefix=elevenlabs.PREFIX)
    app.include_router(elevenlabs_realtime.router, prefix=elevenlabs.PREFIX)
    return app


async def _load(state: HttpState) -> None:
    try:
        await asyncio.to_thread(state.service.start)  # keeps its failure in service.startup_error
        # As many slots as the loaded engine's device batches (requests during the load are refused anyway).
        state.slots = SynthesisSlots(state.service.concurrency, state.settings.worker.busy_wait_s)
    finally:
        state.loading = False


def _guard(settings: Settings) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Outside RunPod the optional key is checked (the health check stays open).

    The key comes as `Authorization: Bearer <key>` (OpenAI's clients, RunPod's convention) or as
    `xi-api-key: <key>` (ElevenLabs' clients)."""
    api_key = settings.worker.api_key.get_secret_value() if settings.worker.api_key else None
    health_path = settings.http.health_check_path

    def key_matches(request: Request, key: str) -> bool:
        bearer = request.headers.get("authorization", "")
        xi_key = request.headers.get("xi-api-key", "")
        # Both compared, always: the time taken says nothing about which header came close.
        by_bearer = hmac.compare_digest(bearer.encode(), f"Bearer {key}".encode())
        by_xi_key = hmac.compare_digest(xi_key.encode(), key.encode())
        return by_bearer or by_xi_key

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if api_key is not None and request.url.path != health_path and not key_matches(request, api_key):
            message = "invalid or missing API key (Authorization: Bearer <key>, or xi-api-key: <key>)"
            return envelope_for(request)(HttpError(401, "invalid_api_key", message))
        return await call_next(request)

    return guard


async def ping(request: Request) -> Response:
    """204 while the model loads, 200 when ready, 503 with the reason when it failed to load."""
    state = http_state(request)
    if state.loading:
        return Response(status_code=204)
    if state.service.engine is None:
        reason = state.service.startup_error or "model is not loaded"
        return openai_error(HttpError.of(ErrorBody(code=ErrorCode.model_unavailable, message=reason)))
    return JSONResponse({"status": "ready"})


# ------------------------------------------------------------------------------------------------ serving
async def serve(service: WorkerService, settings: Settings) -> None:
    """uvicorn on PORT (and the health check alone on PORT_HEALTH when that differs), until SIGTERM/SIGINT."""
    import uvicorn

    app = create_app(service, settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn installs one signal handler per server, the last one wins: stop them all together.
            for server in servers:
                uvicorn.Server.handle_exit(server, sig, frame)

    host = settings.worker.bind_host
    options = {"host": host, "access_log": False, **bounded_server_options()}
    servers: list[uvicorn.Server] = [Server(uvicorn.Config(app, port=settings.http.port, **options))]
    health_port = settings.http.port_health
    if health_port is not None and health_port != settings.http.port:
        # The health port shares the main app's state (the loading flag, the service): the same `ping`, bound to it.
        health_app = FastAPI(openapi_url=None)
        health_app.state.http = app.state.http
        health_app.add_api_route(settings.http.health_check_path, ping, methods=["GET"])
        servers.append(uvicorn.Server(uvicorn.Config(health_app, port=health_port, lifespan="off", **options)))
    log.info(
        "http mode: serving on port %d (health %s on port %d)",
        settings.http.port,
        settings.http.health_check_path,
        health_port or settings.http.port,
    )
    await asyncio.gather(*(server.serve() for server in servers))
