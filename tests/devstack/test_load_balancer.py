"""The load-balancer emulator (devstack/load_balancer.py) as RunPod documents its load-balancing endpoints: the
Bearer key, routing only to workers whose health check says 200, "no workers available", responses streamed
through; and `python -m devstack up --endpoint-type load_balancer`. Stand-in HTTP workers keep these tests fast;
the real worker behind the same emulator is tested in tests/clients/ (openai SDK, client SDK, CLI)."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from devstack.load_balancer import HEALTHY, INITIALIZING, UNHEALTHY, LoadBalancerConfig
from devstack.testing import running_stack
from tests.devstack.helpers import assert_stack_gone, devstack_up, wait_until

HTTP_ECHO_WORKER = [sys.executable, str(Path(__file__).with_name("http_echo_worker.py"))]
pytestmark = pytest.mark.timeout(120)


def lb_stack(workers: int = 2, **options):
    return running_stack(workers, endpoint_type="load_balancer", worker_cmd=HTTP_ECHO_WORKER, **options)


def test_the_key_is_checked_and_requests_reach_healthy_workers_without_it():
    with lb_stack(2) as stack:
        url = f"{stack.base_url}/echo/v1/things?x=1"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        key = {"Authorization": f"Bearer {stack.api_key}"}
        answers = [httpx.post(url, headers=key, content=b"payload").json() for _ in range(6)]
        assert {a["path"] for a in answers} == {"v1/things"} and {a["query"] for a in answers} == {"x=1"}
        assert {a["body"] for a in answers} == {"payload"}
        assert {a["authorization"] for a in answers} == {None}  # the endpoint's key stays at the load balancer
        assert {a["worker"] for a in answers} == set(stack.workers)  # both workers serve
        assert _status_of_oversized_post(stack.port, stack.api_key) == 413  # RunPod's 30 MB payload limit


def test_responses_stream_through_as_the_worker_sends_them():
    with lb_stack(1) as stack:
        started = time.perf_counter()
        arrivals = []
        with httpx.stream(
            "GET", f"{stack.base_url}/slow?n=3&gap=0.6", headers={"Authorization": f"Bearer {stack.api_key}"}
        ) as r:
            assert r.headers["x-worker"] == "local-lb-worker-1"
            for line in r.iter_lines():
                arrivals.append((line, time.perf_counter() - started))
        assert [line for line, _ in arrivals] == ["part 0", "part 1", "part 2"]
        assert arrivals[1][1] - arrivals[0][1] > 0.4 and arrivals[2][1] - arrivals[1][1] > 0.4


def test_websockets_pass_through_with_the_same_key_check_and_close_codes_both_ways():
    with lb_stack(1) as stack:
        ws_url = stack.base_url.replace("http://", "ws://")
        key = {"Authorization": f"Bearer {stack.api_key}"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{ws_url}/ws/echo", additional_headers=headers, proxy=None).close()
            assert refused.value.response.status_code == 401
            assert b"missing or invalid API key" in refused.value.response.body
        with pytest.raises(InvalidStatus) as refused:  # the worker's own refusal comes back as it gave it
            connect(f"{ws_url}/ws/refuse", additional_headers=key, proxy=None).close()
        assert refused.value.response.status_code == 403

        headers = {**key, "xi-api-key": "app-key"}
        with connect(f"{ws_url}/ws/echo?x=1&y=2", additional_headers=headers, proxy=None) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello == {
                "worker": "local-lb-worker-1",
                "path": "/ws/echo",
                "raw_path": "/ws/echo",
                "query": "x=1&y=2",
                "authorization": None,  # the endpoint's key stays at the load balancer
                "xi-api-key": "app-key",  # the app's own headers reach the worker
            }
            ws.send("text message")
            assert ws.recv(timeout=10) == "text message"
            ws.send(b"\x00\x01binary")
            assert ws.recv(timeout=10) == b"\x00\x01binary"
            ws.send("close 4001 the worker is done")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        assert (ws.close_code, ws.close_reason) == (4001, "the worker is done")  # the worker's close reaches us

        with connect(f"{ws_url}/ws/echo", additional_headers=key, proxy=None) as ws:
            ws.recv(timeout=10)
            ws.close(4002, "the client is done")
        wait_until(lambda: httpx.get(f"{stack.base_url}/ws/closes", headers=key).json(), 10, "the close to arrive")
        assert httpx.get(f"{stack.base_url}/ws/closes", headers=key).json() == [[4002, "the client is done"]]
        wait_until(lambda: stack._call(lambda: stack.balancer.backends["local-lb-worker-1"].in_flight) == 0, 10, "idle")


def test_a_worker_gets_requests_only_once_its_health_check_says_200():
    with lb_stack(1) as stack:
        key = {"Authorization": f"Bearer {stack.api_key}"}
        late = stack.add_worker({"ECHO_READY_AFTER_S": "2"})  # as RunPod scales up: 204 for 2 s, then 200
        wait_until(lambda: late in stack.workers and stack.worker_states()[late] == INITIALIZING, 20, "the new worker")
        asked = 0
        while True:
            served_by = httpx.get(f"{stack.base_url}/echo/x", headers=key).json()["worker"]
            if stack.worker_states()[late] != INITIALIZING:  # still initialising after the answer: it was before too
                break
            assert served_by == "local-lb-worker-1"
            asked += 1
            time.sleep(0.1)
        assert asked >= 5
        wait_until(lambda: stack.worker_states()[late] == HEALTHY, 10, "the new worker to be healthy")
        served = {httpx.get(f"{stack.base_url}/echo/x", headers=key).json()["worker"] for _ in range(6)}
        assert served == {"local-lb-worker-1", late}


def test_with_no_healthy_worker_a_request_waits_then_gets_no_workers_available():
    config = LoadBalancerConfig(no_worker_timeout_s=1.0)
    with lb_stack(1, worker_env={"ECHO_HEALTH_STATUS": "503"}, config=config) as stack:
        assert stack.worker_states() == {"local-lb-worker-1": UNHEALTHY}
        started = time.perf_counter()
        answer = httpx.get(f"{stack.base_url}/echo/x", headers={"Authorization": f"Bearer {stack.api_key}"})
        assert answer.status_code == 503 and answer.json() == {"error": "no workers available"}
        assert time.perf_counter() - started >= 0.9


def test_a_worker_that_never_answers_its_health_check_fails_the_start_with_its_state():
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]  # starts, never serves
    stack = running_stack(1, endpoint_type="load_balancer", worker_cmd=silent, ready_timeout_s=1.0)
    with pytest.raises(
        RuntimeError, match=r"workers not healthy after 1 s \(\{'local-lb-worker-1': 'initializing'\}\)"
    ):
        stack.__enter__()


def test_up_with_the_load_balancer_prints_ready_and_stops_on_sigterm(tmp_path):
    log_path = tmp_path / "up.log"
    args = [
        "--endpoint-type",
        "load_balancer",
        "--workers",
        "1",
        "--port",
        "0",
        "--model",
        "none",
        "--worker-cmd",
        " ".join(HTTP_ECHO_WORKER),
        "--quiet",
    ]
    with devstack_up(args, log_path) as (proc, ready):
        match = re.fullmatch(r"ready (http://127\.0\.0\.1:\d+) (\S+)\n", ready)
        assert match, f"unexpected first line {ready!r}: {log_path.read_text()[-2000:]}"
        base_url, api_key = match.groups()
        answer = httpx.get(f"{base_url}/echo/hi", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["path"] == "hi"
        pids = [int(p) for p in re.findall(r"started local-lb-worker-\d \(pid (\d+)\)", log_path.read_text())]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert_stack_gone(pids, f"{base_url}/ping")


def _status_of_oversized_post(port: int, api_key: str) -> int:
    """POST a request announcing 31 MB (none of it sent: the limit is checked on the header) over a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST /echo/x HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Length: {31 * 2**20}\r\n\r\n".encode()
        )
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])
