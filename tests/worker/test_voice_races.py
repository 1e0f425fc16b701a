"""Voices written by several workers at once, on one bucket: a voice never points at missing audio, overwrite=false
never replaces a voice, and what a crash or a lost race leaves behind is swept.

Two VoiceLibrary / WorkerService instances (separate caches, as on two workers) share a moto S3 bucket; the store
without conditional writes (Backblaze B2's S3 API) is emulated by answering conditional PUTs NotImplemented.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse

import worker.voices
from tests.worker.helpers import make_service
from tests.worker.s3_server import S3Bucket
from worker.schema import ContractError, ErrorBody, ErrorCode
from worker.storage import (
    ConditionalWritesUnsupported,
    LocalStore,
    ObjectStore,
    PreconditionFailed,
    S3Store,
    open_store,
)
from worker.voices import VoiceLibrary

SR = 24_000
pytestmark = pytest.mark.timeout(300)


def tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_kwargs):
        yield self._data


def without_conditional_writes(store: S3Store) -> S3Store:
    """Make the bucket answer conditional PUTs as Backblaze B2 does: 501 NotImplemented, nothing written."""

    def refuse(request, **_kwargs):
        if "If-None-Match" in request.headers or "If-Match" in request.headers:
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code><Message>A header you "
                b"provided implies functionality that is not implemented</Message></Error>"
            )
            return AWSResponse(request.url, 501, {"Content-Type": "application/xml"}, _Body(body))
        return None

    store._client.meta.events.register("before-send.s3.PutObject", refuse)
    return store


@pytest.fixture(params=["s3", "s3 without conditional writes", "local"])
def store_factory(request, tmp_path: Path) -> Callable[[], ObjectStore]:
    """Makes store clients on one shared bucket (or directory): one per simulated worker."""
    if request.param == "local":
        return lambda: LocalStore(tmp_path / "store")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")

    def make() -> ObjectStore:
        store = open_store(bucket.settings(), local_root=Path("unused"))
        assert isinstance(store, S3Store)  # a bucket is configured
        return without_conditional_writes(store) if "without" in request.param else store

    return make


# ------------------------------------------------------------------------------------------------ the store
def test_conditional_writes(store_factory) -> None:
    store = store_factory()
    try:
        store.put("k", b"one", if_none_match=True)
    except ConditionalWritesUnsupported:
        # B2-like: the store said so and wrote nothing.
        with pytest.raises(KeyError):
            store.get("k")
        assert store.conditional_writes is False
        with pytest.raises(ConditionalWritesUnsupported):  # known now: no second request is wasted
            store.put("k", b"one", if_none_match=True)
        return
    with pytest.raises(PreconditionFailed):
        store.put("k", b"two", if_none_match=True)
    data, etag = store.get_with_etag("k")
    assert data == b"one"
    store.put("k", b"three", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"four", if_match=etag)  # stale: the object changed since
    assert store.get("k") == b"three"
    with pytest.raises(PreconditionFailed):
        store.put("missing", b"x", if_match=etag)


# ------------------------------------------------------------------------------------------------ interleavings
class PausingStore(ObjectStore):
    """Passes every call through, but the first call matching `pause_before` waits until `resume` is set."""

    def __init__(self, inner: ObjectStore, pause_before: Callable[[str, str], bool]) -> None:
        super().__init__()
        self.inner, self.pause_before = inner, pause_before
        self.kind, self.bucket, self.supports_urls = inner.kind, inner.bucket, inner.supports_urls
        self.paused, self.resume = threading.Event(), threading.Event()

    def _gate(self, op: str, key: str) -> None:
        if not self.paused.is_set() and self.pause_before(op, key):
            self.paused.set()
            assert self.resume.wait(30)

    def put(self, key, data, content_type="application/octet-stream", **conditions):
        self._gate("put", key)
        return self.inner.put(key, data, content_type, **conditions)

    def get(self, key):
        return self.inner.get(key)

    def get_with_etag(self, key):
        return self.inner.get_with_etag(key)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def list_info(self, prefix=""):
        return self.inner.list_info(prefix)

    def delete(self, key):
        return self.inner.delete(key)

    def presign(self, key, expires_s):
        return self.inner.presign(key, expires_s)


def save_interleaved(store_factory, tmp_path: Path, *, overwrite: bool) -> tuple[object, VoiceLibrary, VoiceLibrary]:
    """Worker A writes its audio, then stalls before its metadata while worker B saves the same name whole.

    Returns A's outcome (its result or ContractError) and both libraries.
    """
    paused = PausingStore(store_factory(), lambda op, key: op == "put" and key.endswith("meta.json"))
    worker_a = VoiceLibrary(paused, tmp_path / "cache-a")
    worker_b = VoiceLibrary(store_factory(), tmp_path / "cache-b")
    outcome: list[object] = []

    def save_a() -> None:
        try:
            outcome.append(worker_a.save("alice", tone(220), SR, "From A.", overwrite=overwrite))
        except ContractError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=save_a)
    thread.start()
    try:
        assert paused.paused.wait(30)
        worker_b.save("alice", tone(660), SR, "From B.", overwrite=overwrite)
    finally:
        paused.resume.set()
        thread.join(30)
    return outcome[0], worker_a, worker_b


def assert_voice_whole(store: ObjectStore, libraries: list[VoiceLibrary], text: str) -> None:
    meta = json.loads(store.get("voices/alice/meta.json"))
    assert store.head(f"voices/alice/{meta['audio']}") is not None, "the voice points at missing audio"
    # No orphan either: the only audio object is the referenced one.
    assert [k for k in store.list("voices/alice/") if k.endswith(".wav")] == [f"voices/alice/{meta['audio']}"]
    voices = [library.get("alice") for library in libraries]
    assert {v.info.text for v in voices} == {text}, "workers disagree about the voice"
    assert all(np.array_equal(voices[0].samples, v.samples) for v in voices[1:])


def test_a_creation_that_loses_the_race_is_voice_exists_and_leaves_nothing(store_factory, tmp_path: Path) -> None:
    outcome, worker_a, worker_b = save_interleaved(store_factory, tmp_path, overwrite=False)
    assert isinstance(outcome, ContractError) and outcome.code is ErrorCode.voice_exists, outcome
    assert_voice_whole(store_factory(), [worker_a, worker_b], "From B.")


def test_racing_overwrites_leave_a_whole_voice_that_every_worker_sees_alike(store_factory, tmp_path: Path) -> None:
    VoiceLibrary(store_factory(), tmp_path / "cache-0").save("alice", tone(110), SR, "Original.", overwrite=False)
    outcome, worker_a, worker_b = save_interleaved(store_factory, tmp_path, overwrite=True)
    assert not isinstance(outcome, ContractError), outcome
    assert_voice_whole(store_factory(), [worker_a, worker_b], "From A.")  # the last writer wins


# ------------------------------------------------------------------------------------------------ crashes
def test_what_a_crash_leaves_is_swept_after_the_grace_period(store_factory, tmp_path: Path) -> None:
    store = store_factory()
    library = VoiceLibrary(store, tmp_path / "cache")
    library.save("alice", tone(220), SR, "Kept.", overwrite=False)
    # A worker died between writing its audio and its metadata (a new voice, and an overwrite of alice).
    store.put("voices/bob/0123456789abcdef-0badf00d.wav", b"RIFF orphan")
    store.put("voices/alice/fedcba9876543210-0badf00d.wav", b"RIFF orphan")
    assert library.sweep_orphans() == 0, "a save may still be in flight: young audio is kept"
    assert library.get("alice").info.text == "Kept."

    later = VoiceLibrary(store, tmp_path / "cache", orphan_grace_s=0)
    assert later.sweep_orphans() == 2
    assert store.list("voices/bob/") == []
    assert_voice_whole(store, [later], "Kept.")


def test_a_worker_start_sweeps_orphans(engine, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = open_store(s3_bucket.settings(), local_root=Path("unused"))
    store.put("voices/bob/0123456789abcdef-0badf00d.wav", b"RIFF orphan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker.voices, "ORPHAN_GRACE_S", 0)
        make_service(engine, s3_bucket.settings(), tmp_path)
    assert store.list("voices/") == []


# ------------------------------------------------------------------------------------------------ two services
ROUNDS = 20


def test_two_workers_saving_one_name_at_once(engine, s3_bucket: S3Bucket, tmp_path: Path, reference_wav) -> None:
    services = [make_service(engine, s3_bucket.settings(), tmp_path / f"worker-{i}") for i in range(2)]
    audio = {"base64": base64.b64encode(reference_wav).decode()}
    store = services[0].store

    def race(name: str, overwrite: bool) -> list[dict]:
        barrier = threading.Barrier(2)
        results: list[dict] = [{}, {}]

        def upload(i: int) -> None:
            job = {
                "action": "upload_voice",
                "name": name,
                "audio": audio,
                "text": f"Worker {i}.",
                "overwrite": overwrite,
            }
            barrier.wait(10)
            [results[i]] = list(services[i].run(job))

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return results

    for round_no in range(ROUNDS):
        name = f"new-{round_no}"
        results = race(name, overwrite=False)
        codes = sorted(ErrorBody.model_validate_json(r["error"]).code.value if "error" in r else "ok" for r in results)
        assert codes == ["ok", "voice_exists"], results
        winner = next(r for r in results if "error" not in r)
        meta = json.loads(store.get(f"voices/{name}/meta.json"))
        assert meta["text"] == winner["text"]
        assert [k for k in store.list(f"voices/{name}/") if k.endswith(".wav")] == [f"voices/{name}/{meta['audio']}"]

    for _round in range(ROUNDS):
        results = race("shared", overwrite=True)
        assert all("error" not in r for r in results), results
        meta = json.loads(store.get("voices/shared/meta.json"))
        assert store.head(f"voices/shared/{meta['audio']}") is not None, "the voice points at missing audio"
        seen = [s.voices.get("shared") for s in services]
        assert seen[0].info.text == seen[1].info.text == meta["text"], "workers disagree about the voice"
    assert [k for k in store.list("voices/shared/") if k.endswith(".wav")] == [f"voices/shared/{meta['audio']}"]


def test_the_sweep_keeps_the_audio_of_a_voice_whose_metadata_is_corrupt(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("voices/bad/meta.json", b"{not json")
    store.put("voices/bad/0123456789abcdef-0badf00d.wav", b"RIFF kept")
    store.put("voices/gone/0123456789abcdef-0badf00d.wav", b"RIFF orphan")
    assert VoiceLibrary(store, tmp_path / "cache", orphan_grace_s=0).sweep_orphans() == 1
    assert store.list("voices/") == ["voices/bad/0123456789abcdef-0badf00d.wav", "voices/bad/meta.json"]
