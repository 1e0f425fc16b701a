"""Object storage: an S3-compatible bucket (Backblaze B2 in production) or a local directory, behind one interface.

Every failure of the backend (botocore, the network, the file system) becomes `ContractError(storage_error)`
whose message never contains a credential; a missing object is `ObjectNotFound` (a `KeyError`) from `get` and
`None` from `head`. Keys are relative to the store's prefix (`StorageSettings.prefix`), so several deployments
can share one bucket without seeing each other's objects.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.config import StorageSettings
from worker.schema import ContractError, ErrorCode

log = logging.getLogger(__name__)

# S3's own limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# SigV4 presigned URLs cannot outlive a week.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_REGION = "us-east-1"
_B2_ENDPOINT = re.compile(r"^s3\.([a-z0-9-]+)\.backblazeb2\.com$")
_AWS_ENDPOINT = re.compile(r"^s3[.-]([a-z0-9-]+)\.amazonaws\.com$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# LocalStore writes into `.tmp-*.part` next to the target; listings skip them.
_TEMP_PREFIX, _TEMP_SUFFIX = ".tmp-", ".part"
_LOCK_FILE = ".conditional-writes.lock"  # LocalStore's lock for conditional writes, at the root


def _caller_message(operation: str, kind: str) -> str:
    return f"the object store failed to {operation} an object ({kind}); try again later"


class ObjectNotFound(KeyError):
    """The object does not exist (raised by `get`)."""


class PreconditionFailed(Exception):
    """A conditional write's condition did not hold: the object exists (`if_none_match`) or changed (`if_match`)."""


class ConditionalWritesUnsupported(Exception):
    """The store cannot make a write conditional (Backblaze B2's S3 API answers NotImplemented); nothing written."""


def write_file_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a part (temp file + rename).

    `durable` also fsyncs before the rename (stored objects); a cache can skip that. Raises OSError.
    """
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, delete=False
        ) as handle:
            temp_name = handle.name
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp_name, path)
        temp_name = None
    finally:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store's prefix or root: absolute, `.`/`..` segments, control characters."""
    if not isinstance(key, str) or not key:
        raise ContractError(ErrorCode.invalid_input, "object key is empty")
    problem = None
    if key.startswith("/") or "\\" in key:
        problem = "must be relative and use '/' separators"
    elif _CONTROL_CHARS.search(key):
        problem = "contains control characters"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        problem = "has an empty, '.' or '..' segment"
    elif len(key.encode("utf-8")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_KEY_BYTES} bytes"
    if problem:
        raise ContractError(ErrorCode.invalid_input, f"invalid object key {key[:80]!r}: {problem}")
    return key


def _normalise_prefix(prefix: str) -> str:
    """`"a/b"`, `"/a/b/"` → `"a/b/"`; `""` stays empty."""
    prefix = prefix.strip("/")
    return validate_key(prefix) + "/" if prefix else ""


def _validate_list_prefix(prefix: str) -> str:
    # A listing prefix may be empty or end in '/', otherwise it obeys the key rules.
    stripped = prefix.rstrip("/")
    if stripped:
        validate_key(stripped)
    elif prefix:
        raise ContractError(ErrorCode.invalid_input, f"invalid listing prefix {prefix!r}")
    return prefix


def region_for(endpoint_url: str | None) -> str:
    """The signing region an endpoint implies: `s3.us-west-004.backblazeb2.com` → `us-west-004`."""
    host = (urlsplit(endpoint_url).hostname or "") if endpoint_url else ""
    match = _B2_ENDPOINT.match(host) or _AWS_ENDPOINT.match(host)
    return match.group(1) if match else DEFAULT_REGION


def _code_and_status(exc: ClientError) -> tuple[str, int | None]:
    """An S3 error's code (e.g. "NoSuchKey") and HTTP status, as botocore parsed them."""
    return str(exc.response.get("Error", {}).get("Code", "")), exc.response.get("ResponseMetadata", {}).get(
        "HTTPStatusCode"
    )


class ObjectStore(abc.ABC):
    """Bytes under string keys. Implementations: `S3Store`, `LocalStore`."""

    # `list` below is a method: annotations after it that mean the builtin spell it `builtins.list`.
    kind: Literal["s3", "local"]
    bucket: str | None
    supports_urls: bool

    def __init__(self, prefix: str = "") -> None:
        self.prefix = _normalise_prefix(prefix)

    def _full_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _relative_key(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]

    @abc.abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        """Store `data` under `key`.

        Conditional writes: `if_none_match` only creates (the object must not exist), `if_match` only replaces
        the object whose etag it names; `PreconditionFailed` otherwise, and `ConditionalWritesUnsupported`
        (nothing written) where the store cannot make a write conditional.
        """

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` if it does not exist."""

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the etag of exactly those bytes (for a later `if_match`)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, etag and modification time, or None if the object does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with `prefix`, sorted."""

    @abc.abstractmethod
    def list_info(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object starting with `prefix`, with size, etag and modification time, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""

    @abc.abstractmethod
    def presign(self, key: str, expires_s: int) -> str:
        """A URL that GETs the object without credentials until it expires."""


class S3Store(ObjectStore):
    """An S3-compatible bucket reached with boto3 (SigV4, bounded retries, short timeouts)."""

    kind = "s3"
    supports_urls = True
    # Keys per ListObjectsV2 page; None: the server's default (1000).
    list_page_size: int | None = None

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
        prefix: str = "",
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 20.0,
        max_attempts: int = 3,
    ) -> None:
        super().__init__(prefix)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region or region_for(endpoint_url)
        # Kept only to scrub them from error messages; boto3 holds its own copy for signing.
        self._secrets = [s for s in (access_key_id, secret_access_key) if s]
        host = urlsplit(endpoint_url).hostname or ""
        config = Config(
            signature_version="s3v4",
            region_name=self.region,
            # AWS serves virtual-hosted buckets; other S3-compatible endpoints (B2, MinIO, moto on 127.0.0.1)
            # all accept path-style, and an IP or a bare host name cannot carry a bucket subdomain at all.
            s3={"addressing_style": "virtual" if host.endswith(".amazonaws.com") else "path"},
            # Bounded retries with backoff, and timeouts short enough that an unreachable bucket fails a job
            # in seconds instead of hanging it for minutes.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # boto3 >= 1.36 adds CRC checksum headers to every upload; not every S3-compatible service accepts
            # them, so send checksums only where the API requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=self.region,
                config=config,
            )
        except (BotoCoreError, ValueError) as exc:
            raise self._error("configure the client", None, exc) from None

    @classmethod
    def from_settings(cls, settings: StorageSettings, **kwargs: Any) -> S3Store:
        if settings.endpoint_url is None or settings.name is None:
            raise ValueError("the bucket needs both BUCKET_ENDPOINT_URL and BUCKET_NAME")
        secret = settings.secret_access_key
        key_id = settings.access_key_id
        return cls(
            endpoint_url=settings.endpoint_url,
            bucket=settings.name,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            region=settings.region,
            prefix=settings.prefix,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"S3Store(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -------------------------------------------------------------------------------------------- errors
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, operation: str, key: str | None, exc: Exception) -> ContractError:
        """A storage_error naming the failure kind only; the log keeps the endpoint, bucket and key.

        Callers get neither the S3 error's other fields (they may echo the key id or the string to sign) nor
        botocore's message (it names the endpoint URL, the bucket and the key).
        """
        if isinstance(exc, ClientError):
            code, status = _code_and_status(exc)
            kind = f"{code or 'error'} (HTTP {status})"
        else:
            kind = type(exc).__name__
        log.warning(
            "%s",
            self._scrub(
                f"storage failed to {operation} {key!r} in bucket {self.bucket!r} at {self.endpoint_url}: {exc}"
            ),
        )
        return ContractError(ErrorCode.storage_error, _caller_message(operation, kind))

    @contextlib.contextmanager
    def _translated(self, operation: str, key: str | None) -> Iterator[None]:
        """Any S3 or botocore error that leaves the block as a storage_error (`_error`); the operations
        handle the errors that mean something else (a missing key, a failed condition) inside it."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._error(operation, key, exc) from None

    @staticmethod
    def _is_missing(exc: ClientError) -> bool:
        code, status = _code_and_status(exc)
        return code in ("404", "NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket")

    # -------------------------------------------------------------------------------------------- operations
    # None until the first conditional write tells whether the store supports them.
    conditional_writes: bool | None = None

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        full = self._full_key(key)
        conditions = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": f'"{if_match}"'} if if_match else {}
        if conditions and self.conditional_writes is False:
            raise ConditionalWritesUnsupported(key)
        with self._translated("put", key):
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type, **conditions)
            except ClientError as exc:
                code, status = _code_and_status(exc)
                if conditions:
                    # 412: the condition failed; 409: a concurrent write to the key won the race; 404 (If-Match):
                    # the object it names is gone.
                    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                        raise PreconditionFailed(key) from None
                    if if_match and self._is_missing(exc):
                        raise PreconditionFailed(key) from None
                    if code == "NotImplemented" or status == 501:
                        log.warning(
                            "the object store does not support conditional writes (%s); using the fallback", code
                        )
                        self.conditional_writes = False
                        raise ConditionalWritesUnsupported(key) from None
                raise
        if conditions:
            self.conditional_writes = True

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        full = self._full_key(key)
        with self._translated("get", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
                with response["Body"] as body:
                    return body.read(), str(response.get("ETag", "")).strip('"')
            except ClientError as exc:
                if self._is_missing(exc):
                    raise ObjectNotFound(key) from None
                raise

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full_key(key)
        with self._translated("head", key):
            try:
                response = self._client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if self._is_missing(exc):
                    return None
                raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response["LastModified"],
        )

    def list(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    def list_info(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        full_prefix = self.prefix + _validate_list_prefix(prefix)
        found: list[ObjectInfo] = []
        with self._translated("list", prefix or "/"):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full_prefix, PaginationConfig={"PageSize": self.list_page_size}
            ):
                found.extend(
                    ObjectInfo(
                        key=self._relative_key(item["Key"]),
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item["LastModified"],
                    )
                    for item in page.get("Contents", [])
                )
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        with self._translated("delete", key):
            try:
                self._client.delete_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if not self._is_missing(exc):
                    raise

    def presign(self, key: str, expires_s: int) -> str:
        if not 1 <= int(expires_s) <= MAX_PRESIGN_SECONDS:
            raise ContractError(
                ErrorCode.invalid_input, f"URL lifetime must be 1..{MAX_PRESIGN_SECONDS} s, not {expires_s}"
            )
        full = self._full_key(key)
        with self._translated("presign", key):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=int(expires_s)
            )


class LocalStore(ObjectStore):
    """A directory as a bucket, for workers without one. Writes are atomic: readers never see a partial file."""

    kind = "local"
    bucket = None
    supports_urls = False

    def __init__(self, root: Path, prefix: str = "") -> None:
        super().__init__(prefix)
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self.root)!r}, prefix={self.prefix!r})"

    def _path(self, key: str) -> Path:
        # validate_key already refuses '..' and absolute keys; the resolved-path check is defence in depth
        # against symlinks planted inside the root.
        path = self.root / self._full_key(key)
        root = self.root.resolve()
        if root not in path.resolve().parents:
            raise ContractError(ErrorCode.invalid_input, f"invalid object key {key[:80]!r}: escapes the store")
        return path

    @staticmethod
    def _error(operation: str, key: str, exc: OSError) -> ContractError:
        # The log has the path; callers need not learn the worker's directory layout or keys.
        log.warning("local storage failed to %s %r: %s", operation, key, exc)
        return ContractError(ErrorCode.storage_error, _caller_message(operation, exc.strerror or type(exc).__name__))

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        path = self._path(key)
        try:
            if not (if_none_match or if_match):
                write_file_atomically(path, data)
                return
            # A conditional write checks and writes under an exclusive lock on the store, which every worker
            # process sharing the directory takes.
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / _LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                current = self.head(key)
                if (if_none_match and current is not None) or (
                    if_match and (current is None or current.etag != if_match)
                ):
                    raise PreconditionFailed(key)
                write_file_atomically(path, data)
        except OSError as exc:
            raise self._error("put", key, exc) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:  # the etag of the very file read, even if it is replaced meanwhile
                return handle.read(), self._etag(os.fstat(handle.fileno()))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise self._error("get", key, exc) from None

    @staticmethod
    def _etag(stat: os.stat_result) -> str:
        # Opaque, like S3's: every put is a new file (os.replace), so a new inode and mtime.
        return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise self._error("get", key, exc) from None

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error("head", key, exc) from None
        if not path.is_file():
            return None
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=self._etag(stat),
            last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        )

    def list(self, prefix: str = "") -> list[str]:
        full_prefix = self.prefix + _validate_list_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by the full prefix string.
        base = self.root / full_prefix.rpartition("/")[0]
        root = self.root.resolve()
        if base.resolve() != root and root not in base.resolve().parents:
            return []  # a symlink out of the root: nothing of this store lies there
        keys = []
        try:
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if (name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)) or name == _LOCK_FILE:
                        continue
                    full = Path(dirpath, name).relative_to(self.root).as_posix()
                    if full.startswith(full_prefix):
                        keys.append(self._relative_key(full))
        except OSError as exc:
            raise self._error("list", prefix or "/", exc) from None
        return sorted(keys)

    def list_info(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        return [info for info in map(self.head, self.list(prefix)) if info is not None]

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("delete", key, exc) from None

    def presign(self, key: str, expires_s: int) -> str:
        raise ContractError(ErrorCode.storage_error, "local storage cannot make download URLs; configure a bucket")


def open_store(settings: StorageSettings, local_root: Path) -> ObjectStore:
    """The bucket when one is configured (endpoint and name), else a directory under `local_root`."""
    if settings.configured:
        return S3Store.from_settings(settings)
    if settings.endpoint_url or settings.name:
        log.warning("BUCKET_ENDPOINT_URL and BUCKET_NAME must both be set to use a bucket; using local storage")
    return LocalStore(local_root, prefix=settings.prefix)
