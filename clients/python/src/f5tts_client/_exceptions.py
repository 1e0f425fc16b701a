"""The client's exception classes, hand-written: every failure kind except the worker's own error codes.

The subclass of `WorkerError` per contract error code is generated into `_generated/error_code_exceptions.py`;
`_error_responses.py` reads a failed HTTP answer or job into the right one of these exceptions.

    F5TTSError
    ├── ConfigurationError          no endpoint / no key / bad settings
    ├── UnexpectedResponse          the API answered something this client cannot read
    ├── APIConnectionError          the API could not be reached (after retries)
    │   └── APITimeoutError         an HTTP request timed out (after retries)
    ├── APIStatusError              the API answered an HTTP error (after retries)
    │   ├── AuthenticationError     401/403: the key was refused
    │   ├── EndpointNotFound        404 on a submission: wrong endpoint id/URL
    │   ├── RateLimitError          429
    │   └── ServerError             5xx
    └── JobError                    about one job (carries `job_id`)
        ├── JobNotFound             404 on a job: its result expired, or the id is wrong
        ├── JobCancelled
        ├── JobTimeout              the call's deadline passed (the job may still finish), or RunPod timed it out
        └── WorkerError             the worker failed the job with an error code (`code`, `field`)
            ├── InvalidInput, VoiceNotFound, ...   (generated: one per contract error code)

Messages are written for people; none of them ever contains the API key.
"""

from __future__ import annotations


class F5TTSError(Exception):
    """Base of every exception this client raises."""


class ConfigurationError(F5TTSError):
    """The client is not configured to reach an endpoint (missing endpoint or key, bad setting)."""


class UnexpectedResponse(F5TTSError):
    """The API or the worker answered something this client cannot read (version mismatch, proxy page)."""


class APIConnectionError(F5TTSError):
    """The endpoint's API could not be reached.

    `maybe_submitted` is true when the failed request was a submission that may have reached the API anyway
    (a lost response): the client then does not resubmit it, so that one call never creates two jobs.
    """

    def __init__(self, message: str, *, maybe_submitted: bool = False) -> None:
        super().__init__(message)
        self.maybe_submitted = maybe_submitted


class APITimeoutError(APIConnectionError):
    """An HTTP request to the API timed out."""


class APIStatusError(F5TTSError):
    """The API answered with an HTTP error status (after any retries)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(APIStatusError):
    """The API refused the API key (401/403)."""


class EndpointNotFound(APIStatusError):
    """The endpoint does not exist (404 on a submission): check the endpoint id or URL."""


class RateLimitError(APIStatusError):
    """The API kept answering 429 Too Many Requests."""


class ServerError(APIStatusError):
    """The API kept answering a 5xx server error."""


class JobError(F5TTSError):
    """A failure of one job; `job_id` names it (None only before the API gave the job an id)."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(JobError):
    """The API does not know the job: its result expired (RunPod keeps it for a limited time) or the id is wrong."""


class JobCancelled(JobError):
    """The job was cancelled before it finished."""


class JobTimeout(JobError):
    """The call's deadline passed while the job was queued or running, or the endpoint timed the job out.

    `on_server` tells which: when false the job may still finish, and `client.job(exc.job_id).wait()` gets it.
    """

    def __init__(self, message: str, *, job_id: str | None = None, on_server: bool = False) -> None:
        super().__init__(message, job_id=job_id)
        self.on_server = on_server


class WorkerError(JobError):
    """The worker refused or failed the job; `code` is the contract's error code, `field` the input at fault.

    Each code has its own subclass (`InvalidInput`, `VoiceNotFound`, ...); a code this client does not know
    (a newer worker) arrives as a plain `WorkerError` with that `code`.
    """

    code: str = ""
    raw: object = None  # the job's `error` exactly as received (may include a server traceback)

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, job_id: str | None = None
    ) -> None:
        super().__init__(message, job_id=job_id)
        if code is not None:
            self.code = code
        self.field = field

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.code}]"
