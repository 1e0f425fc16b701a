"""The queue emulator: an ASGI app that is a RunPod serverless endpoint from both sides.

Public API (what clients call), under `/v2/<endpoint_id>/`, `Authorization: Bearer <api key>` (or the bare key):
`POST /run`, `POST /runsync?wait=<ms>`, `GET /status/<id>`, `GET /stream/<id>`, `POST /cancel/<id>`,
`POST /retry/<id>`, `POST /purge-queue`, `GET /health`.

Worker API (what `runpod.serverless.start` calls; wire format read from runpod 1.12's rp_job.py, rp_http.py,
rp_ping.py and rp_scale.py), same prefix, `Authorization: <RUNPOD_AI_API_KEY>`:
- `GET job-take/<worker>?...&job_in_progress=0|1` → one job `{"id", "input"}` or 204 (long poll);
  `GET job-take-batch/<worker>?...&batch_size=N` → a list of jobs or 204;
- `GET job-stop/<worker>?...` → `{"jobsToStop": [ids]}` or 204 (long poll): how cancellation and execution
  timeouts reach the worker, which then cancels just that job's task;
- `POST job-done/<worker>/<job>?...&isStream=true|false` → the result `{"output": ...}` or `{"error": "..."}`,
  JSON text sent with `Content-Type: application/x-www-form-urlencoded` (so the body is read raw, never as a form);
  `isStream=true` means the handler was a generator whose items already went to job-stream;
- `POST job-stream/<worker>/<job>?...` → one stream item `{"output": ...}`;
- `GET ping/<worker>?...&job_id=a,b&runpod_version=...` → heartbeat from runpod's separate ping process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from devstack.jobs import Job, JobQueue

log = logging.getLogger("devstack.emulator")

MB = 1024 * 1024
WORKER_ROUTES = ("job-take", "job-take-batch", "job-stop", "job-done", "job-stream", "ping")


@dataclass
class EmulatorConfig:
    endpoint_id: str = "local"
    api_key: str = field(default_factory=lambda: "local-" + secrets.token_urlsafe(16))
    worker_key: str = field(default_factory=lambda: "worker-" + secrets.token_urlsafe(16))
    run_limit_bytes: int = 10 * MB  # RunPod's payload limit for /run
    runsync_limit_bytes: int = 20 * MB  # ... and for /runsync
    runsync_wait_ms: int = 90_000  # default wait of /runsync; ?wait= may ask for 1 000 - 300 000 ms


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Fault:
    path_suffix: str
    status: int
    remaining: int
    retry_after: float | None


class FaultInjector:
    """Answers the next N public-API requests whose path matches with a given status, unprocessed.

    A suffix matches a path that ends with it, or that continues it with a `/` segment (so `/status` matches
    `/v2/local/status/<id>`). For client retry tests.
    """

    def __init__(self) -> None:
        self._faults: list[_Fault] = []

    def add(self, path_suffix: str, status: int, count: int, retry_after: float | None = None) -> None:
        self._faults.append(_Fault(path_suffix, status, count, retry_after))

    def take(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and (path.endswith(fault.path_suffix) or fault.path_suffix + "/" in path):
                fault.remaining -= 1
                return fault
        return None


def _key_from_header(request: Request) -> str:
    value = request.headers.get("authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


def _require_key(request: Request, expected: str) -> None:
    if not secrets.compare_digest(_key_from_header(request).encode(), expected.encode()):
        raise ApiError(401, "unauthorized: missing or wrong API key")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json_loads(body: bytes) -> Any:
    """Parse JSON as RunPod's API does: no NaN/Infinity, and text that is valid UTF-8 (no unpaired surrogates).

    Python's json module accepts both, and what it accepts could then never be sent on (to a worker's job take,
    or back to a client), leaving the job hanging.
    """
    data = json.loads(body, parse_constant=_reject_constant)
    strict_json_dumps(data)  # an escaped lone surrogate (\ud800) parses, but cannot be encoded as UTF-8
    return data


def strict_json_dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"payload too large: over {limit // MB} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"payload too large: over {limit // MB} MB")
    try:
        return strict_json_loads(bytes(body))
    except ValueError as exc:  # UnicodeError is a ValueError
        raise ApiError(400, f"body is not strict JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ApiError(400, "body nests too deeply") from None


def _job_request(data: Any) -> tuple[Any, dict[str, Any]]:
    if not isinstance(data, dict) or "input" not in data:
        raise ApiError(400, "body must be a JSON object with an 'input' field")
    policy = data.get("policy") or {}
    if not isinstance(policy, dict):
        raise ApiError(400, "policy must be an object")
    for name in ("executionTimeout", "ttl"):
        value = policy.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ApiError(400, f"policy.{name} must be a positive integer (milliseconds)")
    return data["input"], {k: v for k, v in policy.items() if v is not None}


def create_app(queue: JobQueue, config: EmulatorConfig, faults: FaultInjector | None = None) -> FastAPI:
    faults = faults or FaultInjector()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(queue.run_sweeper())
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(title="devstack RunPod emulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.state.faults = faults

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def _gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Unknown endpoint → 404; then, for the public API, injected faults before anything else."""
        parts = request.url.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "v2" or parts[1] != config.endpoint_id:
            return JSONResponse({"error": "not found"}, status_code=404)
        if parts[2] not in WORKER_ROUTES:
            fault = faults.take(request.url.path)
            if fault is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                return JSONResponse(
                    {"error": f"injected fault {fault.status}"}, status_code=fault.status, headers=headers
                )
        return await call_next(request)

    def public(request: Request) -> None:
        _require_key(request, config.api_key)

    def job_or_404(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise ApiError(404, f"job {job_id} not found (unknown, or its results expired)")
        return job

    prefix = "/v2/{endpoint_id}"

    # ------------------------------------------------------------------------------------------- public API
    @app.post(prefix + "/run")
    async def run(request: Request) -> JSONResponse:
        public(request)
        job_input, policy = _job_request(await _read_json(request, config.run_limit_bytes))
        job = queue.submit(job_input, sync=False, policy=policy)
        return JSONResponse({"id": job.id, "status": job.status.value})

    @app.post(prefix + "/runsync")
    async def runsync(request: Request, wait: int | None = None) -> JSONResponse:
        public(request)
        wait_ms = config.runsync_wait_ms if wait is None else wait
        if not 1000 <= wait_ms <= 300_000:
            raise ApiError(400, "wait must be between 1000 and 300000 milliseconds")
        job_input, policy = _job_request(await _read_json(request, config.runsync_limit_bytes))
        job = queue.submit(job_input, sync=True, policy=policy)
        await queue.wait_terminal(job, wait_ms / 1000)
        # A job that outlasts the wait is returned with its id and a non-terminal status, to be polled.
        return JSONResponse(job.view() if job.terminal else {"id": job.id, "status": job.status.value})

    @app.api_route(prefix + "/status/{job_id}", methods=["GET", "POST"])
    async def status(request: Request, job_id: str) -> JSONResponse:
        public(request)
        return JSONResponse(job_or_404(job_id).view())

    @app.api_route(prefix + "/stream/{job_id}", methods=["GET", "POST"])
    async def stream(request: Request, job_id: str) -> JSONResponse:
        public(request)
        job = job_or_404(job_id)
        items = await queue.read_stream(job, queue.options.stream_hold_s)
        body: dict[str, Any] = {"status": job.status.value, "stream": [{"output": item} for item in items]}
        if job.error is not None:
            body["error"] = job.error
        return JSONResponse(body)

    @app.post(prefix + "/cancel/{job_id}")
    async def cancel(request: Request, job_id: str) -> JSONResponse:
        public(request)
        job = job_or_404(job_id)
        queue.cancel(job)
        return JSONResponse({"id": job.id, "status": job.status.value})

    @app.post(prefix + "/retry/{job_id}")
    async def retry(request: Request, job_id: str) -> JSONResponse:
        public(request)
        job = job_or_404(job_id)
        if not queue.retry(job):
            raise ApiError(400, f"job {job_id} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried")
        return JSONResponse({"id": job.id, "status": job.status.value})

    @app.post(prefix + "/purge-queue")
    async def purge_queue(request: Request) -> JSONResponse:
        public(request)
        return JSONResponse({"removed": queue.purge(), "status": "completed"})

    @app.get(prefix + "/health")
    async def health(request: Request) -> JSONResponse:
        public(request)
        return JSONResponse(queue.health())

    # ------------------------------------------------------------------------------------------- worker API
    def worker_auth(request: Request) -> None:
        _require_key(request, config.worker_key)

    @app.get(prefix + "/job-take/{worker_id}")
    async def job_take(request: Request, worker_id: str) -> Response:
        worker_auth(request)
        jobs = await queue.take(worker_id, 1, queue.options.take_hold_s)
        if not jobs:
            return Response(status_code=204)
        return JSONResponse({"id": jobs[0].id, "input": jobs[0].input})

    @app.get(prefix + "/job-take-batch/{worker_id}")
    async def job_take_batch(request: Request, worker_id: str, batch_size: int = 1) -> Response:
        worker_auth(request)
        jobs = await queue.take(worker_id, max(1, batch_size), queue.options.take_hold_s)
        if not jobs:
            return Response(status_code=204)
        return JSONResponse([{"id": job.id, "input": job.input} for job in jobs])

    @app.get(prefix + "/job-stop/{worker_id}")
    async def job_stop(request: Request, worker_id: str) -> Response:
        worker_auth(request)
        ids = await queue.stop_signals(worker_id, queue.options.stop_hold_s)
        if not ids:
            return Response(status_code=204)
        return JSONResponse({"jobsToStop": ids})

    async def worker_body(request: Request) -> Any:
        # The SDK labels JSON text as form-urlencoded: read the raw body, never as a form.
        try:
            return strict_json_loads(await request.body())
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"body is not strict JSON: {str(exc)[:200]}") from None

    @app.post(prefix + "/job-done/{worker_id}/{job_id}")
    async def job_done(request: Request, worker_id: str, job_id: str) -> JSONResponse:
        worker_auth(request)
        try:
            body = await worker_body(request)
        except ApiError as exc:
            # A result that could never be served (NaN, broken text) fails the job rather than leave it running.
            body = {"error": f"the worker sent a result that is not strict JSON ({exc.message})"}
        accepted = queue.complete(worker_id, job_id, body)
        return JSONResponse({"accepted": accepted})

    @app.post(prefix + "/job-stream/{worker_id}/{job_id}")
    async def job_stream(request: Request, worker_id: str, job_id: str) -> JSONResponse:
        worker_auth(request)
        accepted = queue.add_stream(worker_id, job_id, await worker_body(request))
        return JSONResponse({"accepted": accepted})

    @app.get(prefix + "/ping/{worker_id}")
    async def ping(request: Request, worker_id: str, job_id: str | None = None) -> JSONResponse:
        worker_auth(request)
        queue.ping(worker_id, job_id)
        return JSONResponse({})

    return app


def worker_urls(base_url: str, endpoint_id: str) -> dict[str, str]:
    """The RUNPOD_WEBHOOK_* templates as RunPod sets them. The SDK puts the worker id in for `$ID` in the job-take
    URL (rp_job.py) and for `$RUNPOD_POD_ID` in the others, where `$ID` is the job id (rp_http.py, rp_ping.py);
    it appends `&...` parameters, which is why each template already carries a query string."""
    root = f"{base_url}/v2/{endpoint_id}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{root}/job-take/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{root}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{root}/job-stream/$RUNPOD_POD_ID/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_PING": f"{root}/ping/$RUNPOD_POD_ID?gpu=cpu",
    }
