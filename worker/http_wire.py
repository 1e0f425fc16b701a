"""uvicorn with a bounded request head: the worker's http mode and the devstack's load-balancer emulator run on it.

uvicorn's default parser (httptools) takes headers of any size, and holds them all before the app (and its key
check) sees the request: one 100 MB header costs the process that much memory. h11 keeps at most
`MAX_HEADER_BYTES` of an unfinished request head, and refuses the rest; `BoundedH11Protocol` answers that with
431 (Request Header Fields Too Large, the status h11 hints at) where uvicorn answers every parse error with 400.
Only this module imports uvicorn's protocol internals.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

# The request line and headers together. Browsers and SDKs send a few kB; 64 kB leaves room for long cookies.
MAX_HEADER_BYTES = 64 * 1024


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 431 rather than 400 when the request head passes its bound."""

    def send_400_response(self, msg: str) -> None:
        buffered, _closed = self.conn.trailing_data
        if len(buffered) <= (self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES):
            super().send_400_response(msg)
            return
        self.logger.warning("refused a request head over %d bytes", self.config.h11_max_incomplete_event_size)
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\n"
            b"request header fields too large\n"
        )
        self.transport.write(head)
        self.transport.close()


def bounded_server_options(max_header_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    """`uvicorn.Config` options for a server whose request heads are bounded."""
    return {"http": BoundedH11Protocol, "h11_max_incomplete_event_size": max_header_bytes}
