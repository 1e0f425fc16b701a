"""HTTP to RunPod's queue API: submit, status, stream, cancel, download; retries and per-request timeouts.

Retry policy (see `f5tts_client._retry`): a submission is retried only when provably no job was created;
everything else is idempotent and retried on connection errors, 429 and 5xx, with jittered exponential backoff,
within the call's deadline. The API key goes only to the API, as a header per request: never to a presigned
audio URL's host, never into a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from f5tts_client._config import ClientSettings
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
from f5tts_client._types import JobState, StreamState
from f5tts_client._version import __version__

log = logging.getLogger("f5tts_client")


class AsyncTransport:
    def __init__(self, settings: ClientSettings, http_client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=settings.request_timeout)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------------------ queue API
    async def submit(self, job_input: dict[str, Any], *, deadline: Deadline, wait: float | None = None) -> JobState:
        """`POST /runsync?wait=<ms>` when `wait` is given (the answer may still be IN_QUEUE/IN_PROGRESS), else `/run`."""
        if wait is None:
            path, params, extra = "/run", None, 0.0
        else:
            # RunPod takes the wait in milliseconds; the HTTP read timeout must outlast it.
            path, params, extra = "/runsync", {"wait": max(1000, int(wait * 1000))}, wait
        response = await self._request("POST", path, deadline, json={"input": job_input}, params=params, submit=True, extra=extra)
        if response.status_code >= 400:
            raise status_error(response, self.settings.api_key, what=f"POST {path}")
        return self._job_state(response, f"POST {path}")

    async def status(self, job_id: str, deadline: Deadline) -> JobState:
        return self._job_state(await self._job_request("GET", "/status", job_id, deadline), "GET /status")

    async def cancel(self, job_id: str, deadline: Deadline) -> JobState:
        return self._job_state(await self._job_request("POST", "/cancel", job_id, deadline), "POST /cancel")

    async def stream(self, job_id: str, deadline: Deadline) -> StreamState:
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
                response = await self._http.request(
                    method, url, json=json, params=params, headers=self._headers(authenticated and not absolute), timeout=timeout
                )
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
