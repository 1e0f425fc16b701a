"""The client's hand-written half: configuration, input validation, and how each kind of call runs.

`AsyncClient` (generated from the contract into `_client.py`) subclasses this and adds one method per action,
whose bodies call `_call`, `_synthesize`, `_synthesize_stream` or `_submit_synthesis` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from f5tts_client._async._jobs import AsyncJob
from f5tts_client._async._results import AsyncSynthesisResult
from f5tts_client._async._stream import AsyncAudioStream
from f5tts_client._async._transport import AsyncTransport
from f5tts_client._config import ClientSettings, resolve_settings
from f5tts_client._exceptions import UnexpectedResponse
from f5tts_client._generated import models
from f5tts_client._generated.error_code_exceptions import InvalidInput
from f5tts_client._not_given import given
from f5tts_client._retry import Deadline
from f5tts_client._types import single_output

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class AsyncClientBase:
    """Configuration and transport of a client.

    Args:
        api_key: RunPod API key; default `RUNPOD_API_KEY`. Needed for a RunPod endpoint id; optional for a URL.
        endpoint_id: RunPod serverless endpoint id; default `F5TTS_ENDPOINT_ID`.
        endpoint_url: Base URL of any RunPod-compatible API instead (e.g. the devstack's); default
            `F5TTS_ENDPOINT_URL`, which wins over `F5TTS_ENDPOINT_ID`.
        timeout: Default seconds one call may take in all, queueing included; each method takes its own.
        request_timeout: Seconds one HTTP request may take (a `/runsync` request gets its wait on top).
        max_retries: Retries of one request on 429, 5xx and connection errors (submissions only when no job
            can have been created).
        backoff_base: First retry waits up to this many seconds; doubles each retry (with full jitter).
        backoff_max: Longest wait between retries.
        runsync_wait: Seconds `/runsync` holds a request before the client falls back to polling `/status`.
        poll_interval: First interval between polls of `/status` and `/stream`; grows to `poll_interval_max`.
        poll_interval_max: Longest interval between polls.
        http_client: An httpx client to send requests with (proxies, custom transports); closing it is yours.
        endpoint_type: `queue` or `load_balancer` (RunPod endpoint types); default `F5TTS_ENDPOINT_TYPE`, else
            detected from the URL (`.../v2/<id>` is the queue API; `https://<id>.api.runpod.ai` a load balancer).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint_id: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 600.0,
        request_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        runsync_wait: float = 60.0,
        poll_interval: float = 0.25,
        poll_interval_max: float = 2.0,
        http_client: httpx.AsyncClient | None = None,
        endpoint_type: str | None = None,
    ) -> None:
        self._settings = resolve_settings(
            api_key,
            endpoint_id,
            endpoint_url,
            timeout=timeout,
            request_timeout=request_timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            runsync_wait=runsync_wait,
            poll_interval=poll_interval,
            poll_interval_max=poll_interval_max,
            endpoint_type=endpoint_type,
        )
        self._transport = AsyncTransport(self._settings, http_client)

    @property
    def settings(self) -> ClientSettings:
        return self._settings

    @property
    def endpoint_url(self) -> str:
        return self._settings.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint_url={self.endpoint_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (unless the httpx client was given by the caller)."""
        await self._transport.aclose()

    def job(self, job_id: str) -> AsyncJob[AsyncSynthesisResult]:
        """A handle to a synthesis job submitted earlier (e.g. by `submit()`, or by id from another process)."""
        return AsyncJob(self._transport, job_id, self._synthesis_parser(job_id))

    # ------------------------------------------------------------------------------------------ calls
    async def _call(self, action: str, values: dict[str, Any], output_model: type[M], *, timeout: float | None) -> M:
        """Run one action to completion and return its output, read as `output_model`."""
        return await self._run(action, values, timeout, lambda job_id: _model_parser(output_model))

    async def _synthesize(self, values: dict[str, Any], *, timeout: float | None) -> AsyncSynthesisResult:
        return await self._run("synthesize", values, timeout, self._synthesis_parser)

    def _synthesize_stream(self, values: dict[str, Any], *, timeout: float | None) -> AsyncAudioStream:
        job_input = self._job_input("synthesize", {**values, "stream": True})
        return AsyncAudioStream(self._transport, job_input, self._timeout(timeout))

    async def _submit_synthesis(
        self, values: dict[str, Any], *, timeout: float | None
    ) -> AsyncJob[AsyncSynthesisResult]:
        job_input = self._job_input("synthesize", values)
        state = await self._transport.submit(job_input, deadline=Deadline(self._timeout(timeout)))
        return AsyncJob(self._transport, state.id, self._synthesis_parser(state.id), state)

    async def _run(
        self, action: str, values: dict[str, Any], timeout: float | None, parser: Callable[[str], Callable[[Any], T]]
    ) -> T:
        """`/runsync` first; if the job outlasts the wait, poll `/status` until the deadline."""
        job_input = self._job_input(action, values)
        deadline = Deadline(self._timeout(timeout))
        wait = deadline.cap(self._settings.runsync_wait)
        # RunPod's shortest runsync wait is 1 s: with less time left, `/run` gives the job id at once, so a
        # deadline that passes still ends in JobTimeout with that id rather than in a lost response.
        state = await self._transport.submit(job_input, deadline=deadline, wait=wait if wait >= 1.0 else None)
        return await AsyncJob(self._transport, state.id, parser(state.id), state)._wait(deadline)

    # ------------------------------------------------------------------------------------------ helpers
    def _timeout(self, timeout: float | None) -> float:
        return self._settings.timeout if timeout is None else timeout

    def _synthesis_parser(self, job_id: str) -> Callable[[Any], AsyncSynthesisResult]:
        def parse(output: Any) -> AsyncSynthesisResult:
            try:
                return AsyncSynthesisResult._from_output(single_output(output), self._transport, job_id)
            except ValidationError as exc:
                raise UnexpectedResponse(f"job {job_id}: unreadable synthesis result: {exc}") from None

        return parse

    @staticmethod
    def _job_input(action: str, values: dict[str, Any]) -> dict[str, Any]:
        """The job input: every argument the caller gave (checked against the contract's input model), and no other.

        An argument left out (`NOT_GIVEN`) is left out of the job, so the worker applies its own default; one given,
        even at the worker's default value, is sent as given. Checking here gives the same `InvalidInput` the
        worker would, without a round trip; rules the schema cannot express (e.g. `voice` and `ref_audio`
        together) are still checked by the worker.
        """
        input_model: type[BaseModel] = models.ACTIONS[action][0]
        try:
            parsed = input_model.model_validate({**given(values), "action": action})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidInput(f"{field}: {message}" if field else message, field=field) from None
        return {"action": action, **parsed.model_dump(mode="json", exclude_unset=True, exclude={"action"})}


def _model_parser(output_model: type[M]) -> Callable[[Any], M]:
    def parse(output: Any) -> M:
        try:
            return output_model.model_validate(single_output(output))
        except ValidationError as exc:
            raise UnexpectedResponse(f"unreadable {output_model.__name__}: {exc}") from None

    return parse
