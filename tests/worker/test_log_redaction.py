"""Worker logs carry no credentials: URLs lose userinfo and query strings, and the runpod SDK's logger follows
F5TTS_LOG_LEVEL. Checked by planting secrets and grepping what a worker process really prints."""

from __future__ import annotations

import textwrap

import pytest

from tests.support import run_python
from worker.log_redaction import redact_urls

PASSWORD, SIGNATURE = "PLANTED-PASSWORD-1234", "PLANTED-SIGNATURE-5678"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'HTTP Request: GET http://user:{PASSWORD}@host:8080/a.wav?X-Amz-Signature={SIGNATURE} "HTTP/1.1 200 OK"',
            'HTTP Request: GET http://host:8080/a.wav?… "HTTP/1.1 200 OK"',
        ),
        (
            f'{{"audio_url": "https://s3.x.com/b/k.wav?X-Amz-Signature={SIGNATURE}"}}',
            '{"audio_url": "https://s3.x.com/b/k.wav?…"}',
        ),
        (f"see https://{PASSWORD}@example.com#token={SIGNATURE}.", "see https://example.com?…"),
        ("no url here, 10:30 a.m.", "no url here, 10:30 a.m."),
        ("http://[::1]:80/x and ftp://h/p", "http://[::1]:80/x and ftp://h/p"),
    ],
)
def test_redact_urls(text: str, expected: str) -> None:
    assert redact_urls(text) == expected


CHILD = (
    textwrap.dedent(
        """
    import logging, threading, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from worker import log_redaction
    log_redaction.install(sys.argv[1])
    from worker.lean_imports import import_runpod
    runpod = import_runpod()
    from runpod.serverless.modules.rp_logger import RunPodLogger

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "4"); self.end_headers()
            self.wfile.write(b"RIFF")
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    from worker.fetch import fetch_url
    url = f"http://user:{PASSWORD}@127.0.0.1:{port}/ref.wav?X-Amz-Signature={SIGNATURE}"
    fetch_url(url, max_bytes=100, timeout_s=5, allow_private=True, field="audio")
    try:
        raise ValueError(f"failed on {url}")
    except ValueError:
        logging.getLogger("worker").exception("a failure naming %s", url)
    # What runpod's job loop does with every job's output (rp_http.py logs it at DEBUG).
    RunPodLogger().debug(f"output: https://bucket/k.wav?X-Amz-Signature={SIGNATURE}")
    RunPodLogger().info("runpod info line")
    server.shutdown()
    """
    )
    .replace("{PASSWORD}", PASSWORD)
    .replace("{SIGNATURE}", SIGNATURE)
)


@pytest.mark.integration  # starts a Python process
@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_a_worker_process_logs_no_planted_secret(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("RUNPOD_DEBUG_LEVEL", raising=False)
    result = run_python("-c", CHILD, level, timeout=120, check=True)
    output = result.stdout + result.stderr
    assert "HTTP Request: GET http://127.0.0.1:" in output, output  # httpx logged the fetch, redacted
    assert "Traceback" in output and "a failure naming http://127.0.0.1:" in output
    assert "runpod info line" in output
    assert PASSWORD not in output and SIGNATURE not in output, output
    # runpod's DEBUG lines (job outputs, printed where no redaction reaches) are not printed at all.
    assert "output: https://bucket/k.wav" not in output
    assert ("httpcore.connection" in output) is (level == "DEBUG")  # our own DEBUG logging is on when asked
