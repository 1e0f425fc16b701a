"""ObjectStore: S3Store over the real S3 protocol (boto3 against moto's server on 127.0.0.1) and LocalStore."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.worker.s3_server import S3Bucket
from worker.config import StorageSettings
from worker.schema import ContractError, ErrorCode
from worker.storage import LocalStore, ObjectNotFound, ObjectStore, S3Store, open_store, region_for


def s3_store(bucket: S3Bucket, prefix: str = "") -> S3Store:
    store = open_store(bucket.settings(prefix=prefix), local_root=Path("unused"))
    assert isinstance(store, S3Store)  # a bucket is configured
    return store


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return s3_store(request.getfixturevalue("s3_bucket"))
    return LocalStore(tmp_path / "store")


def test_put_get_head_list_delete(store: ObjectStore) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    store.put("voices/alice/meta.json", b'{"a": 1}', "application/json")
    store.put("voices/alice/0123.wav", b"RIFF....", "audio/wav")
    store.put("voices/bob/meta.json", b"{}", "application/json")
    store.put("generated/2026/01/01/x.wav", b"x" * 1000, "audio/wav")

    assert store.get("voices/alice/meta.json") == b'{"a": 1}'
    info = store.head("generated/2026/01/01/x.wav")
    assert info is not None and info.size == 1000 and info.etag
    assert info.last_modified >= before and info.key == "generated/2026/01/01/x.wav"
    assert store.list("voices/") == ["voices/alice/0123.wav", "voices/alice/meta.json", "voices/bob/meta.json"]
    assert store.list("voices/al") == ["voices/alice/0123.wav", "voices/alice/meta.json"]
    assert len(store.list()) == 4 and store.list("nothing/") == []

    # Overwrite replaces the content, and the etag with it.
    store.put("voices/bob/meta.json", b'{"v": 2}', "application/json")
    assert store.get("voices/bob/meta.json") == b'{"v": 2}'

    store.delete("voices/alice/meta.json")
    store.delete("voices/alice/meta.json")  # deleting a missing object is not an error
    assert store.head("voices/alice/meta.json") is None
    with pytest.raises(ObjectNotFound):
        store.get("voices/alice/meta.json")
    with pytest.raises(KeyError):  # ObjectNotFound is a KeyError
        store.get("never/was")
    assert store.list("voices/") == ["voices/alice/0123.wav", "voices/bob/meta.json"]


def test_etag_changes_with_content(store: ObjectStore) -> None:
    store.put("a/b", b"one")
    first = store.head("a/b")
    time.sleep(0.01)
    store.put("a/b", b"second")
    second = store.head("a/b")
    assert first is not None and second is not None
    assert first.etag != second.etag and second.size == 6


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "a/../../b", "a//b", "a/./b", "", "a\x00b", "a\nb", "a\\b"])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    for operation in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.delete(key)):
        with pytest.raises(ContractError) as err:
            operation()
        assert err.value.code is ErrorCode.invalid_input
    assert store.list() == []


def test_prefix_isolates_deployments(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    a, b = s3_store(s3_bucket, prefix="/deploy-a/"), s3_store(s3_bucket, prefix="deploy-b")
    a.put("voices/x/meta.json", b"a")
    b.put("voices/x/meta.json", b"b")
    assert s3_bucket.keys() == ["deploy-a/voices/x/meta.json", "deploy-b/voices/x/meta.json"]
    assert a.list() == ["voices/x/meta.json"] and a.get("voices/x/meta.json") == b"a"
    assert b.get("voices/x/meta.json") == b"b"

    local = LocalStore(tmp_path, prefix="deploy-a")
    local.put("voices/x/meta.json", b"a")
    assert (tmp_path / "deploy-a/voices/x/meta.json").read_bytes() == b"a"
    assert local.list() == ["voices/x/meta.json"]


def test_s3_list_follows_pagination(s3_bucket: S3Bucket) -> None:
    store = s3_store(s3_bucket)
    store.list_page_size = 2  # five keys → three pages, each a ListObjectsV2 call with a continuation token
    keys = [f"generated/{i}.wav" for i in range(5)]
    for key in keys:
        store.put(key, b"x")
    assert store.list("generated/") == keys


def test_presigned_url_downloads_the_object(s3_bucket: S3Bucket) -> None:
    store = s3_store(s3_bucket)
    store.put("generated/2026/01/02/clip.wav", b"RIFF-audio-bytes", "audio/wav")
    url = store.presign("generated/2026/01/02/clip.wav", 120)

    response = httpx.get(url)  # no credentials: the URL carries its own signature
    assert response.status_code == 200
    assert response.content == b"RIFF-audio-bytes"
    assert response.headers["content-type"] == "audio/wav"

    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert s3_bucket.server.secret_access_key not in url
    assert urlsplit(url).path == f"/{s3_bucket.name}/generated/2026/01/02/clip.wav"  # path-style on a bare IP


def test_presign_lifetime_is_bounded(s3_bucket: S3Bucket) -> None:
    store = s3_store(s3_bucket)
    for expires in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ContractError) as err:
            store.presign("a/b", expires)
        assert err.value.code is ErrorCode.invalid_input


def test_local_store_has_no_urls(tmp_path: Path) -> None:
    store = open_store(StorageSettings(_env_file=None, endpoint_url=None, name=None), local_root=tmp_path)
    assert isinstance(store, LocalStore) and store.kind == "local" and store.supports_urls is False
    with pytest.raises(ContractError) as err:
        store.presign("a/b", 60)
    assert err.value.code is ErrorCode.storage_error


def test_open_store_picks_s3_when_a_bucket_is_configured(s3_bucket: S3Bucket) -> None:
    store = open_store(s3_bucket.settings(), local_root=Path("unused"))
    assert isinstance(store, S3Store) and store.kind == "s3" and store.supports_urls
    assert store.bucket == s3_bucket.name
    assert s3_bucket.server.secret_access_key not in repr(store)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_storage_fails_fast_without_leaking_credentials() -> None:
    secret = "very-secret-key-that-must-not-leak"
    key_id = "AKIASHOULDNOTLEAK123"
    store = S3Store(
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        bucket="some-bucket",
        access_key_id=key_id,
        secret_access_key=secret,
    )
    for operation in (lambda: store.put("a/b", b"x"), lambda: store.get("a/b"), lambda: store.list()):
        started = time.monotonic()
        with pytest.raises(ContractError) as err:
            operation()
        assert time.monotonic() - started < 10
        assert err.value.code is ErrorCode.storage_error
        text = err.value.to_error_string()
        assert secret not in text and key_id not in text
        # The caller learns what failed, not where: no endpoint, bucket or key (the log has them).
        assert "object store failed" in text
        for internal in ("127.0.0.1", "some-bucket", "a/b", "http"):
            assert internal not in text, text


def test_missing_bucket_is_a_storage_error(s3_bucket: S3Bucket) -> None:
    store = open_store(s3_bucket.settings(name="no-such-bucket-here"), local_root=Path("unused"))
    with pytest.raises(ContractError) as err:
        store.get("a/b")
    assert err.value.code is ErrorCode.storage_error and "NoSuchBucket" in err.value.body.message
    assert s3_bucket.server.secret_access_key not in err.value.to_error_string()
    assert "no-such-bucket-here" not in err.value.to_error_string()


def test_region_comes_from_a_b2_endpoint() -> None:
    assert region_for("https://s3.us-west-004.backblazeb2.com") == "us-west-004"
    assert region_for("https://s3.eu-central-003.backblazeb2.com/") == "eu-central-003"
    assert region_for("https://s3.eu-west-1.amazonaws.com") == "eu-west-1"
    assert region_for("http://127.0.0.1:9000") == "us-east-1"
    assert region_for(None) == "us-east-1"
    store = S3Store(
        endpoint_url="https://s3.us-west-004.backblazeb2.com", bucket="b", access_key_id="k", secret_access_key="s"
    )
    assert store.region == "us-west-004"
    assert S3Store(endpoint_url="https://s3.us-west-004.backblazeb2.com", bucket="b", region="x-1").region == "x-1"


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("voices/a/meta.json", b"old")
    store.put("voices/a/meta.json", b"new")
    assert store.get("voices/a/meta.json") == b"new"
    # A put that cannot complete (a file stands where its directory must go) fails cleanly.
    with pytest.raises(ContractError) as err:
        store.put("voices/a/meta.json/child", b"x")
    assert err.value.code is ErrorCode.storage_error
    assert str(tmp_path) not in err.value.body.message
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["meta.json"]
    assert store.list() == ["voices/a/meta.json"]


def test_local_store_refuses_symlinks_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    with pytest.raises(ContractError) as err:
        store.put("link/secret", b"x")
    assert err.value.code is ErrorCode.invalid_input
    assert list(outside.iterdir()) == []
