"""Logging for the worker process: URLs in log lines lose their credentials, and runpod's own logger follows ours.

Reference URLs may carry `user:password@` and presigned query strings (`X-Amz-Signature=...`), and every
synthesize output holds a presigned URL, a bearer credential for its object. So:

- every log record's message has each URL cut to scheme, host and path (userinfo dropped, query and fragment
  replaced by `?…`), whichever library logged it (httpx logs each request's URL at INFO); tracebacks are
  redacted the same way by the handler's formatter;
- the runpod SDK's logger prints each job's output (presigned URLs included) at DEBUG, straight to stdout where
  no redaction reaches, and defaults to DEBUG. It gets our level (`F5TTS_LOG_LEVEL`), but never below INFO:
  its DEBUG lines are for whoever sets `RUNPOD_LOG_LEVEL=DEBUG` explicitly (which is respected).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

# scheme://[userinfo@]host[:port][/path][?query][#fragment]; stops at whitespace and quoting characters.
_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#@\"'<>]*@)?(?P<host>[^\s/?#\"'<>]*)"
    r"(?P<path>[^\s?#\"'<>]*)(?P<query>\?[^\s#\"'<>]*)?(?P<fragment>#[^\s\"'<>]*)?"
)
_RUNPOD_LEVELS = {"DEBUG": "INFO", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact_urls(text: str) -> str:
    """`text` with every URL's userinfo removed and its query string and fragment replaced by `?…`."""

    def cut(match: re.Match[str]) -> str:
        hidden = "?…" if match["query"] or match["fragment"] else ""
        return f"{match['scheme']}{match['host']}{match['path']}{hidden}"

    return _URL.sub(cut, text) if "://" in text else text


class RedactingFormatter(logging.Formatter):
    """Redacts URLs in the whole formatted record, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


class _RedactingRecordFactory:
    """Wraps the process's log-record factory: every record it makes carries the redacted message."""

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self.base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return record


def install(level: str) -> None:
    """Configure the process's logging at `level` with URL redaction, and align the runpod SDK's logger."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingRecordFactory):
        # Every record, whichever handler (or test capture) receives it, carries the redacted message.
        logging.setLogRecordFactory(_RedactingRecordFactory(factory))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    runpod_level = _RUNPOD_LEVELS.get(level.upper(), "INFO")
    os.environ.setdefault("RUNPOD_LOG_LEVEL", runpod_level)  # read by runpod's logger when runpod is imported
    logger_module = sys.modules.get("runpod.serverless.modules.rp_logger")
    if logger_module is not None:  # already imported (tests, local runs): set the class-level default directly
        logger_module.RunPodLogger.level = os.environ["RUNPOD_LOG_LEVEL"].upper()
