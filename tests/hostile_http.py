"""Hostile HTTP clients on raw sockets, for the tests of the worker's http mode and the load-balancer emulator:
a client with a tiny receive window, an endless chunked body, an endless header, and the peak memory of this
process while one of them runs (the servers under test run in this process, on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """How far this process's resident memory rose above its level at entry, sampled every few ms; call the
    yielded function after the block for the peak growth in bytes."""
    start = rss_bytes()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.003)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak - start
    finally:
        done.set()
        sampler.join(5)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, *, receive_buffer: int | None = None, timeout_s: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting: it sets the window the server may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout_s)
    sock.connect(("127.0.0.1", port))
    return sock


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_request(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    head = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
    return request_head("POST", path, head) + data


def read_response(sock: socket.socket, deadline_s: float = 30.0) -> RawResponse:
    """One response, its body read to its Content-Length, its last chunk, or EOF."""
    sock.settimeout(deadline_s)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            raise ConnectionError(f"connection closed before a response head: {data[:200]!r}")
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "-1"))
    chunked = headers.get("transfer-encoding") == "chunked"
    with contextlib.suppress(OSError):
        while not (chunked and body.endswith(b"0\r\n\r\n")) and (len(body) < length or length < 0):
            part = sock.recv(65536)
            if not part:
                break
            body += part
    return RawResponse(int(status_line.split()[1]), headers, _dechunked(body) if chunked else body)


def _dechunked(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def send_endlessly(sock: socket.socket, first: bytes, piece: bytes, total_bytes: int) -> threading.Thread:
    """Send `first`, then `piece` over and over up to `total_bytes`, on a thread, until the server stops taking
    them (it closed, or stopped reading for a few seconds). Join the thread to wait for it."""

    def send() -> None:
        sent = 0
        with contextlib.suppress(OSError):  # reset, broken pipe, or the send timed out: the server stopped
            sock.sendall(first)
            while sent < total_bytes:
                sock.sendall(piece)
                sent += len(piece)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def closed_by_server(sock: socket.socket, deadline_s: float) -> bool:
    """Whether the server closes the connection within `deadline_s` (what it sent before is read and dropped)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            if not sock.recv(1 << 20):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False
