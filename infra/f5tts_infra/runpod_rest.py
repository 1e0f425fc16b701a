"""RunPod's REST API v2 (`https://api.runpod.io/v2`) as the deployment uses it: serverless endpoints, container
registry credentials, and deleting a template.

- Auth: `Authorization: Bearer <API key>`; the key never appears in a message or an exception.
- Errors: RFC 9457 problem bodies (`title`, `status`, `detail`, optional `errors`). Callers decide by `status`
  (`RunpodApiError.status`, `.not_found`), never by the words of a message.
- Retries (tenacity): transport errors and 5xx for idempotent methods, 429 for every method (the request was not
  processed), each waiting `Retry-After` when RunPod sends it, else an exponential backoff. A create is made
  idempotent one level up (`create_or_adopt`): every attempt first looks the object up by name, so a create whose
  answer was lost is adopted by the next attempt instead of made twice.

The operations and their shapes are those of `infra/runpod_schema/runpod-rest-v2.json`, which the tests' fake
RunPod server validates every request and response against.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Self, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

DEFAULT_API_BASE_URL = "https://api.runpod.io"
QUEUE_URL_BASE = "https://api.runpod.ai/v2"
IDEMPOTENT_METHODS = frozenset({"GET", "PATCH", "DELETE", "PUT"})
# 503: RunPod (or its front) did not take the request; worth a retry even for a POST.
NOT_PROCESSED = frozenset({429, 503})

T = TypeVar("T")


class RunpodApiError(RuntimeError):
    """RunPod refused a call, or could not be reached. The message is RunPod's problem detail, never the key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        errors: list[str] | None = None,
        method: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.method = method
        self.retry_after_s = retry_after_s

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def refused_input(self) -> bool:
        """400 or 422: RunPod read the request and refused its content; the user must change a setting."""
        return self.status in (400, 422)

    @property
    def retryable(self) -> bool:
        if self.status is None:  # transport error: the request may or may not have arrived
            return self.method in IDEMPOTENT_METHODS
        if self.status in NOT_PROCESSED:
            return True
        return self.status >= 500 and self.method in IDEMPOTENT_METHODS


def api_base_url() -> str:
    # The same override name the runpod SDK reads; tests point it at the local fake.
    return os.environ.get("RUNPOD_API_BASE_URL", DEFAULT_API_BASE_URL).rstrip("/")


def endpoint_url(endpoint_id: str, endpoint_type: str) -> str:
    """The URL clients call: the queue API for QUEUE endpoints, the endpoint's own host for LOAD_BALANCER ones."""
    if endpoint_type == "LOAD_BALANCER":
        return f"https://{endpoint_id}.api.runpod.ai"
    return f"{QUEUE_URL_BASE}/{endpoint_id}"


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from an API; the exponential backoff applies


def problem_error(response: httpx.Response, method: str, what: str) -> RunpodApiError:
    """A RunpodApiError from an RFC 9457 body (or from the status alone when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    title = problem.get("title") if isinstance(problem.get("title"), str) else None
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else None
    errors = [e for e in problem.get("errors") or [] if isinstance(e, str)]
    summary = f"RunPod refused {what} (HTTP {response.status_code}{f' {title}' if title else ''})"
    if detail:
        summary += f": {detail}"
    if errors:
        summary += " [" + "; ".join(errors) + "]"
    return RunpodApiError(
        summary,
        status=response.status_code,
        title=title,
        detail=detail,
        errors=errors,
        method=method,
        retry_after_s=_retry_after_s(response),
    )


class _WaitRetryAfter:
    """tenacity wait: RunPod's `Retry-After` when it sent one (capped), otherwise exponential backoff with jitter."""

    def __init__(self, max_wait_s: float) -> None:
        self._backoff = wait_exponential_jitter(initial=0.5, max=max_wait_s)
        self._max_wait_s = max_wait_s

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RunpodApiError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._max_wait_s)
        return self._backoff(state)


class RunpodRestClient:
    """One client per provider call; holds the key only in memory, for the request header."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        max_wait_s: float = 30.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=f"{base_url or api_base_url()}/v2",
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
        )
        retry_kwargs: dict[str, Any] = {
            "wait": _WaitRetryAfter(max_wait_s),
            "stop": stop_after_attempt(max_attempts) | stop_after_delay(10 * max_wait_s),
            "reraise": True,
        }
        if sleep is not None:
            retry_kwargs["sleep"] = sleep
        self._retry_kwargs = retry_kwargs

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def retrying(self, fn: Callable[[], T], *, retry_on: Callable[[RunpodApiError], bool] | None = None) -> T:
        should_retry = retry_on or (lambda e: e.retryable)
        retry = retry_if_exception(lambda e: isinstance(e, RunpodApiError) and should_retry(e))
        return Retrying(retry=retry, **self._retry_kwargs)(fn)

    # --- one request, no retry ------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        what = f"{method} /v2{path}"
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            # The exception's text can hold the URL but never the header; name the kind only.
            raise RunpodApiError(f"RunPod API unreachable ({what}): {type(exc).__name__}", method=method) from None
        if response.status_code == 401:
            raise RunpodApiError(
                "RunPod rejected the API key (runpod:token)", status=401, title="Unauthorized", method=method
            )
        if response.status_code >= 400:
            raise problem_error(response, method, what)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.retrying(lambda: self._send(method, path, body))

    # --- serverless endpoints -------------------------------------------------------------------------------------
    def list_endpoints(self) -> list[dict[str, Any]]:
        return self.request("GET", "/serverless")["endpoints"]

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/serverless/{endpoint_id}")
        except RunpodApiError as exc:
            if exc.not_found:
                return None
            raise

    def update_endpoint(self, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"/serverless/{endpoint_id}", body)

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """False when it was already gone."""
        try:
            self.request("DELETE", f"/serverless/{endpoint_id}")
        except RunpodApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def create_endpoint(self, body: dict[str, Any], adopt: Callable[[dict[str, Any]], bool]) -> tuple[dict, bool]:
        """Create, or adopt the endpoint an earlier attempt created. Returns (endpoint, adopted)."""
        return self.create_or_adopt(
            lambda: [e for e in self._send("GET", "/serverless")["endpoints"] if adopt(e)],
            lambda: self._send("POST", "/serverless", body),
            what=f"endpoint {body['name']!r}",
        )

    # --- container registry credentials ---------------------------------------------------------------------------
    def create_registry(self, name: str, username: str, password: str) -> tuple[dict, bool]:
        return self.create_or_adopt(
            lambda: [r for r in self._send("GET", "/registries")["registries"] if r["name"] == name],
            lambda: self._send("POST", "/registries", {"name": name, "username": username, "password": password}),
            what=f"registry credential {name!r}",
        )

    def get_registry(self, registry_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/registries/{registry_id}")
        except RunpodApiError as exc:
            if exc.not_found:
                return None
            raise

    def delete_registry(self, registry_id: str) -> bool:
        try:
            self.request("DELETE", f"/registries/{registry_id}")
        except RunpodApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    # --- templates (only to retire the template resource of stacks deployed before v2) ----------------------------
    def delete_template(self, template_id: str) -> None:
        self.request("DELETE", f"/templates/{template_id}")

    # --- idempotent create ----------------------------------------------------------------------------------------
    def create_or_adopt(
        self, find: Callable[[], list[dict]], create: Callable[[], dict], *, what: str
    ) -> tuple[dict, bool]:
        """Each attempt looks first: an object made by an attempt whose answer was lost (timeout, 5xx, a crash
        before the state was saved) is found by name and adopted, so a retried create never makes a second one."""

        def attempt() -> tuple[dict, bool]:
            found = find()
            if len(found) > 1:
                ids = ", ".join(sorted(str(f.get("id")) for f in found))
                raise RunpodApiError(f"{len(found)} RunPod objects match {what} ({ids}); delete the extra ones")
            if found:
                return found[0], True
            return create(), False

        # Every failure that may be transient is retried, the POST's included: the next attempt looks first.
        return self.retrying(attempt, retry_on=lambda e: e.status is None or e.status == 429 or e.status >= 500)
