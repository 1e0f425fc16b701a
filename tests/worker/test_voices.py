"""VoiceLibrary over both stores: the object layout, overwrite/delete ordering, caches and the built-in voice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.worker.s3_server import S3Bucket
from worker.model_facts import BUILTIN_REFERENCE_TEXT
from worker.schema import ContractError, ErrorCode, UploadVoiceOutput
from worker.storage import LocalStore, ObjectStore, open_store
from worker.voices import VoiceLibrary

SR = 24_000


def tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        return open_store(bucket.settings(), local_root=Path("unused"))
    return LocalStore(tmp_path / "store")


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


class ScriptedStore(ObjectStore):
    """A real store with failures injected per call: `fail(op, key)` decides; `after=True` fails once done."""

    def __init__(self, inner: ObjectStore, fail: Callable[[str, str], bool], *, after: bool = False) -> None:
        super().__init__()
        self.inner, self.fail, self.after = inner, fail, after
        self.kind, self.bucket, self.supports_urls = inner.kind, inner.bucket, inner.supports_urls
        self.calls: list[tuple[str, str]] = []

    def _call(self, op: str, key: str, run: Callable[[], object]) -> object:
        self.calls.append((op, key))
        if self.fail(op, key):
            if self.after:
                run()
            raise ContractError(ErrorCode.storage_error, f"injected failure: {op} {key}")
        return run()

    def put(self, key, data, content_type="application/octet-stream", **conditions):
        return self._call("put", key, lambda: self.inner.put(key, data, content_type, **conditions))

    def get(self, key):
        return self._call("get", key, lambda: self.inner.get(key))

    def get_with_etag(self, key):
        return self._call("get", key, lambda: self.inner.get_with_etag(key))

    def list_info(self, prefix=""):
        return self._call("list", prefix, lambda: self.inner.list_info(prefix))

    def head(self, key):
        return self._call("head", key, lambda: self.inner.head(key))

    def list(self, prefix=""):
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def delete(self, key):
        return self._call("delete", key, lambda: self.inner.delete(key))

    def presign(self, key, expires_s):
        return self._call("presign", key, lambda: self.inner.presign(key, expires_s))


def audio_keys(store: ObjectStore, name: str) -> list[str]:
    return [k for k in store.list(f"voices/{name}/") if k.endswith(".wav")]


# ------------------------------------------------------------------------------------------------ round trip
def test_save_get_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    library = VoiceLibrary(store, tmp_path / "cache")
    samples = tone(220)
    saved = library.save(
        "alice", samples, SR, "  Hello there.  ", overwrite=False, original_duration=14.2, clipped=True
    )
    assert isinstance(saved, UploadVoiceOutput)
    assert (saved.name, saved.text, saved.duration, saved.sample_rate) == ("alice", "Hello there.", 0.5, SR)
    assert saved.clipped is True and saved.original_duration == 14.2 and saved.builtin is False and saved.created_at

    keys = store.list("voices/")
    assert len(keys) == 2 and "voices/alice/meta.json" in keys
    [audio_key] = audio_keys(store, "alice")
    meta = json.loads(store.get("voices/alice/meta.json"))
    # Content hash plus this save's own nonce: no two saves share an audio object.
    assert audio_key.startswith(f"voices/alice/{meta['sha256'][:16]}-") and meta["audio"] == audio_key.rsplit("/", 1)[1]

    voice = library.get("alice")
    assert voice.sample_rate == SR and voice.info.text == "Hello there."
    assert voice.samples.dtype == np.float32 and voice.samples.shape == samples.shape
    assert np.max(np.abs(voice.samples - samples)) < 1e-4  # PCM16 round trip
    voice.samples[:] = 0  # callers get their own copy
    assert np.max(np.abs(library.get("alice").samples)) > 0.4

    library.save("bob", tone(330), SR, "Bob speaking.", overwrite=False)
    listed = library.list()
    assert [v.name for v in listed] == ["alice", "bob", "default"]
    assert [v.builtin for v in listed] == [False, False, True]
    assert library.exists("alice") and not library.exists("carol")

    assert library.delete("alice").model_dump() == {"name": "alice", "deleted": True}
    assert store.list("voices/alice/") == []
    assert [v.name for v in library.list()] == ["bob", "default"]
    for action in (lambda: library.get("alice"), lambda: library.delete("alice")):
        with pytest.raises(ContractError) as err:
            action()
        assert err.value.code is ErrorCode.voice_not_found


def test_existing_voice_needs_overwrite(store: ObjectStore, tmp_path: Path) -> None:
    library = VoiceLibrary(store, tmp_path / "cache")
    library.save("alice", tone(220), SR, "First.", overwrite=False)
    with pytest.raises(ContractError) as err:
        library.save("alice", tone(440), SR, "Second.", overwrite=False)
    assert err.value.code is ErrorCode.voice_exists and err.value.body.field == "name"
    assert library.get("alice").info.text == "First."

    library.save("alice", tone(440), SR, "Second.", overwrite=True)
    voice = library.get("alice")
    assert voice.info.text == "Second." and np.max(np.abs(voice.samples - tone(440))) < 1e-4
    assert len(audio_keys(store, "alice")) == 1  # the old audio is gone, the new one is referenced


def test_overwrite_is_never_served_stale(local_store: LocalStore, tmp_path: Path) -> None:
    # Two workers (separate caches) share one store: a voice cached by one and overwritten through the other.
    worker_a = VoiceLibrary(local_store, tmp_path / "cache-a")
    worker_b = VoiceLibrary(local_store, tmp_path / "cache-b")
    worker_a.save("alice", tone(220), SR, "Old.", overwrite=False)
    assert worker_b.get("alice").info.text == "Old."  # now in b's memory and disk caches
    worker_a.save("alice", tone(660), SR, "New.", overwrite=True)
    voice = worker_b.get("alice")
    assert voice.info.text == "New." and np.max(np.abs(voice.samples - tone(660))) < 1e-4
    # a's own caches drop the overwritten audio
    assert len(list((tmp_path / "cache-a").glob("*.wav"))) == 1


def test_saving_the_same_audio_again_keeps_it(local_store: LocalStore, tmp_path: Path) -> None:
    library = VoiceLibrary(local_store, tmp_path / "cache")
    library.save("alice", tone(220), SR, "Take one.", overwrite=False)
    library.save("alice", tone(220), SR, "Take two.", overwrite=True)  # same audio key, new transcript
    assert len(audio_keys(local_store, "alice")) == 1
    assert library.get("alice").info.text == "Take two."


def test_audio_is_cached_on_disk_by_content(local_store: LocalStore, tmp_path: Path) -> None:
    VoiceLibrary(local_store, tmp_path / "cache").save("alice", tone(220), SR, "Hi.", overwrite=False)
    counting = ScriptedStore(local_store, lambda op, key: False)
    fresh = VoiceLibrary(counting, tmp_path / "cache")  # a restarted worker: empty memory, warm disk
    fresh.get("alice")
    fresh.get("alice")
    assert [key for op, key in counting.calls if op == "get"] == ["voices/alice/meta.json"] * 2

    # A damaged cache file is detected by its hash and replaced by a fresh download.
    [cached] = list((tmp_path / "cache").glob("*.wav"))
    cached.write_bytes(b"garbage")
    counting.calls.clear()
    assert np.max(np.abs(VoiceLibrary(counting, tmp_path / "cache").get("alice").samples - tone(220))) < 1e-4
    assert any(op == "get" and key.endswith(".wav") for op, key in counting.calls)
    assert cached.read_bytes()[:4] == b"RIFF"


# ------------------------------------------------------------------------------------------------ built-in
def test_builtin_default_voice(local_store: LocalStore, tmp_path: Path) -> None:
    library = VoiceLibrary(local_store, tmp_path / "cache")
    [default] = library.list()
    assert default.name == "default" and default.builtin and default.text == BUILTIN_REFERENCE_TEXT
    voice = library.get("default")
    assert voice.sample_rate == 24_000 and voice.info.builtin
    assert 5.0 < voice.samples.size / voice.sample_rate < 6.0 and np.abs(voice.samples).max() > 0.05
    assert library.exists("default")

    with pytest.raises(ContractError) as err:
        library.delete("default")
    assert err.value.code is ErrorCode.invalid_input and "built-in" in err.value.body.message
    with pytest.raises(ContractError) as err:
        library.save("default", tone(220), SR, "Mine now.", overwrite=True)
    assert err.value.code is ErrorCode.voice_exists
    assert local_store.list() == []


# ------------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("failing", ["audio", "meta"])
def test_failed_save_leaves_no_objects(store: ObjectStore, tmp_path: Path, failing: str) -> None:
    def fail(op: str, key: str) -> bool:
        return op == "put" and key.endswith(".wav" if failing == "audio" else "meta.json")

    library = VoiceLibrary(ScriptedStore(store, fail), tmp_path / "cache")
    with pytest.raises(ContractError) as err:
        library.save("alice", tone(220), SR, "Hi.", overwrite=False)
    assert err.value.code is ErrorCode.storage_error
    assert store.list() == []
    assert [v.name for v in library.list()] == ["default"]


def test_failed_overwrite_keeps_the_old_voice(local_store: LocalStore, tmp_path: Path) -> None:
    VoiceLibrary(local_store, tmp_path / "cache").save("alice", tone(220), SR, "Old.", overwrite=False)
    before = local_store.list()
    failing = ScriptedStore(local_store, lambda op, key: op == "put" and key.endswith("meta.json"))
    with pytest.raises(ContractError):
        VoiceLibrary(failing, tmp_path / "cache").save("alice", tone(880), SR, "New.", overwrite=True)
    assert local_store.list() == before
    voice = VoiceLibrary(local_store, tmp_path / "other-cache").get("alice")
    assert voice.info.text == "Old." and np.max(np.abs(voice.samples - tone(220))) < 1e-4


def test_metadata_written_despite_an_error_keeps_its_audio(local_store: LocalStore, tmp_path: Path) -> None:
    # The metadata write lands but reports failure (an answer lost on the way back): the audio it points at
    # must survive the cleanup, or the voice would point at nothing.
    lossy = ScriptedStore(local_store, lambda op, key: op == "put" and key.endswith("meta.json"), after=True)
    with pytest.raises(ContractError):
        VoiceLibrary(lossy, tmp_path / "cache").save("alice", tone(220), SR, "Hi.", overwrite=False)
    voice = VoiceLibrary(local_store, tmp_path / "other-cache").get("alice")
    assert voice.info.text == "Hi."


def test_failed_delete_of_metadata_keeps_the_voice(local_store: LocalStore, tmp_path: Path) -> None:
    VoiceLibrary(local_store, tmp_path / "cache").save("alice", tone(220), SR, "Hi.", overwrite=False)
    failing = ScriptedStore(local_store, lambda op, key: op == "delete")
    with pytest.raises(ContractError):
        VoiceLibrary(failing, tmp_path / "cache").delete("alice")
    assert VoiceLibrary(local_store, tmp_path / "cache").get("alice").info.text == "Hi."
    # The metadata goes first: once it is deleted the voice is gone even if its audio cannot be removed.
    audio_fails = ScriptedStore(local_store, lambda op, key: op == "delete" and key.endswith(".wav"))
    assert VoiceLibrary(audio_fails, tmp_path / "cache").delete("alice").deleted
    assert not VoiceLibrary(local_store, tmp_path / "cache").exists("alice")


def test_a_description_and_labels_are_kept_and_metadata_written_without_them_still_reads(
    local_store: LocalStore, tmp_path: Path
) -> None:
    library = VoiceLibrary(local_store, tmp_path / "cache")
    saved = library.save("alice", tone(220), SR, "Hi.", description="warm", labels={"accent": "scottish"})
    assert (saved.description, saved.labels) == ("warm", {"accent": "scottish"})
    [listed] = [v for v in library.list() if v.name == "alice"]
    assert (listed.description, listed.labels) == ("warm", {"accent": "scottish"})
    # meta.json as it was written before voices kept these: the voice reads, with neither.
    meta = json.loads(local_store.get("voices/alice/meta.json"))
    del meta["description"], meta["labels"]
    local_store.put("voices/alice/meta.json", json.dumps(meta).encode())
    assert library.get("alice").info.text == "Hi."
    [listed] = [v for v in library.list() if v.name == "alice"]
    assert (listed.description, listed.labels) == (None, None)


def test_corrupt_metadata(local_store: LocalStore, tmp_path: Path) -> None:
    library = VoiceLibrary(local_store, tmp_path / "cache")
    library.save("good", tone(220), SR, "Fine.", overwrite=False)
    local_store.put("voices/bad/meta.json", b"{not json")
    local_store.put("voices/evil/meta.json", json.dumps({"name": "evil", "audio": "../good/x.wav"}).encode())
    assert [v.name for v in library.list()] == ["default", "good"]
    for name in ("bad", "evil"):
        with pytest.raises(ContractError) as err:
            library.get(name)
        assert err.value.code is ErrorCode.storage_error


@pytest.mark.parametrize("name", ["../etc", "Alice", "", "a/b", "x" * 65, "-lead"])
def test_names_are_validated_again(local_store: LocalStore, tmp_path: Path, name: str) -> None:
    library = VoiceLibrary(local_store, tmp_path / "cache")
    for action in (
        lambda: library.save(name, tone(220), SR, "Hi.", overwrite=True),
        lambda: library.get(name),
        lambda: library.delete(name),
    ):
        with pytest.raises(ContractError) as err:
            action()
        assert err.value.code is ErrorCode.invalid_input
    assert local_store.list() == []


@pytest.mark.parametrize(
    "samples", [np.zeros(0, np.float32), np.full(100, np.nan, np.float32), np.zeros((100, 2), np.float32)]
)
def test_bad_samples_are_refused(local_store: LocalStore, tmp_path: Path, samples: np.ndarray) -> None:
    with pytest.raises(ContractError) as err:
        VoiceLibrary(local_store, tmp_path / "cache").save("alice", samples, SR, "Hi.", overwrite=False)
    assert err.value.code is ErrorCode.invalid_input
    assert local_store.list() == []
