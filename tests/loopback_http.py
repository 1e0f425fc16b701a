"""A throwaway HTTP server on 127.0.0.1 for tests whose code under test fetches a URL (reference audio)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serve_get(respond: Callable[[str], tuple[int, bytes]]) -> Iterator[str]:
    """Answer every GET with `respond(path)` → (status, body), `path` with its query; yields the base URL
    (`http://127.0.0.1:<port>`, a free port) and stops the server at the end."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = respond(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
