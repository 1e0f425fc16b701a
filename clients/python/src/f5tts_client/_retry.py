"""When to retry a request, how long to wait, and the deadline of a whole call.

A submission (`POST /run`, `/runsync`) is retried only when the API provably did not create a job: the
connection was never made (refused, connect timeout, no pooled connection), or the API answered 429 or 503,
which RunPod sends before accepting anything. Any other failure of a submission (a lost or timed-out
response, 500, 502, 504) might hide an accepted job, so it is reported instead of resubmitted: one call
never creates two jobs. Reads (`/status`, `/stream`, audio downloads) and `/cancel` are idempotent and are
retried on every connection error, 429 and 5xx.
"""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime

import httpx

# The request never left this machine (no connection), so the API cannot have seen it.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
SUBMIT_RETRY_STATUSES = frozenset({429, 503})
READ_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0

_rng = random.SystemRandom()


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    Exponential backoff with full jitter (a uniform draw below `base * 2**attempt`, capped), so that many
    clients rejected together do not return together; a server's `Retry-After` is honoured instead, bounded.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    return _rng.uniform(0.0, min(cap, base * (2**attempt)))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds or an HTTP date), if present and readable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class Deadline:
    """The moment a call must be over by; `None` seconds means no deadline."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._at = math.inf if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._at

    def cap(self, seconds: float) -> float:
        return min(seconds, self.remaining())
