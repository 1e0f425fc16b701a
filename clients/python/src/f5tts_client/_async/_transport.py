"""HTTP to the endpoint: submit, status, stream, cancel, download; retries and per-request timeouts.

Two kinds of endpoint (`ClientSettings.endpoint_type`), one interface for the rest of the client:
- `queue`: RunPod's job queue API (`/run`, `/runsync`, `/status/<id>`, `/stream/<id>`, `/cancel/<id>`).
- `load_balancer`: the worker's own HTTP server behind RunPod's load balancer, whose native route `POST /job`
  runs one job and answers with its output (or, with `stream: true`, one NDJSON line per item as the worker
  yields it). The job's outcome is turned into the same `JobState`/`StreamState` a queue answer gives, so jobs,
  results and streams work unchanged; an id is made up on this side (nothing is queued) and `status` and
  `stream` read what this transport received.

Retry policy (see `f5tts_client._retry`): a submission is retried only when provably no job was created;
everything else is idempotent and retried on connection errors, 429 and 5xx, with jittered exponential backoff,
within the call's deadline. The API key goes only to the API, as a header per request: never to a presigned
audio URL's host, never into a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from typing import Any

import httpx

from f5tts_client._config import LOAD_BALANCER, ClientSettings
from f5tts_client._error_responses import redact, status_error
from f5tts_client._exceptions import APIConnectionError, APITimeoutError, JobNotFound, UnexpectedResponse
from f5tts_client._retry import (
    NEVER_SENT,
    READ_RETRY_STATUSES,
    SUBMIT_RETRY_STATUSES,
    Deadline,
    backoff_delay,
    retry_after_seconds,
)
from f5tts_client._types import JobState, RunPodJobStatus, StreamState
from f5tts_client._version import __version__

log = logging.getLogger("f5tts_client")


class AsyncTransport:
    def __init__(self, settings: ClientSettings, http_client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=settings.request_timeout)
        # load_balancer: jobs this transport ran (id → final state), and the open response of each streaming job.
        self._finished: OrderedDict[str, JobState] = OrderedDict()
        self._streams: dict[str, _OpenStream] = {}

    @property
    def load_balancer(self) -> bool:
        return self.settings.endpoint_type == LOAD_BALANCER

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------------------ queue API
    async def submit(self, job_input: dict[str, Any], *, deadline: Deadline, wait: float | None = None) -> JobState:
        """`POST /runsync?wait=<ms>` when `wait` is given (the answer may still be IN_QUEUE/IN_PROGRESS), else `/run`."""
        if self.load_balancer:
            return await self._lb_submit(job_input, deadline)
        if wait is None:
            path, params, extra = "/run", None, 0.0
        else:
            # RunPod takes the wait in milliseconds; the HTTP read timeout must outlast it.
            path, params, extra = "/runsync", {"wait": max(1000, int(wait * 1000))}, wait
        response = await self._request(
            "POST", path, deadline, json={"input": job_input}, params=params, submit=True, extra=extra
        )
        if response.status_code >= 400:
            raise status_error(response, self.settings.api_key, what=f"POST {path}")
        return self._job_state(response, f"POST {path}")

    async def status(self, job_id: str, deadline: Deadline) -> JobState:
        if self.load_balancer:
            return self._lb_state(job_id)
        return self._job_state(await self._job_request("GET", "/status", job_id, deadline), "GET /status")

    async def cancel(self, job_id: str, deadline: Deadline) -> JobState:
        if self.load_balancer:
            # Closing the response is the cancel: the worker stops the job before its next chunk.
            open_stream = self._streams.pop(job_id, None)
            if open_stream is not None:
                await open_stream.response.aclose()
                self._remember(JobState(id=job_id, status=RunPodJobStatus.CANCELLED))
            return self._lb_state(job_id)
        return self._job_state(await self._job_request("POST", "/cancel", job_id, deadline), "POST /cancel")

    async def stream(self, job_id: str, deadline: Deadline) -> StreamState:
        if self.load_balancer:
            return await self._lb_stream(job_id, deadline)
        response = await self._job_request("GET", "/stream", job_id, deadline)
        try:
            return StreamState.model_validate(response.json())
        except ValueError as exc:
            raise UnexpectedResponse(f"GET /stream: unreadable answer: {exc}") from None

    async def download(self, url: str, deadline: Deadline) -> bytes:
        """GET a presigned audio URL: no API key (it is another host), retried like any read."""
        response = await self._request("GET", url, deadline, authenticated=False)
        if response.status_code >= 400:
            raise status_error(response, None, what="downloading the audio")
        return response.content

    # ------------------------------------------------------------------------------------------ load balancer
    async def _lb_submit(self, job_input: dict[str, Any], deadline: Deadline) -> JobState:
        """`POST /job`: a finished job's state, or (streaming) an IN_PROGRESS one whose items `stream` reads."""
        job_id = f"lb-{uuid.uuid4().hex}"
        streaming = job_input.get("stream") is True
        response = await self._request(
            "POST",
            "/job",
            deadline,
            json={"input": job_input},
            submit=True,
            extra=deadline.cap(self.settings.timeout),
            stream=streaming,
        )
        if response.status_code >= 400:
            if streaming:
                await response.aread()
                await response.aclose()
            return self._remember(self._lb_failure(job_id, response))
        if streaming:
            self._streams[job_id] = _OpenStream(response, response.aiter_bytes())
            return JobState(id=job_id, status=RunPodJobStatus.IN_PROGRESS)
        try:
            output = response.json()
        except ValueError as exc:
            raise UnexpectedResponse(f"POST /job: unreadable answer (HTTP {response.status_code}): {exc}") from None
        return self._remember(JobState(id=job_id, status=RunPodJobStatus.COMPLETED, output=[output]))

    async def _lb_stream(self, job_id: str, deadline: Deadline) -> StreamState:
        """The items that arrived since the last call: at least one, unless the job ended."""
        open_stream = self._streams.get(job_id)
        if open_stream is None:
            state = self._lb_state(job_id)
            return StreamState(status=state.status)
        items: list[Any] = []
        status = RunPodJobStatus.IN_PROGRESS
        try:
            while not items:
                data = await open_stream.chunks.__anext__()
                open_stream.buffer += data
                *lines, open_stream.buffer = open_stream.buffer.split(b"\n")
                items += [json.loads(line) for line in lines if line.strip()]
        except StopAsyncIteration:
            status = RunPodJobStatus.COMPLETED
        except httpx.TransportError as exc:
            await open_stream.response.aclose()
            del self._streams[job_id]
            raise self._connection_error(exc, "reading POST /job", maybe_submitted=True) from None
        except ValueError as exc:
            raise UnexpectedResponse(f"POST /job: unreadable stream line: {exc}") from None
        open_stream.items += items
        errors = [item for item in items if isinstance(item, dict) and "error" in item]
        if errors:  # as on the queue: the error is the job's, not a stream item
            status = RunPodJobStatus.FAILED
            items = [item for item in items if item not in errors]
        if status != RunPodJobStatus.IN_PROGRESS:
            await open_stream.response.aclose()
            del self._streams[job_id]
            error = errors[0]["error"] if errors else None
            output = None if errors else list(open_stream.items)
            self._remember(JobState(id=job_id, status=status, output=output, error=error))
        return StreamState(status=status, stream=items)

    def _lb_failure(self, job_id: str, response: httpx.Response) -> JobState:
        """A worker's coded error (OpenAI's shape with our code) is the job's; anything else is the API's."""
        try:
            body = response.json()
            error = body["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            raise status_error(response, self.settings.api_key, what="POST /job") from None
        if code in ("invalid_api_key", "not_found"):  # the server's, not a job's
            raise status_error(response, self.settings.api_key, what="POST /job")
        error_body = {"code": code, "message": message, "field": error.get("param")}
        return JobState(id=job_id, status=RunPodJobStatus.FAILED, error=json.dumps(error_body))

    def _lb_state(self, job_id: str) -> JobState:
        if job_id in self._streams:
            return JobState(id=job_id, status=RunPodJobStatus.IN_PROGRESS)
        state = self._finished.get(job_id)
        if state is None:
            raise JobNotFound(
                f"job {job_id} is unknown: a load-balancing endpoint keeps no jobs, and this client did not run it",
                job_id=job_id,
            )
        return state

    def _remember(self, state: JobState) -> JobState:
        self._finished[state.id] = state
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
        return state

    # ------------------------------------------------------------------------------------------ plumbing
    async def _job_request(self, method: str, route: str, job_id: str, deadline: Deadline) -> httpx.Response:
        response = await self._request(method, f"{route}/{job_id}", deadline)
        if response.status_code == 404:
            raise JobNotFound(
                f"job {job_id} is unknown to the endpoint: its result expired (RunPod keeps results for a limited time "
                "after the job ends) or the id is wrong",
                job_id=job_id,
            )
        if response.status_code >= 400:
            raise status_error(response, self.settings.api_key, what=f"{method} {route}/{job_id}")
        return response

    def _job_state(self, response: httpx.Response, what: str) -> JobState:
        try:
            return JobState.model_validate(response.json())
        except ValueError as exc:
            raise UnexpectedResponse(f"{what}: unreadable answer (HTTP {response.status_code}): {exc}") from None

    def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"User-Agent": f"f5tts-client/{__version__}"}
        if authenticated and self.settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_key.reveal()}"
        return headers

    async def _request(
        self,
        method: str,
        path_or_url: str,
        deadline: Deadline,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        submit: bool = False,
        extra: float = 0.0,
        authenticated: bool = True,
        stream: bool = False,
    ) -> httpx.Response:
        """One request with bounded retries; returns the final response (possibly an error status)."""
        s = self.settings
        absolute = path_or_url.startswith(("http://", "https://"))
        url = path_or_url if absolute else s.base_url + path_or_url
        # Name requests in logs and errors by route only: a presigned URL's query is a credential too.
        what = f"{method} {'the audio URL' if absolute else path_or_url}"
        retry_statuses = SUBMIT_RETRY_STATUSES if submit else READ_RETRY_STATUSES
        attempt = 0
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise APITimeoutError(f"{what}: the call's deadline passed before the request could be made")
            timeout = httpx.Timeout(min(s.request_timeout + extra, remaining))
            failure: httpx.TransportError | None = None
            try:
                request = self._http.build_request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=self._headers(authenticated and not absolute),
                    timeout=timeout,
                )
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                failure = exc
            # Raised outside the `except` so that our exception does not chain httpx's, whose request holds the key.
            if failure is not None:
                never_sent = isinstance(failure, NEVER_SENT)
                if (submit and not never_sent) or attempt >= s.max_retries:
                    raise self._connection_error(failure, what, maybe_submitted=submit and not never_sent)
                delay, reason = backoff_delay(attempt, s.backoff_base, s.backoff_max), type(failure).__name__
            else:
                if response.status_code not in retry_statuses or attempt >= s.max_retries:
                    return response
                if stream:
                    await response.aclose()
                delay = backoff_delay(attempt, s.backoff_base, s.backoff_max, retry_after_seconds(response))
                reason = f"HTTP {response.status_code}"
            if delay >= deadline.remaining():
                raise APITimeoutError(f"{what}: the call's deadline leaves no time to retry after {reason}")
            attempt += 1
            log.info("%s failed (%s); retry %d of %d in %.2f s", what, reason, attempt, s.max_retries, delay)
            await asyncio.sleep(delay)

    def _connection_error(self, exc: httpx.TransportError, what: str, *, maybe_submitted: bool) -> APIConnectionError:
        detail = redact(str(exc) or type(exc).__name__, self.settings.api_key)
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        if maybe_submitted:
            message = (
                f"{what}: {detail}. The request may have reached the API, so it was not resent (that could create a "
                "second job); check the endpoint's jobs before submitting again"
            )
        else:
            message = f"{what}: cannot reach the API at {self.settings.base_url}: {detail}"
        return cls(message, maybe_submitted=maybe_submitted)


_FINISHED_KEPT = 256  # load_balancer: final states kept for `status()` of recent jobs


class _OpenStream:
    """A streaming job's open `POST /job` response (NDJSON), read a little at each `stream()` call."""

    def __init__(self, response: httpx.Response, chunks: Any) -> None:
        self.response = response
        self.chunks = chunks
        self.buffer = b""
        self.items: list[Any] = []
