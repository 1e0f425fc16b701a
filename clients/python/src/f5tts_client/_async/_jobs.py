"""A handle to one queued job: its status, waiting for its result, cancelling it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from f5tts_client._async._transport import AsyncTransport
from f5tts_client._error_responses import job_error
from f5tts_client._exceptions import JobCancelled, JobTimeout, UnexpectedResponse
from f5tts_client._retry import Deadline
from f5tts_client._types import JobState, RunPodJobStatus

T = TypeVar("T")
StatusCallback = Callable[[JobState], Any]


class AsyncJob(Generic[T]):
    """A job on the endpoint. `wait()` returns its parsed result or raises its error as a typed exception."""

    def __init__(
        self, transport: AsyncTransport, job_id: str, parse: Callable[[Any], T], state: JobState | None = None
    ) -> None:
        self._transport = transport
        self._parse = parse
        self.id = job_id
        self.last_state = state

    def __repr__(self) -> str:
        status = self.last_state.status if self.last_state else "unknown"
        return f"{type(self).__name__}(id={self.id!r}, status={status!r})"

    async def status(self, *, timeout: float | None = None) -> JobState:
        """The job's current state (`status` is one of `RunPodJobStatus`); raises `JobNotFound` once it expired."""
        self.last_state = await self._transport.status(self.id, self._deadline(timeout))
        return self.last_state

    async def cancel(self, *, timeout: float | None = None) -> JobState:
        """Ask the endpoint to cancel the job (a job that already ended keeps its outcome)."""
        self.last_state = await self._transport.cancel(self.id, self._deadline(timeout))
        return self.last_state

    async def wait(self, timeout: float | None = None, *, on_status: StatusCallback | None = None) -> T:
        """Poll `/status` until the job ends; return its result.

        Args:
            timeout: Seconds to wait; default: the client's `timeout`. When it passes, `JobTimeout` is raised
                and the job keeps running (`cancel()` stops it).
            on_status: Called with every state polled, e.g. to show progress.
        """
        return await self._wait(self._deadline(timeout), on_status)

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self._transport.settings.timeout if timeout is None else timeout)

    async def _wait(self, deadline: Deadline, on_status: StatusCallback | None = None) -> T:
        settings = self._transport.settings
        interval = settings.poll_interval
        state = self.last_state
        while state is None or not state.done:
            if state is not None:
                await asyncio.sleep(deadline.cap(interval))
                interval = min(interval * 1.5, settings.poll_interval_max)
                if deadline.expired:
                    raise JobTimeout(
                        f"job {self.id} is still {state.status} after {deadline.seconds:g} s; it keeps running: "
                        "wait() again to get its result, or cancel() it",
                        job_id=self.id,
                    )
            state = self.last_state = await self._transport.status(self.id, deadline)
            if on_status is not None:
                on_status(state)
        return self._outcome(state)

    def _outcome(self, state: JobState) -> T:
        if state.status == RunPodJobStatus.COMPLETED:
            return self._parse(state.output)
        if state.status == RunPodJobStatus.FAILED:
            raise job_error(state.error, job_id=self.id)
        if state.status == RunPodJobStatus.CANCELLED:
            raise JobCancelled(f"job {self.id} was cancelled", job_id=self.id)
        if state.status == RunPodJobStatus.TIMED_OUT:
            raise JobTimeout(
                f"the endpoint timed job {self.id} out (its execution timeout)", job_id=self.id, on_server=True
            )
        raise UnexpectedResponse(f"job {self.id} has an unknown status {state.status!r}")
