"""Where the endpoint is and how to talk to it: from arguments, else from the environment.

`RUNPOD_API_KEY` is the key; `F5TTS_ENDPOINT_ID` names a RunPod serverless endpoint, or `F5TTS_ENDPOINT_URL`
gives any RunPod-compatible base URL (the devstack's emulator, a proxy). The key is held in a `Secret` so that
no repr, log line or exception message can show it.

The endpoint type (`F5TTS_ENDPOINT_TYPE`) picks the transport: `queue` (RunPod's job queue: `/run`,
`/runsync`, `/status`, `/stream`) or `load_balancer` (a load-balancing endpoint: the worker's own HTTP server,
jobs over `POST /job`). Unset, it is detected from the URL: a base URL ending in `/v2/<id>` is RunPod's queue
API (or the devstack's queue emulator), any other URL (`https://<id>.api.runpod.ai`) a load balancer; an
endpoint id alone means the queue.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from f5tts_client._exceptions import ConfigurationError

ENV_API_KEY = "RUNPOD_API_KEY"
ENV_ENDPOINT_ID = "F5TTS_ENDPOINT_ID"
ENV_ENDPOINT_URL = "F5TTS_ENDPOINT_URL"
ENV_ENDPOINT_TYPE = "F5TTS_ENDPOINT_TYPE"
RUNPOD_API_BASE = "https://api.runpod.ai/v2"
RUNPOD_LB_HOST = "api.runpod.ai"  # a load-balancing endpoint is https://<id>.api.runpod.ai
QUEUE, LOAD_BALANCER = "queue", "load_balancer"
ENDPOINT_TYPES = (QUEUE, LOAD_BALANCER)
_QUEUE_PATH = re.compile(r"/v2/[^/]+$")


class Secret:
    """A string that never shows itself: `repr()`/`str()` print a mask; `.reveal()` is the only way to it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # pickling would write the key out in clear
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, repr=False)
class ClientSettings:
    base_url: str
    api_key: Secret | None
    timeout: float  # default deadline of one call, queueing and running included
    request_timeout: float  # one HTTP request (a /runsync request gets its wait on top)
    max_retries: int
    backoff_base: float
    backoff_max: float
    runsync_wait: float
    poll_interval: float
    poll_interval_max: float
    endpoint_type: str = QUEUE  # "queue" or "load_balancer"

    def __repr__(self) -> str:
        key = "set" if self.api_key else "unset"
        return (
            f"ClientSettings(base_url={self.base_url!r}, endpoint_type={self.endpoint_type!r}, api_key={key}, "
            f"timeout={self.timeout}, max_retries={self.max_retries})"
        )


def resolve_settings(
    api_key: str | None,
    endpoint_id: str | None,
    endpoint_url: str | None,
    *,
    timeout: float,
    request_timeout: float,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    runsync_wait: float,
    poll_interval: float,
    poll_interval_max: float,
    endpoint_type: str | None = None,
) -> ClientSettings:
    """Arguments first, then the environment; a RunPod endpoint (by id) needs a key, a custom URL may not."""
    if endpoint_id and endpoint_url:
        raise ConfigurationError("give endpoint_id or endpoint_url, not both")
    if not endpoint_id and not endpoint_url:
        endpoint_url = os.environ.get(ENV_ENDPOINT_URL) or None
        endpoint_id = None if endpoint_url else os.environ.get(ENV_ENDPOINT_ID) or None
    if endpoint_url:
        base_url = endpoint_url.rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"endpoint URL must start with http:// or https://, got {base_url!r}")
    elif endpoint_id:
        if "/" in endpoint_id or not endpoint_id.strip():
            raise ConfigurationError(f"{endpoint_id!r} is not a RunPod endpoint id (pass a full URL as endpoint_url)")
        kind = _endpoint_type(endpoint_type)
        if kind == LOAD_BALANCER:
            base_url = f"https://{endpoint_id.strip()}.{RUNPOD_LB_HOST}"
        else:
            base_url = f"{RUNPOD_API_BASE}/{endpoint_id.strip()}"
    else:
        raise ConfigurationError(
            f"no endpoint configured: pass endpoint_id=... or set {ENV_ENDPOINT_ID} "
            f"(or {ENV_ENDPOINT_URL} for a RunPod-compatible server such as the devstack)"
        )
    key = api_key or os.environ.get(ENV_API_KEY) or None
    if key is None and endpoint_id:
        raise ConfigurationError(f"no API key: pass api_key=... or set {ENV_API_KEY}")
    if timeout <= 0 or request_timeout <= 0 or runsync_wait < 0 or max_retries < 0:
        raise ConfigurationError("timeouts must be positive and max_retries not negative")
    return ClientSettings(
        endpoint_type=_endpoint_type(endpoint_type) or detect_endpoint_type(base_url),
        base_url=base_url,
        api_key=Secret(key) if key else None,
        timeout=timeout,
        request_timeout=request_timeout,
        max_retries=max_retries,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        runsync_wait=runsync_wait,
        poll_interval=poll_interval,
        poll_interval_max=poll_interval_max,
    )


def _endpoint_type(given: str | None) -> str | None:
    """The configured endpoint type (argument, else `F5TTS_ENDPOINT_TYPE`), None when neither says."""
    kind = given or os.environ.get(ENV_ENDPOINT_TYPE) or None
    if kind is not None and kind not in ENDPOINT_TYPES:
        raise ConfigurationError(f"endpoint type must be one of {', '.join(ENDPOINT_TYPES)}, got {kind!r}")
    return kind


def detect_endpoint_type(base_url: str) -> str:
    """`queue` for RunPod's queue API shape (`.../v2/<id>`), else `load_balancer` (`https://<id>.api.runpod.ai`)."""
    return QUEUE if _QUEUE_PATH.search(urlsplit(base_url).path) else LOAD_BALANCER
