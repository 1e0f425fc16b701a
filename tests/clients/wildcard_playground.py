"""The playground listening on every address (`--host 0.0.0.0`), checked from inside a network namespace that holds
only a loopback interface, so the wildcard bind exposes nothing beyond the test (tests listen on loopback only).
Run by tests/clients/test_playground.py as `python -m tests.clients.wildcard_playground`; an assertion fails it.

No endpoint is reachable in there: a request the Host check lets through fails upstream (502), one it refuses is
403, so the two are told apart without a devstack."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
from f5tts_client import Client
from f5tts_client.playground import TOKEN_HEADER, Playground

NO_ENDPOINT = "http://127.0.0.1:9/v2/none"


def answers(pg: Playground, host: str, origin: str | None = None) -> tuple[int, int]:
    """(status of the page, status of the voice list) asked at 127.0.0.1 with this `Host` (and `Origin`)."""
    at = f"http://127.0.0.1:{pg.port}/"
    page = httpx.get(at, headers={"Host": host})
    headers = {"Host": host, "Origin": origin or f"http://{host}", TOKEN_HEADER: pg.token}
    return page.status_code, httpx.post(at + "api/voices/list", headers=headers, json={}).status_code


def check_the_host_rule() -> None:
    """Any IP literal in `Host` is accepted (a DNS-rebinding page can only send its own name), so are `localhost`
    and the names allowed; other names, another port or an Origin that is not the Host's are refused. The URLs are
    addresses a person can open."""
    with (
        Client(api_key="k", endpoint_url=NO_ENDPOINT, timeout=5) as client,
        Playground(client, "0.0.0.0", 0, allow_hosts=["Studio.lan"]) as pg,
    ):
        port = pg.port
        assert pg.url == f"http://127.0.0.1:{port}/" and not [url for url in pg.urls if "0.0.0.0" in url]
        let_through = (f"127.0.0.1:{port}", f"192.0.2.7:{port}", f"[2001:db8::7]:{port}", f"studio.lan:{port}")
        for host in (*let_through, f"localhost:{port}"):
            assert answers(pg, host) == (200, 502), host
        refused = (
            f"rebound.example:{port}",
            f"127.0.0.1:{port + 1}",
            "rebound.example",
            f"127.0.0.1.nip.io:{port}",
        )
        for host in refused:
            assert answers(pg, host) == (403, 403), host
        assert answers(pg, f"127.0.0.1:{port}", origin=f"http://studio.lan:{port}") == (200, 403)


def check_the_command() -> None:
    """`f5tts playground --host 0.0.0.0` warns loudly and prints URLs a person can open, loopback first."""
    env = {**os.environ, "RUNPOD_API_KEY": "k", "F5TTS_ENDPOINT_URL": NO_ENDPOINT}
    command = [sys.executable, "-m", "f5tts_client.cli", "playground", "--no-browser", "--port", "0"]
    command += ["--host", "0.0.0.0", "--allow-host", "studio.lan"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = re.fullmatch(r"playground (http://127\.0\.0\.1:(\d+)/)\n", process.stdout.readline())
        assert first, "the first URL is this machine's loopback"
        port = first.group(2)
        page = httpx.get(first.group(1), timeout=10)
        assert page.status_code == 200 and "Speak" in page.text
        assert httpx.get(first.group(1), headers={"Host": f"studio.lan:{port}"}, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "WARNING: the playground listens on 0.0.0.0" in err
    for line in out.splitlines():
        if line.startswith("playground "):
            assert re.fullmatch(rf"playground http://[^/]+:{port}/", line) and "0.0.0.0" not in line


if __name__ == "__main__":
    check_the_host_rule()
    check_the_command()
    print("wildcard checks passed")
