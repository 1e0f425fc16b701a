"""An in-memory RunPod queue API for `httpx.MockTransport`: precise control over every answer.

The transport tests use it to script what the devstack cannot make happen on cue: a lost response after a job
was accepted, a connection refused, a given error string, a job that stays queued. Every request is recorded so
tests can count submissions. The end-to-end tests (test_e2e_*.py) use the real devstack instead.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

ENDPOINT_URL = "https://fake-runpod.test/v2/ep123"
AUDIO_HOST = "https://bucket.fake-s3.test"
API_KEY = "rpa_TESTKEY_0123456789_must_never_leak"
LOST_ANSWER = "lost answer"
WAV_BYTES = b"RIFF$\x00\x00\x00WAVEfmt fake-audio-bytes"


def synth_output(**overrides: Any) -> dict[str, Any]:
    out = {
        "audio_base64": base64.b64encode(WAV_BYTES).decode(),
        "format": "wav",
        "sample_rate": 24000,
        "duration": 1.25,
        "seed": 7,
        "voice": "default",
        "chunks": 1,
        "timings": {"total_s": 0.5, "inference_s": 0.4, "rtf": 0.32},
    }
    out.update(overrides)
    return out


def stream_chunk(index: int, audio: bytes = WAV_BYTES) -> dict[str, Any]:
    return {
        "type": "chunk",
        "index": index,
        "text": f"chunk {index}",
        "audio_base64": base64.b64encode(audio).decode(),
        "format": "wav",
        "sample_rate": 24000,
        "duration": 0.5,
    }


def stream_end(chunks: int) -> dict[str, Any]:
    return {
        "type": "end",
        "format": "wav",
        "sample_rate": 24000,
        "duration": 0.5 * chunks,
        "seed": 3,
        "voice": "default",
        "chunks": chunks,
        "timings": {"total_s": 1.0, "inference_s": 0.8, "rtf": 0.5},
    }


@dataclass
class Plan:
    """How one job behaves: `pending` status answers before it ends as `final`; `stream` batches for /stream."""

    pending: int = 0
    final: dict[str, Any] = field(default_factory=lambda: {"status": "COMPLETED", "output": [synth_output()]})
    stream: list[list[Any]] = field(default_factory=list)


class FakeRunPod:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.plans: deque[Plan] = deque()
        self.default_plan = Plan
        # (method, route) -> queued faults, one per request: None (no fault), an int status, (status, headers,
        # body), an exception class, or LOST_ANSWER: the request is processed (e.g. a /stream batch handed out)
        # but its answer never arrives.
        self.faults: dict[tuple[str, str], deque[Any]] = {}
        self._ids = (f"job-{n}" for n in itertools.count(1))

    # ------------------------------------------------------------------------------------------ scripting
    def plan(self, *plans: Plan) -> None:
        self.plans.extend(plans)

    def fault(self, method: str, route: str, *faults: Any) -> None:
        self.faults.setdefault((method, route), deque()).extend(faults)

    def count(self, method: str, route: str) -> int:
        return sum(1 for r in self.requests if r.method == method and _route(r) == route)

    @property
    def accepted_jobs(self) -> int:
        return len(self.jobs)

    # ------------------------------------------------------------------------------------------ the API
    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = _route(request)
        queued = self.faults.get((request.method, route))
        fault = queued.popleft() if queued else None
        if fault is not None:
            if fault == LOST_ANSWER:
                self._answer(request, route)  # processed by the API...
                raise httpx.ReadTimeout("answer lost", request=request)  # ... but the answer never arrives
            if isinstance(fault, type) and issubclass(fault, httpx.TransportError):
                raise fault("injected", request=request)
            if isinstance(fault, tuple):
                status, headers, body = fault
                return httpx.Response(status, headers=headers, json=body)
            return httpx.Response(fault, json={"error": f"injected {fault}"})
        return self._answer(request, route)

    def _answer(self, request: httpx.Request, route: str) -> httpx.Response:
        if request.url.host == httpx.URL(AUDIO_HOST).host:
            return httpx.Response(200, content=WAV_BYTES)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"error": f"bad key {request.headers.get('authorization')}"})
        parts = request.url.path.split("/")  # ['', 'v2', 'ep123', route, id?]
        if route in ("run", "runsync"):
            return self._submit(request, route)
        job = self.jobs.get(parts[4])
        if job is None:
            return httpx.Response(404, json={"error": "request does not exist"})
        if route == "status":
            return httpx.Response(200, json=self._advance(job))
        if route == "stream":
            batch = job["plan"].stream.pop(0) if job["plan"].stream else []
            status = "IN_PROGRESS" if job["plan"].stream else job["plan"].final["status"]
            return httpx.Response(200, json={"status": status, "stream": [{"output": item} for item in batch]})
        if route == "cancel":
            job["cancelled"] = True
            job["plan"] = Plan(final={"status": "CANCELLED"})
            return httpx.Response(200, json={"id": job["id"], "status": "CANCELLED"})
        return httpx.Response(404, json={"error": "no route"})

    def _submit(self, request: httpx.Request, route: str) -> httpx.Response:
        body = json.loads(request.content)
        job = {"id": next(self._ids), "input": body["input"], "plan": self.plans.popleft() if self.plans else Plan()}
        job["wait"] = request.url.params.get("wait")
        self.jobs[job["id"]] = job
        if route == "runsync":
            return httpx.Response(200, json=self._advance(job))
        return httpx.Response(200, json={"id": job["id"], "status": "IN_QUEUE"})

    @staticmethod
    def _advance(job: dict[str, Any]) -> dict[str, Any]:
        plan: Plan = job["plan"]
        if plan.pending > 0:
            plan.pending -= 1
            return {"id": job["id"], "status": "IN_PROGRESS"}
        return {"id": job["id"], "delayTime": 12, "executionTime": 345, **plan.final}


def _route(request: httpx.Request) -> str:
    parts = request.url.path.split("/")
    return parts[3] if len(parts) > 3 else ""
