"""`f5tts playground`: a local web page to hear, compare and manage voices, served by a small proxy.

The page (`playground.html`, package data, plain JS) talks only to this server; this server talks to the endpoint
the client is configured for (queue or load balancer) through the SDK's `Client`. So the API key stays in this
process: the page never sees it, and no request the page sends carries it.

Since this server holds the key, every API call must prove it comes from the page it served:
- the `Host` header must name this server: on loopback, the address it is bound to or `localhost`; bound beyond
  loopback, any IP address or a name the user allowed (`--allow-host`). A DNS-rebinding page reaches the server
  under the attacker's own name, which is none of these: rebinding needs a name, never an IP literal;
- the `Origin` header must be the origin of that same `Host` (every browser sends one on a POST);
- the `X-Playground-Token` header must carry the random token embedded in the served page. A page of another
  origin cannot read that token, and a custom header on a cross-origin request needs a CORS preflight, which is
  never granted.

The standard library's threaded HTTP server is enough for one person's page on loopback (a thread per request;
a streaming synthesis holds one), so the client package keeps its two dependencies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import json
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Generator, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, TextIO

from f5tts_client._audio_sink import STREAMABLE_FORMATS, AudioSink
from f5tts_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    EndpointNotFound,
    F5TTSError,
    JobTimeout,
    WorkerError,
)
from f5tts_client._generated import models
from f5tts_client._generated.params import OPTIONS
from f5tts_client._sync._client import Client
from f5tts_client._types import AudioChunk

TOKEN_HEADER = "X-Playground-Token"
LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 30 * 1024 * 1024  # a reference clip, base64-encoded, with room to spare
# The formats a browser can decode; the rest of the contract's (raw pcm, aac) are for other players.
PAGE_FORMATS = ("wav", "mp3", "ogg", "flac")
# The synthesis settings the page offers, as the contract describes them (range, default).
PAGE_SETTINGS = ("speed", "seed", "nfe_step", "format")
# Word timings arrive with the word-timings contract; without them the page simply highlights nothing.
WORD_TIMINGS = "word_timestamps" in models.SynthesizeInput.model_fields
# The result fields the page gets: no presigned URL (a credential of the bucket), no object key.
HIDDEN_RESULT_FIELDS = {"audio_url", "expires_at", "key", "audio_base64"}

# What a person reads in the page's alert, by the worker's error code (the worker's own detail follows).
PLAIN_WORDS = {
    "invalid_input": "The service did not accept these settings",
    "voice_not_found": "That voice does not exist (any more); pick another one",
    "voice_exists": "A voice with that name already exists; tick “Replace” to overwrite it",
    "audio_unreadable": "The reference audio could not be read; try a WAV, MP3 or FLAC file",
    "audio_too_large": "The reference audio is too large",
    "reference_too_long": "The reference audio is too long",
    "output_too_large": "The speech would be too large; use shorter text or a compressed format",
    "model_unavailable": "The service could not load its model; try again later",
    "storage_error": "The service could not reach its storage; try again later",
}


class PageError(Exception):
    """A request the page sent that cannot be served, with the HTTP status and the words the page shows."""

    def __init__(self, status: HTTPStatus, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def plain_message(exc: F5TTSError) -> tuple[HTTPStatus, str, str]:
    """HTTP status, plain words and code for a failure of the endpoint."""
    if isinstance(exc, WorkerError):
        lead = PLAIN_WORDS.get(exc.code, "The service could not do it")
        status = HTTPStatus.CONFLICT if exc.code == "voice_exists" else HTTPStatus.UNPROCESSABLE_ENTITY
        return status, f"{lead} ({exc}).", exc.code
    if isinstance(exc, (AuthenticationError, EndpointNotFound)):
        return HTTPStatus.BAD_GATEWAY, "The endpoint refused the playground's API key, or does not exist.", "auth"
    if isinstance(exc, JobTimeout):
        return HTTPStatus.GATEWAY_TIMEOUT, "The service took too long; try again.", "timeout"
    if isinstance(exc, (APIConnectionError, APIStatusError)):
        return HTTPStatus.BAD_GATEWAY, "The service cannot be reached right now; try again later.", "unavailable"
    return HTTPStatus.BAD_GATEWAY, f"Something went wrong: {exc}", "failed"


def page_config() -> dict[str, Any]:
    """What the page needs to build its form: the contract's ranges and defaults, and what the endpoint can do."""
    options = {o.name: o for o in OPTIONS["synthesize"]}
    settings = {
        name: {"default": options[name].default, "min": options[name].minimum, "max": options[name].maximum}
        for name in PAGE_SETTINGS
    }
    formats = [f for f in options["format"].choices if f in PAGE_FORMATS]
    return {
        "settings": settings,
        "formats": formats,
        "streamable": [f for f in formats if f in STREAMABLE_FORMATS],
        "word_timings": WORD_TIMINGS,
    }


class Playground:
    """The playground server: `start()` binds and serves in a thread, `url` is where the page is, `stop()` ends it.

    `host` is any address or name to listen on, IPv4 or IPv6 (`0.0.0.0` and `::` listen on every address).
    `allow_hosts` are further names the page may be reached by when the server listens beyond loopback."""

    def __init__(self, client: Client, host: str = LOOPBACK, port: int = 0, allow_hosts: Iterable[str] = ()) -> None:
        self.client = client
        self.token = secrets.token_urlsafe(32)
        playground = self

        class Handler(_Handler):
            server_playground = playground

        family = _address_family(host, port)

        class Server(ThreadingHTTPServer):
            address_family = family

        self._server = Server((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        bound = str(self._server.server_address[0])
        self.loopback = _is_loopback(bound)
        # Names for the Host header: with a loopback bind only its address and `localhost`; beyond loopback any IP
        # literal (see host_allowed), `localhost`, the name it was bound by and the names allowed.
        self.names = (
            {"localhost", bound} if self.loopback else {"localhost", host.lower(), *map(str.lower, allow_hosts)}
        )
        wildcard = (bound_ip := _ip(bound)) is not None and bound_ip.is_unspecified
        addresses = _machine_addresses(family) if wildcard else [bound if _ip(host) is not None else host]
        self.urls = [f"http://{_url_host(address)}:{self.port}/" for address in addresses]
        self._thread: threading.Thread | None = None

    def host_allowed(self, header: str) -> bool:
        """Whether a request's `Host` header names this server (see the module's docstring)."""
        name, port = _split_host_header(header)
        if (80 if port is None else port) != self.port or not name:
            return False
        return name in self.names or (not self.loopback and _ip(name) is not None)

    @property
    def url(self) -> str:
        """The page's address for a browser on this machine (the first of `urls`)."""
        return self.urls[0]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="f5tts-playground", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C), then close the socket."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Playground:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def page(self) -> bytes:
        html = resources.files("f5tts_client").joinpath("playground.html").read_text("utf-8")
        config = json.dumps(page_config()).replace("</", "<\\/")  # inside a <script> element
        return html.replace("{{CONFIG}}", config).replace("{{TOKEN}}", self.token).encode("utf-8")

    # ------------------------------------------------------------------------------------------ API calls
    def list_voices(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"voices": [v.model_dump(mode="json") for v in self.client.voices.list()]}

    def upload_voice(self, body: dict[str, Any]) -> dict[str, Any]:
        audio = _decode_base64(body.get("audio_base64"), "Choose a reference audio file, or record one.")
        info = self.client.voices.upload(
            _text(body, "name", "Give the voice a name."),
            audio,
            _text(body, "text", "Type the transcript: what is said in the reference audio."),
            overwrite=body.get("overwrite") is True,
        )
        return info.model_dump(mode="json")

    def delete_voice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.voices.delete(_text(body, "name", "Pick a voice to delete.")).model_dump(mode="json")

    def speak(self, body: dict[str, Any]) -> Generator[dict[str, Any]]:
        """The items the page plays: each chunk as it is generated (streamable formats), then the whole take."""
        text = _text(body, "text", "Type some text to speak.")
        fmt = body.get("format", "wav")
        if fmt not in PAGE_FORMATS:
            raise PageError(HTTPStatus.BAD_REQUEST, f"Pick one of the formats {', '.join(PAGE_FORMATS)}.")
        values: dict[str, Any] = {k: body[k] for k in ("voice", "speed", "seed", "nfe_step") if body.get(k) is not None}
        if WORD_TIMINGS and body.get("word_timestamps") is True:
            values["word_timestamps"] = True
        if fmt not in STREAMABLE_FORMATS:
            result = self.client.synthesize(text, format=fmt, delivery="base64", **values)
            yield _take(result.model_dump(mode="json", exclude=HIDDEN_RESULT_FIELDS), result.read(), fmt)
            return
        joined = io.BytesIO()
        sink = AudioSink(joined, fmt)
        with self.client.synthesize_stream(text, format=fmt, **values) as stream:
            for chunk in stream:
                sink.write(chunk.audio)
                yield _chunk_item(chunk)
        sink.close()
        assert stream.summary is not None  # an exhausted stream has its summary (or raised)
        yield _take(stream.summary.model_dump(mode="json"), joined.getvalue(), fmt)


ROUTES: dict[str, Callable[[Playground, dict[str, Any]], Any]] = {
    "/api/voices/list": Playground.list_voices,
    "/api/voices/upload": Playground.upload_voice,
    "/api/voices/delete": Playground.delete_voice,
    "/api/speak": Playground.speak,
}


def _chunk_item(chunk: AudioChunk) -> dict[str, Any]:
    return {**chunk.model_dump(mode="json"), "type": "chunk"}


def _take(fields: dict[str, Any], audio: bytes, fmt: str) -> dict[str, Any]:
    """The last item: the whole take as one file, for replay and download."""
    return {**fields, "type": "take", "format": fmt, "audio_base64": base64.b64encode(audio).decode("ascii")}


def _text(body: dict[str, Any], field: str, missing: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PageError(HTTPStatus.BAD_REQUEST, missing)
    return value


def _decode_base64(value: Any, missing: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise PageError(HTTPStatus.BAD_REQUEST, missing)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PageError(HTTPStatus.BAD_REQUEST, "The reference audio did not arrive intact; choose it again.") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an IP address, or None when it is a name."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_loopback(address: str) -> bool:
    return address == "localhost" or ((ip := _ip(address)) is not None and ip.is_loopback)


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 or IPv6, as `host` resolves for listening (ThreadingHTTPServer alone is IPv4 only)."""
    try:
        return socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"{host!r} is no address of this machine ({exc.strerror})") from None


def _machine_addresses(family: socket.AddressFamily) -> list[str]:
    """Addresses a person can open for a wildcard bind: loopback first (the browser on this machine), then this
    machine's own, as its host name resolves and as the route to the outside goes (no packet is sent)."""
    loopback = "::1" if family == socket.AF_INET6 else LOOPBACK
    found = [loopback]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM):
            found.append(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(("2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1", 9))  # documentation addresses
        found.append(str(probe.getsockname()[0]))
    own = [a for a in dict.fromkeys(found) if not _is_loopback(a) and not ipaddress.ip_address(a).is_link_local]
    return [loopback, *own]


def _split_host_header(header: str) -> tuple[str, int | None]:
    """(host name or address, lowercase and without brackets; port or None) of a Host header; ("", None) if
    unreadable."""
    host, port = header.strip().lower(), ""
    if host.startswith("["):  # [IPv6]:port
        host, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            return "", None
        port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    elif ":" in host:  # an IPv6 address without brackets is not a valid Host header
        return "", None
    if port and not port.isdigit():
        return "", None
    return host, int(port) if port else None


class _Handler(BaseHTTPRequestHandler):
    server_playground: Playground
    server_version = "f5tts-playground"

    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise on the terminal
        pass

    @property
    def playground(self) -> Playground:
        return self.server_playground

    def do_GET(self) -> None:
        if not self._host_allowed():
            return self._refuse(HTTPStatus.FORBIDDEN, "This playground answers only at its own address.")
        if self.path != "/":
            return self._refuse(HTTPStatus.NOT_FOUND, "Not found.")
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.playground.page())

    def do_POST(self) -> None:
        refusal = self._refusal()
        if refusal:
            return self._refuse(HTTPStatus.FORBIDDEN, refusal)
        route = ROUTES.get(self.path)
        if route is None:
            return self._refuse(HTTPStatus.NOT_FOUND, "Not found.")
        try:
            answer = route(self.playground, self._json_body())
            if isinstance(answer, dict):
                return self._send(HTTPStatus.OK, "application/json", json.dumps(answer).encode())
            self._stream(answer)
        except PageError as exc:
            self._refuse(exc.status, exc.message, exc.code)
        except F5TTSError as exc:
            self._refuse(*plain_message(exc))

    def _stream(self, items: Generator[dict[str, Any]]) -> None:
        """NDJSON, one item a line as each comes. The first item is awaited before the status line, so a job the
        worker refuses is an HTTP error; a failure later is a last `{"type": "error"}` line. A page that goes
        away (its connection closed) closes the generator, which cancels the job."""
        first = next(items, None)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            with contextlib.closing(items):
                if first is not None:
                    self._line(first)
                for item in items:
                    self._line(item)
        except (BrokenPipeError, ConnectionResetError):
            return
        except F5TTSError as exc:
            _, message, code = plain_message(exc)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._line({"type": "error", "code": code, "message": message})

    def _line(self, item: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(item).encode() + b"\n")
        self.wfile.flush()

    def _host_allowed(self) -> bool:
        return self.playground.host_allowed(self.headers.get("Host", ""))

    def _refusal(self) -> str | None:
        """Why a POST is refused, or None: it must come from the page this server served."""
        if not self._host_allowed():
            return "This playground answers only at its own address."
        if self.headers.get("Origin", "") != f"http://{self.headers.get('Host', '')}":
            return "Requests from other web pages are refused."
        given = self.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode(), self.playground.token.encode()):
            return "This page is out of date; reload it."
        return None

    def _json_body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            raise PageError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "That is too large to send (at most 30 MB).")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PageError(HTTPStatus.BAD_REQUEST, "The page sent something unreadable; reload it.")
        return body

    def _refuse(self, status: HTTPStatus, message: str, code: str = "refused") -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(status, "application/json", body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        # No framing (clickjacking), no foreign scripts or connections; media from blobs the page builds.
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        self.end_headers()
        self.wfile.write(body)


def exposure_warning(host: str) -> str | None:
    """The loud words for a bind beyond loopback, or None."""
    if _is_loopback(host):
        return None
    return (
        f"WARNING: the playground listens on {host}, beyond this machine's loopback. Anyone who can reach this "
        "address and read the page can synthesize, upload and delete voices with YOUR API key and on your bill. "
        "Use it only on a network you trust; the default (127.0.0.1) exposes nothing."
    )


def run(
    client: Client,
    host: str,
    port: int,
    open_browser: bool,
    out: TextIO = sys.stdout,
    allow_hosts: Iterable[str] = (),
) -> None:
    """`f5tts playground`: serve until Ctrl-C. One `playground <url>` line per address the page can be opened at
    (several for a wildcard bind, this machine's loopback first)."""
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    playground = Playground(client, host, port, allow_hosts)
    for url in playground.urls:
        print(f"playground {url}", file=out, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(playground.url)
    playground.serve_forever()
