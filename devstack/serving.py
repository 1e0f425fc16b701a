"""An ASGI app served by uvicorn on 127.0.0.1, from its own event loop in a background thread of this process.

Both local stacks run their emulator this way (the queue emulator in stack.py, the load balancer in
load_balancer.py): the caller's thread stays free, and `call()` runs code on the server's loop, where the app's
state lives (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


class LoopbackServer:
    """`start(make_app)` binds 127.0.0.1:`port` (0: any free port, then `port` says which) and serves the app."""

    def __init__(self, port: int, *, what: str, thread_name: str, error: type[Exception] = RuntimeError) -> None:
        self.port = port
        self.what = what  # for errors: "the <what> did not start"
        self.thread_name = thread_name
        self.error = error
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, make_app: Callable[[], Any], *, start_timeout_s: float = 15.0, **uvicorn_options: Any) -> None:
        """`make_app()` is called on the server's loop (an app may make asyncio objects bound to it)."""
        self._sock = sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            config = uvicorn.Config(
                make_app(), log_level="warning", access_log=False, timeout_graceful_shutdown=3, **uvicorn_options
            )
            self._server = uvicorn.Server(config)
            await self._server.serve(sockets=[sock])

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), name=self.thread_name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while self._server is None or not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise self.error(f"the {self.what} did not start")
            time.sleep(0.02)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run `fn(*args)` on the server's event loop and return the result."""
        if self.loop is None:
            raise self.error(f"the {self.what} is not running")

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
