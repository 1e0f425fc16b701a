"""Turning a caller's `AudioSource` (base64 or URL) into bytes, safely.

base64: the encoded length is checked against the cap before anything is decoded; decoding is strict.

url: only http(s). The worker must not become a proxy into its own network (SSRF), so every address a host
name resolves to is checked and a host with any non-public address is refused with `fetch_failed`. The check
runs inside the connection itself (a custom httpcore network backend): the socket is opened to the address
that was checked, so DNS cannot answer differently between check and connect (rebinding), and every redirect
hop, which httpx hands back to us instead of following, goes through the same check. Cloud metadata addresses
are refused even when `allow_private_urls` is on. The body is capped while it streams (Content-Length first,
then by counting decoded bytes, which also defeats compression bombs) and the whole fetch, the name lookup
included, has a deadline.

Nothing touches the disk: the bytes are capped, so they stay in memory.
"""

from __future__ import annotations

import binascii
import ipaddress
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from worker.config import WorkerSettings
from worker.schema import AudioSource, ContractError, ErrorCode

MAX_REDIRECTS = 5
USER_AGENT = "f5tts-worker (reference audio fetch)"
_DATA_URI = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services of the big clouds: the classic SSRF target, refused unconditionally.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)


def read_audio_source(src: AudioSource, settings: WorkerSettings, field: str) -> bytes:
    """The audio bytes `src` names, at most `settings.max_audio_bytes` of them.

    Errors (field `<field>.base64` / `<field>.url`): malformed base64 or a non-http(s) URL → invalid_input;
    too large → audio_too_large; a refused address, DNS/connection failure, timeout or HTTP error → fetch_failed.
    """
    if src.base64 is not None:
        return decode_base64_audio(src.base64, settings.max_audio_bytes, f"{field}.base64")
    if src.url is not None:
        return fetch_url(
            src.url,
            max_bytes=settings.max_audio_bytes,
            timeout_s=settings.fetch_timeout_s,
            allow_private=settings.allow_private_urls,
            field=f"{field}.url",
        )
    raise ContractError(ErrorCode.invalid_input, "give exactly one of 'url' or 'base64'", field)


# ------------------------------------------------------------------------------------------------ base64
def decode_base64_audio(encoded: str, max_bytes: int, field: str) -> bytes:
    """Strict base64 (a `data:...;base64,` prefix and line breaks allowed), size-checked before decoding."""
    match = _DATA_URI.match(encoded)
    payload = encoded[match.end() :] if match else encoded
    # Cheap bound first, before even stripping whitespace: 4 characters carry 3 bytes; the slack allows for
    # line breaks of MIME-wrapped input.
    if len(payload) > _encoded_length(max_bytes) * 2:
        raise _too_large(len(payload) * 3 // 4, max_bytes, field)
    payload = "".join(payload.split())
    padding = len(payload[-2:]) - len(payload[-2:].rstrip("="))
    decoded_size = len(payload) // 4 * 3 - padding
    if decoded_size > max_bytes:
        raise _too_large(decoded_size, max_bytes, field)
    if not payload:
        raise ContractError(ErrorCode.invalid_input, "base64 audio is empty", field)
    # Canonical base64 comes in whole 4-character groups with at most two '=': a2b_base64 tolerates more.
    if len(payload) % 4 or payload.endswith("==="):
        raise ContractError(ErrorCode.invalid_input, "malformed base64: truncated or over-padded", field)
    try:
        # strict_mode (stricter than b64decode's validate=True) also refuses misplaced or excess padding.
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(ErrorCode.invalid_input, f"malformed base64: {exc}", field) from None
    return data


def _encoded_length(n: int) -> int:
    return (n + 2) // 3 * 4


def _too_large(size: int, max_bytes: int, field: str) -> ContractError:
    return ContractError(
        ErrorCode.audio_too_large,
        f"audio is {size / 1e6:.1f} MB or more, over the {max_bytes / 1e6:.1f} MB limit",
        field,
    )


# ------------------------------------------------------------------------------------------------ address guard
# IPv6 forms that carry an IPv4 address in their low 32 bits and reach that IPv4 host: IPv4-translated
# (::ffff:0:a.b.c.d), NAT64 well-known and local-use prefixes, and the deprecated IPv4-compatible form (::a.b.c.d).
_LOW_32_BIT_WRAPPERS = tuple(
    ipaddress.ip_network(n) for n in ("::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address wraps (mapped, translated, NAT64, 6to4, Teredo, compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if int(address) > 1 and any(address in network for network in _LOW_32_BIT_WRAPPERS):  # not :: or ::1
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return list(dict.fromkeys(a for a in found if a is not None))


def refusal_reason(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why the worker must not connect to `address`, or None if it may."""
    # An IPv4 address wrapped in IPv6 reaches (or tunnels to) the IPv4 host: judge that one too. Metadata
    # addresses are refused in every wrapping, even when private addresses are allowed.
    wrapped = embedded_ipv4(address)
    for inner in wrapped:
        reason = refusal_reason(inner, allow_private=allow_private)
        if reason:
            return f"{reason} wrapped in IPv6"
    if wrapped:  # the wrapper only carries traffic to the IPv4 host, which passed
        return None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for label, flag in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a site-local", getattr(address, "is_site_local", False)),  # fec0::/10, deprecated but routable inside
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
        # Shared (100.64/10), documentation, benchmarking... anything not globally routable.
        ("a non-public", not address.is_global),
    ):
        if flag:
            return f"{label} address"
    return None


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the fetch's deadline.

    httpx's timeouts apply per socket operation, so a server sending one byte a second (of the headers or the
    body) would never trip them; capping each operation at the time left bounds the whole fetch.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _timeout(self, timeout: float | None, error: type[Exception]) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise error("the fetch deadline passed")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, resolving and checking the host itself and connecting to the checked address."""

    def __init__(self, allow_private: bool, deadline: float) -> None:
        self.allow_private = allow_private
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = _resolve(host, port, self.deadline)
        except (socket.gaierror, UnicodeError) as exc:
            raise _Refused(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        # Every address must pass: a host that also resolves to an internal address is refused outright, as
        # a client retrying another address (or a later lookup) could land on it.
        for address in addresses:
            reason = refusal_reason(address, allow_private=self.allow_private)
            if reason:
                raise _Refused(f"host {host!r} resolves to {reason} ({address}); refusing to fetch from it")
        last_error: Exception | None = None
        for address in addresses:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("the fetch deadline passed")
            connect_timeout = remaining if timeout is None else min(timeout, remaining)
            try:
                stream = super().connect_tcp(str(address), port, connect_timeout, local_address, socket_options)
                return _DeadlineStream(stream, self.deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address for {host!r}")


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """`getaddrinfo` within the fetch's deadline. The lookup cannot be interrupted, so it runs on a thread of its
    own: past the deadline the fetch fails, and only that thread is left waiting for the resolver (which gives
    up by its own timeouts)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise httpcore.ConnectTimeout("the fetch deadline passed")
    answer: queue.SimpleQueue[tuple[list[tuple[Any, ...]] | None, BaseException | None]] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answer.put((socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), None))
        except BaseException as exc:
            answer.put((None, exc))

    threading.Thread(target=lookup, name="fetch-dns", daemon=True).start()
    try:
        infos, error = answer.get(timeout=remaining)
    except queue.Empty:
        raise httpcore.ConnectTimeout(f"the fetch deadline passed while resolving {host[:80]!r}") from None
    if error is not None:
        raise error
    assert infos is not None
    return infos


class _Refused(Exception):
    """Raised inside the transport; becomes fetch_failed."""


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, allow_private: bool, deadline: float) -> None:
        super().__init__(trust_env=False, retries=0)
        # httpx has no public hook for the network backend, but the httpcore pool it wraps has: swap the pool
        # for one built on the guarded backend (same TLS verification, SNI and Host stay the URL's host name).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(allow_private, deadline),
            max_connections=4,
        )


# ------------------------------------------------------------------------------------------------ url
def fetch_url(url: str, *, max_bytes: int, timeout_s: float, allow_private: bool, field: str) -> bytes:
    """GET `url` through the address guard, following at most MAX_REDIRECTS redirects, capped at `max_bytes`."""
    request_url = _checked_url(url, field)
    deadline = time.monotonic() + timeout_s
    client = httpx.Client(
        transport=_GuardedTransport(allow_private, deadline),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept": "audio/*, */*;q=0.5"},
    )
    try:
        with client:
            request = client.build_request("GET", request_url)
            for _hop in range(MAX_REDIRECTS + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise httpx.TimeoutException("deadline passed")
                # Each hop gets only what is left of the fetch's time budget.
                request.extensions["timeout"] = httpx.Timeout(remaining).as_dict()
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        if response.next_request is None:
                            raise _failed(f"redirect without a usable Location from {request.url.host}", field)
                        request = response.next_request
                        _checked_url(str(request.url), field, redirect=True)
                        continue
                    return _read_body(response, max_bytes, deadline, timeout_s, field)
                finally:
                    response.close()
            raise _failed(f"more than {MAX_REDIRECTS} redirects", field)
    except _Refused as exc:
        raise _failed(str(exc), field) from None
    except httpx.TimeoutException:
        raise _timed_out(timeout_s, field) from None
    except httpx.HTTPError as exc:
        raise _failed(f"{type(exc).__name__}: {exc}", field) from None


def _checked_url(url: str, field: str, *, redirect: bool = False) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ContractError(ErrorCode.invalid_input, f"invalid URL: {exc}", field) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        what = "redirect target" if redirect else "URL"
        code = ErrorCode.fetch_failed if redirect else ErrorCode.invalid_input
        raise ContractError(
            code, f"the {what} must be an http(s) URL with a host, not {parsed.scheme or 'none'!r}", field
        )
    return parsed


def _read_body(response: httpx.Response, max_bytes: int, deadline: float, timeout_s: float, field: str) -> bytes:
    if not response.is_success:
        raise _failed(f"{response.request.url.host} answered HTTP {response.status_code}", field)
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes, field)
    received = bytearray()
    # Per-read timeouts alone would let a server trickle bytes forever; the deadline bounds the whole fetch.
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) > max_bytes:
            raise _too_large(len(received), max_bytes, field)
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, field)
    if not received:
        raise _failed(f"{response.request.url.host} sent an empty body", field)
    return bytes(received)


def _timed_out(timeout_s: float, field: str) -> ContractError:
    return _failed(f"the server did not deliver the whole file within the {timeout_s:g} s limit", field)


def _failed(message: str, field: str) -> ContractError:
    return ContractError(ErrorCode.fetch_failed, f"could not fetch the audio: {message}", field)
