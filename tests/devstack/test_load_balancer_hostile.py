"""The load-balancer emulator (devstack/load_balancer.py) under hostile clients, on raw sockets: a chunked body
without end stops at the payload limit, a header without end at the head bound (431), and the path reaches the
worker as it was sent (`%2f` stays encoded), WebSocket handshakes alike, or is refused (400). The emulator runs in this process, so its memory
is this process's; the workers are stand-ins (tests/devstack/http_echo_worker.py).

The worker's own server under the same clients is tested in tests/worker/test_http_hostile.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from devstack.load_balancer import LoadBalancerConfig
from tests.devstack.test_load_balancer import lb_stack
from tests.hostile_http import chunk, connect, peak_rss_growth, read_response, request_head, send_endlessly

pytestmark = pytest.mark.timeout(120)

MB = 2**20


def test_a_chunked_body_stops_at_the_payload_limit_with_memory_flat() -> None:
    with lb_stack(1, config=LoadBalancerConfig(payload_limit_bytes=1 * MB)) as stack:
        sock = connect(stack.port, timeout_s=5)
        head = request_head(
            "POST", "/echo/x", {"Authorization": f"Bearer {stack.api_key}", "Transfer-Encoding": "chunked"}
        )
        with peak_rss_growth() as growth:
            sender = send_endlessly(sock, head, chunk(b"a" * 65536), total_bytes=64 * MB)
            response = read_response(sock)
            sock.close()
            sender.join(30)
        small = httpx.post(
            f"{stack.base_url}/echo/x", content=b"x" * 1000, headers={"Authorization": f"Bearer {stack.api_key}"}
        )
    assert response.status == 413 and "1 MB limit" in response.json()["error"]
    assert growth() < 24 * MB, growth() / MB  # a proxy that buffered the body would have held 64 MB
    assert small.status_code == 200 and small.json()["body"] == "x" * 1000


def test_a_header_without_end_is_refused_with_431_and_memory_stays_flat() -> None:
    with lb_stack(1) as stack:
        sock = connect(stack.port, timeout_s=5)
        with peak_rss_growth() as growth:
            sender = send_endlessly(sock, b"GET /echo/x HTTP/1.1\r\nX-Big: ", b"a" * 65536, total_bytes=64 * MB)
            response = read_response(sock)
            sock.close()
            sender.join(30)
    assert response.status == 431
    assert growth() < 16 * MB, growth() / MB


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ("/echo/v1/audio/voices/..%2f..%2fping", "/echo/v1/audio/voices/..%2f..%2fping"),
        ("/echo/a%00b", "/echo/a%00b"),
        ("/echo/x?q=%2f..&r=1", "/echo/x"),
    ],
)
def test_the_path_reaches_the_worker_as_it_was_sent(sent: str, received: str) -> None:
    with lb_stack(1) as stack:
        sock = connect(stack.port, timeout_s=10)
        sock.sendall(request_head("DELETE", sent, {"Authorization": f"Bearer {stack.api_key}", "Content-Length": "0"}))
        response = read_response(sock)
        sock.close()
    assert response.status == 200, response.body
    assert response.json()["raw_path"] == received
    if "?" in sent:
        assert response.json()["query"] == "q=%2f..&r=1"


def test_a_path_the_worker_would_get_rewritten_is_refused_with_400() -> None:
    with lb_stack(1) as stack:
        sock = connect(stack.port, timeout_s=10)
        sock.sendall(request_head("GET", "/echo/a/../../ping", {"Authorization": f"Bearer {stack.api_key}"}))
        response = read_response(sock)
        sock.close()
    assert response.status == 400 and "cannot be forwarded" in response.json()["error"]
    assert "Traceback" not in response.body.decode()


def test_a_websocket_path_reaches_the_worker_as_it_was_sent_or_is_refused_with_400() -> None:
    with lb_stack(1) as stack:
        key = {"Authorization": f"Bearer {stack.api_key}"}
        ws_url = stack.base_url.replace("http://", "ws://")
        for sent in ("/ws/echo/..%2f..%2fping?q=%2f..", "/ws/echo/a%00b", "/ws/echo/no%3Fsuch"):
            with ws_connect(ws_url + sent, additional_headers=key, proxy=None, open_timeout=10) as ws:
                hello = json.loads(ws.recv(timeout=10))
            assert hello["raw_path"] + (f"?{hello['query']}" if hello["query"] else "") == sent
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(ws_url + "/ws/echo/a/../../ping", additional_headers=key, proxy=None).close()
        assert refused.value.response.status_code == 400 and b"cannot be forwarded" in refused.value.response.body
