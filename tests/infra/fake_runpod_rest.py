"""A local stand-in for RunPod's REST API v2 on 127.0.0.1, strict about RunPod's published schema.

Every request is matched to an operation of the committed OpenAPI extract (`infra/runpod_schema/`) and its path,
query and body are validated against it; every response the fake sends is validated too. Problems are recorded
(`FakeRunpodAccount.request_problems`, `.response_problems`) and the conftest fixture fails a test that leaves any
it did not expect. On top of the schema, the account applies the rules RunPod's reference describes in words:
Bearer auth, RFC 9457 problem bodies, known GPU pools, min <= max workers, CUDA set xor floor, no idle timeout for
a queue endpoint scaling on request count, unique registry names, templates bound to an endpoint undeletable and
deleted with it. Tests inject faults (429/503 with Retry-After, a create whose answer arrives too late).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.infra.runpod_openapi import find_operation, validate_request, validate_response

# Serverless GPU pool ids of `GET /v2/catalog/gpus` (`pool`).
GPU_POOLS = frozenset(
    {
        "AMPERE_16",
        "AMPERE_24",
        "ADA_24",
        "AMPERE_48",
        "ADA_48_PRO",
        "AMPERE_80",
        "ADA_80_PRO",
        "ADA_32_PRO",
        "HOPPER_141",
        "BLACKWELL_96",
        "BLACKWELL_180",
    }
)
PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


@dataclass
class RecordedRequest:
    method: str
    path: str
    operation: str | None
    body: Any
    authorization: str | None
    status: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Fault:
    operation: str
    status: int | None  # None: apply the request, then answer only after `delay_s` (the client has given up)
    retry_after: int | None = None
    delay_s: float = 0.0
    times: int = 1


class FakeRunpodAccount:
    """The account's endpoints, registries and templates, and the rules RunPod applies to them."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.registries: dict[str, dict[str, Any]] = {}  # id -> {name, username, password}
        self.templates: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.response_problems: list[str] = []
        self.faults: list[Fault] = []
        self._ids = (f"{n:08x}" for n in itertools.count(0x1A2B3C00))
        self._lock = threading.Lock()

    # --- test controls --------------------------------------------------------------------------------------------
    def inject(self, operation: str, status: int | None = None, **kwargs: Any) -> None:
        self.faults.append(Fault(operation, status, **kwargs))

    def seed_template_endpoint(self, endpoint: dict[str, Any], template: dict[str, Any]) -> tuple[str, str]:
        """An endpoint made before v2: bound to a template that carries its image and env."""
        template_id = "t" + next(self._ids)
        endpoint_id = "e" + next(self._ids)
        self.templates[template_id] = template
        self.endpoints[endpoint_id] = {**endpoint, "id": endpoint_id, "boundTemplate": template_id}
        return endpoint_id, template_id

    def operations(self, since: int = 0) -> list[str]:
        return [f"{r.method} {r.operation}" for r in self.requests[since:]]

    @property
    def request_problems(self) -> list[str]:
        return [f"{r.method} {r.path}: {p}" for r in self.requests for p in r.problems]

    # --- one HTTP request -----------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, authorization: str | None, raw: bytes) -> tuple[int, dict, Any, float]:
        """-> (status, headers, body, delay before answering)."""
        url = urlsplit(target)
        operation = find_operation(method, url.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        record = RecordedRequest(method, url.path, operation.operation_id if operation else None, body, authorization)
        with self._lock:
            self.requests.append(record)
            status, headers, payload, delay = self._answer(record, operation, parse_qs(url.query), body)
            record.status = status
            if operation is not None:
                content_type = headers.get("Content-Type")
                problems = validate_response(operation, status, content_type, payload)
                self.response_problems += [f"{method} {url.path} -> {status}: {p}" for p in problems]
        return status, headers, payload, delay

    def _answer(self, record: RecordedRequest, operation: Any, query: dict, body: Any) -> tuple[int, dict, Any, float]:
        if operation is None:
            record.problems.append("no such operation in RunPod's schema")
            return _problem(Problem(404, f"no route for {record.method} {record.path}"))
        if record.authorization != f"Bearer {self.api_key}":
            return _problem(Problem(401, "missing or invalid bearer token"))
        problems = validate_request(operation, query, body)
        if problems:
            record.problems += problems
            return _problem(Problem(400, "request does not match the API schema", problems))
        fault = next((f for f in self.faults if f.operation == operation.operation_id and f.times > 0), None)
        if fault is not None:
            fault.times -= 1
            if fault.status is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                status, problem_headers, payload, _ = _problem(Problem(fault.status, "injected fault"))
                return status, {**problem_headers, **headers}, payload, 0.0
        try:
            status, payload = getattr(self, operation.operation_id)(body, **operation.path_params)
        except Problem as problem:
            return _problem(problem)
        delay = fault.delay_s if fault is not None else 0.0
        if payload is None:
            return status, {}, None, delay
        return status, {"Content-Type": "application/json"}, payload, delay

    # --- serverless -----------------------------------------------------------------------------------------------
    def _view(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        """An endpoint as the API returns it."""
        view = {k: v for k, v in endpoint.items() if k != "boundTemplate"}
        eid = endpoint["id"]
        if endpoint["type"] == "LOAD_BALANCER":
            view["requestUrls"] = {
                "base": f"https://{eid}.api.runpod.ai",
                "health": f"https://{eid}.api.runpod.ai/ping",
            }
        else:
            base = f"https://api.runpod.ai/v2/{eid}"
            view["requestUrls"] = {
                "run": f"{base}/run",
                "runSync": f"{base}/runsync",
                "status": f"{base}/status/{{job_id}}",
                "stream": f"{base}/stream/{{job_id}}",
                "cancel": f"{base}/cancel/{{job_id}}",
                "retry": f"{base}/retry/{{job_id}}",
                "purgeQueue": f"{base}/purge-queue",
                "health": f"{base}/health",
            }
        template = self.templates.get(endpoint.get("boundTemplate") or "")
        if template is not None:  # made before v2: container settings come from the bound template
            view = {**{k: template[k] for k in ("image", "env", "disk") if k in template}, **view}
        if view["type"] == "QUEUE" and view["scaling"]["type"] == "REQUEST_COUNT":
            view["workers"] = {k: v for k, v in view["workers"].items() if k != "idleTimeout"}
        return view

    def _check_endpoint(self, endpoint: dict[str, Any]) -> None:
        gpu = endpoint["gpu"]
        unknown = [p for p in gpu["pools"] if p not in GPU_POOLS]
        if unknown:
            raise Problem(
                400,
                f"unknown GPU pool(s): {', '.join(unknown)}",
                [f"gpu.pools: {p} is not a serverless pool" for p in unknown],
            )
        if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
            raise Problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")
        workers = endpoint["workers"]
        if workers["min"] > workers["max"]:
            raise Problem(
                400, "workers.min cannot be greater than workers.max", ["workers.min: greater than workers.max"]
            )
        request_count_queue = endpoint["type"] == "QUEUE" and endpoint["scaling"]["type"] == "REQUEST_COUNT"
        if request_count_queue and endpoint.get("_idle_sent"):
            raise Problem(
                422,
                "idle timeout is not applicable to a queue endpoint scaling on requestCount",
                ["workers.idleTimeout: not applicable with scaling.type REQUEST_COUNT on a QUEUE endpoint"],
            )
        if endpoint["type"] == "LOAD_BALANCER" and endpoint["scaling"]["type"] != "REQUEST_COUNT":
            raise Problem(400, "load-balancing endpoints scale on REQUEST_COUNT")
        if endpoint.get("registry") and endpoint["registry"] not in self.registries:
            raise Problem(404, f"registry credential {endpoint['registry']} not found")

    def listEndpoints(self, _body: None) -> tuple[int, Any]:
        return 200, {"endpoints": [self._view(e) for e in self.endpoints.values()]}

    def getEndpoint(self, _body: None, id: str) -> tuple[int, Any]:
        if id not in self.endpoints:
            raise Problem(404, "The requested endpoint does not exist.")
        return 200, self._view(self.endpoints[id])

    def createEndpoint(self, body: dict[str, Any]) -> tuple[int, Any]:
        if "cpu" in body or "gpu" not in body:
            raise Problem(400, "specify exactly one of gpu or cpu")
        gpu = {"count": 1, "allowedCudaVersions": [], "minCudaVersion": None, **body["gpu"]}
        workers = {"min": 0, "max": 3, "idleTimeout": 10, **body.get("workers", {})}
        endpoint = {
            "id": "e" + next(self._ids),
            "name": body["name"],
            "type": body["type"],
            "image": body["image"],
            "args": body.get("args", ""),
            "disk": body.get("disk", 10),
            "ports": body.get("ports", []),
            "env": body.get("env", {}),
            "registry": body.get("registry"),
            "gpu": gpu,
            "workers": workers,
            "scaling": body["scaling"],
            "dataCenterIds": body.get("dataCenterIds", []),
            "networkVolumes": body.get("networkVolumes", []),
            "timeout": body.get("timeout", 300000),
            "flashboot": body.get("flashboot", "OFF"),
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._check_endpoint({**endpoint, "_idle_sent": "idleTimeout" in body.get("workers", {})})
        if endpoint["type"] == "QUEUE" and endpoint["scaling"]["type"] == "REQUEST_COUNT":
            workers.pop("idleTimeout", None)
        self.endpoints[endpoint["id"]] = endpoint
        return 201, self._view(endpoint)

    def updateEndpoint(self, body: dict[str, Any], id: str) -> tuple[int, Any]:
        if id not in self.endpoints:
            raise Problem(404, "The requested endpoint does not exist.")
        current = self._view(self.endpoints[id])
        current.pop("requestUrls")
        merged = {**current, **{k: v for k, v in body.items() if k not in ("gpu", "workers")}}
        merged["boundTemplate"] = self.endpoints[id].get("boundTemplate")
        if "gpu" in body:
            merged["gpu"] = {**current["gpu"], **body["gpu"]}
            if merged["gpu"].get("minCudaVersion") == "":
                merged["gpu"]["minCudaVersion"] = None
        if "workers" in body:
            merged["workers"] = {**current["workers"], **body["workers"]}
        self._check_endpoint({**merged, "_idle_sent": "idleTimeout" in body.get("workers", {})})
        self.endpoints[id] = merged
        return 200, self._view(merged)

    def deleteEndpoint(self, _body: None, id: str) -> tuple[int, Any]:
        endpoint = self.endpoints.pop(id, None)
        if endpoint is None:
            raise Problem(404, "The requested endpoint does not exist.")
        self.templates.pop(endpoint.get("boundTemplate") or "", None)  # "deletes ... and its bound template"
        return 204, None

    # --- registries -----------------------------------------------------------------------------------------------
    def listRegistries(self, _body: None) -> tuple[int, Any]:
        return 200, {"registries": [{"id": rid, "name": r["name"]} for rid, r in self.registries.items()]}

    def getRegistry(self, _body: None, id: str) -> tuple[int, Any]:
        if id not in self.registries:
            raise Problem(404, "The requested registry credential does not exist.")
        return 200, {"id": id, "name": self.registries[id]["name"]}

    def createRegistry(self, body: dict[str, Any]) -> tuple[int, Any]:
        if any(r["name"] == body["name"] for r in self.registries.values()):
            raise Problem(400, f"a registry credential named {body['name']} already exists")
        rid = "r" + next(self._ids)
        self.registries[rid] = dict(body)
        return 201, {"id": rid, "name": body["name"]}

    def deleteRegistry(self, _body: None, id: str) -> tuple[int, Any]:
        if self.registries.pop(id, None) is None:
            raise Problem(404, "The requested registry credential does not exist.")
        for endpoint in self.endpoints.values():
            if endpoint.get("registry") == id:
                endpoint["registry"] = None
        return 204, None

    # --- templates ------------------------------------------------------------------------------------------------
    def deleteTemplate(self, _body: None, id: str) -> tuple[int, Any]:
        if id not in self.templates:
            raise Problem(404, "The requested template does not exist.")
        if any(e.get("boundTemplate") == id for e in self.endpoints.values()):
            raise Problem(400, "Template is bound to a serverless endpoint and cannot be deleted")
        del self.templates[id]
        return 204, None


def _problem(problem: Problem) -> tuple[int, dict, Any, float]:
    body = {"title": TITLES.get(problem.status, "Error"), "status": problem.status, "detail": problem.detail}
    if problem.errors:
        body["errors"] = problem.errors
    return problem.status, {"Content-Type": PROBLEM}, body, 0.0


class FakeRunpodServer:
    """Serves a FakeRunpodAccount on 127.0.0.1 (ephemeral port) until stop(), or at most `max_lifetime_s`."""

    def __init__(self, account: FakeRunpodAccount, max_lifetime_s: float = 120.0) -> None:
        self.account = account
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(account))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(max_lifetime_s, self.stop)
        self._watchdog.daemon = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeRunpodServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()


def _handler_for(account: FakeRunpodAccount) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            status, headers, payload, delay = account.handle(
                self.command, self.path, self.headers.get("Authorization"), raw
            )
            if delay:
                time.sleep(delay)  # the change is made; the answer comes after the client's timeout
            data = b"" if payload is None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        def log_message(self, *_args: Any) -> None:  # keep pytest output clean
            pass

    return Handler
