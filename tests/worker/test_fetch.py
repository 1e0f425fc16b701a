"""read_audio_source: base64 decoding and URL fetching with caps, timeouts and the SSRF guard.

URL tests run against a real http.server on 127.0.0.1 (threaded, every handler bounded in time); reaching it
needs `allow_private_urls`, so the tests without it also prove that a loopback server is never contacted.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.config import WorkerSettings
from worker.fetch import read_audio_source, refusal_reason
from worker.schema import AudioSource, ContractError, ErrorCode

AUDIO = bytes(range(256)) * 16  # 4 KiB of "audio"
CAP = 16 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str]]  # (path, Host header), set per server

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Transfer-Encoding" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, pieces: Iterator[bytes], pause_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for piece in pieces:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
                time.sleep(pause_s)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up, as it should
            pass

    def _trickle_headers(self) -> None:
        """One byte of the response head every 0.2 s, for 4 s: no single read ever waits long."""
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 18:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client hung up, as it should
            pass
        self.close_connection = True

    def _slow(self) -> None:
        time.sleep(1.5)
        self._send(200, AUDIO)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        address = self.server.server_address
        assert isinstance(address, tuple)  # an IPv4 socket's (host, port)
        port = address[1]
        routes = {
            "/audio.wav": lambda: self._send(200, AUDIO, {"Content-Type": "audio/wav"}),
            "/declared-too-big": lambda: self._send(200, b"x" * (CAP + 1)),
            "/streamed-too-big": lambda: self._chunked(iter([b"x" * 4096] * 8)),
            "/gzip-bomb": lambda: self._send(200, gzip.compress(b"\0" * (CAP * 8)), {"Content-Encoding": "gzip"}),
            "/empty": lambda: self._send(200),
            "/missing": lambda: self._send(404, b"not here"),
            "/redirect": lambda: self._send(302, headers={"Location": "/audio.wav"}),
            "/redirect-loop": lambda: self._send(302, headers={"Location": "/redirect-loop"}),
            "/redirect-to-metadata": lambda: self._send(302, headers={"Location": "http://169.254.169.254/latest/"}),
            "/redirect-to-ftp": lambda: self._send(302, headers={"Location": f"ftp://127.0.0.1:{port}/a.wav"}),
            "/slow": self._slow,
            "/trickle": lambda: self._chunked(iter([b"x" * 16] * 10), pause_s=0.2),
            "/trickle-headers": self._trickle_headers,
        }
        routes.get(self.path, lambda: self._send(404))()


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def settings(*, allow_private_urls: bool = False, fetch_timeout_s: float = 5.0) -> WorkerSettings:
    return WorkerSettings(
        _env_file=None, max_audio_bytes=CAP, fetch_timeout_s=fetch_timeout_s, allow_private_urls=allow_private_urls
    )


def fetch_error(src: AudioSource, worker: WorkerSettings) -> ContractError:
    with pytest.raises(ContractError) as err:
        read_audio_source(src, worker, "ref_audio")
    return err.value


# ------------------------------------------------------------------------------------------------ base64
def test_base64_is_decoded() -> None:
    encoded = base64.b64encode(AUDIO).decode()
    assert read_audio_source(AudioSource(base64=encoded), settings(), "audio") == AUDIO
    assert read_audio_source(AudioSource(base64="data:audio/wav;base64," + encoded), settings(), "audio") == AUDIO
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))  # MIME line breaks
    assert read_audio_source(AudioSource(base64=wrapped), settings(), "audio") == AUDIO


@pytest.mark.parametrize("encoded", ["not base64!", "QUJD=", "QUJD====", "QUJDRA", "QU=JD", "=QUJ", "QUJD\x00RA==", ""])
def test_malformed_base64_is_invalid_input(encoded: str) -> None:
    err = fetch_error(AudioSource(base64=encoded), settings())
    assert err.code is ErrorCode.invalid_input and err.body.field == "ref_audio.base64"


def test_oversize_base64_is_refused_before_decoding() -> None:
    # Not valid base64 at all: had it been decoded, this would be invalid_input, not audio_too_large.
    for length in (base64_len := len(base64.b64encode(b"x" * (CAP + 3))), base64_len * 3):
        err = fetch_error(AudioSource(base64="!" * length), settings())
        assert err.code is ErrorCode.audio_too_large and err.body.field == "ref_audio.base64"
    # Exactly at the cap is fine.
    exact = base64.b64encode(b"y" * CAP).decode()
    assert len(read_audio_source(AudioSource(base64=exact), settings(), "audio")) == CAP


# ------------------------------------------------------------------------------------------------ url guard
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/audio.wav",
        "http://localhost:{port}/audio.wav",
        "http://[::1]:{port}/audio.wav",
        "http://[::ffff:127.0.0.1]:{port}/audio.wav",
        "http://0.0.0.0:{port}/audio.wav",
    ],
)
def test_loopback_urls_are_refused(http_server, url: str) -> None:
    base, seen = http_server
    port = base.rsplit(":", 1)[1]
    seen.clear()
    err = fetch_error(AudioSource(url=url.format(port=port)), settings())
    assert err.code is ErrorCode.fetch_failed and err.body.field == "ref_audio.url"
    assert "refusing" in err.body.message
    assert seen == []  # the server was never contacted


@pytest.mark.parametrize("allow_private", [False, True])
def test_metadata_address_is_always_refused(allow_private: bool) -> None:
    started = time.monotonic()
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.100.100.200/"):
        err = fetch_error(AudioSource(url=url), settings(allow_private_urls=allow_private))
        assert err.code is ErrorCode.fetch_failed and err.body.field == "ref_audio.url"
        assert "refusing" in err.body.message
    assert time.monotonic() - started < 2  # refused before any connection attempt


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.wav", "file:///etc/passwd", "gopher://x/", "http:///nohost", "//x/a"]
)
def test_non_http_urls_are_invalid_input(url: str) -> None:
    err = fetch_error(AudioSource(url=url), settings(allow_private_urls=True))
    assert err.code is ErrorCode.invalid_input and err.body.field == "ref_audio.url"


def test_a_host_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS is faked here (nothing public is reachable offline): a name resolving to a public and a private
    # address must be refused as a whole, since a connection could land on either.
    def fake_getaddrinfo(host, port, *args, **kwargs):
        assert host == "rebind.example"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    err = fetch_error(AudioSource(url="http://rebind.example/a.wav"), settings())
    assert err.code is ErrorCode.fetch_failed and "10.0.0.5" in err.body.message


def test_unresolvable_host_is_fetch_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    err = fetch_error(AudioSource(url="https://no-such-host.example/a.wav"), settings())
    assert err.code is ErrorCode.fetch_failed and "resolve" in err.body.message


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.1.1", True),
        ("100.64.0.1", True),  # carrier-grade NAT: not public
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("::ffff:8.8.8.8", False),
        ("2002:a9fe:101::1", True),  # 6to4 of 169.254.1.1
        ("2002:808:808::1", False),  # 6to4 of 8.8.8.8
        ("2002:7f00:1::1", True),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", True),  # 6to4 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # Teredo, client 127.0.0.1 (stored inverted)
        ("fec0::1", True),  # deprecated site-local
        ("::ffff:0:a00:1", True),  # IPv4-translated 10.0.0.1
        ("::7f00:1", True),  # IPv4-compatible 127.0.0.1
        ("64:ff9b:1::a00:1", True),  # local-use NAT64 of 10.0.0.1
    ],
)
def test_refusal_reason(address: str, refused: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (refusal_reason(ip, allow_private=False) is not None) is refused
    assert refusal_reason(ip, allow_private=True) is None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "::ffff:0:a9fe:a9fe",
        "::a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254 (stored inverted)
        "fd00:ec2::254",
    ],
)
def test_metadata_is_refused_in_every_ipv6_wrapping_even_with_private_urls_allowed(address: str) -> None:
    reason = refusal_reason(ipaddress.ip_address(address), allow_private=True)
    assert reason is not None and "metadata" in reason


# ------------------------------------------------------------------------------------------------ url fetch
def test_private_url_allowed_when_configured(http_server) -> None:
    base, seen = http_server
    port = base.rsplit(":", 1)[1]
    assert read_audio_source(AudioSource(url=f"{base}/audio.wav"), settings(allow_private_urls=True), "a") == AUDIO
    # By name: the connection goes to the checked address, but Host stays the URL's.
    seen.clear()
    url = f"http://localhost:{port}/audio.wav"
    assert read_audio_source(AudioSource(url=url), settings(allow_private_urls=True), "a") == AUDIO
    assert seen == [("/audio.wav", f"localhost:{port}")]


def test_redirects_are_followed_and_rechecked(http_server) -> None:
    base, seen = http_server
    private_ok = settings(allow_private_urls=True)
    seen.clear()
    assert read_audio_source(AudioSource(url=f"{base}/redirect"), private_ok, "a") == AUDIO
    assert [path for path, _ in seen] == ["/redirect", "/audio.wav"]

    err = fetch_error(AudioSource(url=f"{base}/redirect-to-metadata"), private_ok)
    assert err.code is ErrorCode.fetch_failed and "metadata" in err.body.message
    err = fetch_error(AudioSource(url=f"{base}/redirect-to-ftp"), private_ok)
    assert err.code is ErrorCode.fetch_failed and "ftp" in err.body.message
    err = fetch_error(AudioSource(url=f"{base}/redirect-loop"), private_ok)
    assert err.code is ErrorCode.fetch_failed and "redirects" in err.body.message


@pytest.mark.parametrize("path", ["/declared-too-big", "/streamed-too-big", "/gzip-bomb"])
def test_size_cap(http_server, path: str) -> None:
    base, _ = http_server
    err = fetch_error(AudioSource(url=base + path), settings(allow_private_urls=True))
    assert err.code is ErrorCode.audio_too_large and err.body.field == "ref_audio.url"


@pytest.mark.parametrize(("path", "expected"), [("/missing", "HTTP 404"), ("/empty", "empty")])
def test_http_failures(http_server, path: str, expected: str) -> None:
    base, _ = http_server
    err = fetch_error(AudioSource(url=base + path), settings(allow_private_urls=True))
    assert err.code is ErrorCode.fetch_failed and expected in err.body.message


@pytest.mark.parametrize("path", ["/slow", "/trickle", "/trickle-headers"])
def test_timeout_bounds_the_whole_fetch(http_server, path: str) -> None:
    # /slow answers after 1.5 s; /trickle sends 16 bytes every 0.2 s for 2 s and /trickle-headers one byte of
    # the status line and headers every 0.2 s: per-read timeouts alone would never stop either.
    base, _ = http_server
    started = time.monotonic()
    err = fetch_error(AudioSource(url=base + path), settings(allow_private_urls=True, fetch_timeout_s=0.5))
    elapsed = time.monotonic() - started
    assert err.code is ErrorCode.fetch_failed
    # The message says what happened: the whole fetch ran out of its time, whose length it names.
    assert "within the 0.5 s limit" in err.body.message
    assert elapsed < 1.2
