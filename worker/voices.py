"""Stored voices: a reference clip and its transcript under a name, kept in the object store.

Layout (one voice = one folder):

    voices/<name>/meta.json            the metadata; its presence *is* the voice (written last, deleted first)
    voices/<name>/<sha256[:16]>.wav    the normalised clip (PCM16 WAV) the metadata points at

The audio is content-addressed, so saving a new version never touches the object the current metadata points
at: new audio is written, then the new metadata, and only then the old audio is removed. At every moment the
metadata points at audio that exists. A failure while saving removes what that save wrote.

Reading a voice costs one small GET (meta.json); the audio comes from a local disk cache and an in-memory LRU,
both keyed by the audio's SHA-256, so an overwritten voice is never served stale and a cached one is never
downloaded twice. The built-in `default` voice is the reference clip that ships with f5-tts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from worker.model_facts import BUILTIN_REFERENCE_AUDIO, BUILTIN_REFERENCE_TEXT
from worker.schema import (
    BUILTIN_VOICE,
    VOICE_NAME_PATTERN,
    ContractError,
    DeleteVoiceOutput,
    ErrorCode,
    UploadVoiceOutput,
    VoiceInfo,
)
from worker.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

VOICES_PREFIX = "voices/"
META_FILE = "meta.json"
META_VERSION = 1
MEMORY_CACHE_VOICES = 8

# The reference clip f5-tts ships (and uses as its own CLI default), with its transcript.
BUILTIN_AUDIO_PATH = BUILTIN_REFERENCE_AUDIO  # inside the installed f5_tts package
BUILTIN_TEXT = BUILTIN_REFERENCE_TEXT

_NAME = re.compile(VOICE_NAME_PATTERN)
_AUDIO_FILE = re.compile(r"^[0-9a-f]{16}\.wav$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CorruptVoice(ContractError):
    """A voice's metadata cannot be used (storage_error); listings skip such voices instead of failing."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(ErrorCode.storage_error, f"the metadata of voice {name!r} is corrupt: {problem}")


@dataclass
class StoredVoice:
    info: VoiceInfo
    samples: np.ndarray  # float32, mono
    sample_rate: int


def builtin_audio_file() -> Path:
    """The f5-tts example clip, found without importing f5_tts (whose submodules pull in torch)."""
    spec = importlib.util.find_spec("f5_tts")  # finds the package without executing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location, BUILTIN_AUDIO_PATH)
        if candidate.is_file():
            return candidate
    try:  # a layout where the package is not importable as such: ask the distribution's file list
        candidate = Path(str(importlib.metadata.distribution("f5-tts").locate_file(f"f5_tts/{BUILTIN_AUDIO_PATH}")))
        if candidate.is_file():
            return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"f5-tts's reference clip f5_tts/{BUILTIN_AUDIO_PATH} is not installed")


def _meta_key(name: str) -> str:
    return f"{VOICES_PREFIX}{name}/{META_FILE}"


def _audio_key(name: str, audio_file: str) -> str:
    return f"{VOICES_PREFIX}{name}/{audio_file}"


def _check_name(name: str, field: str) -> str:
    # The contract validates names already; this layer builds object keys from them, so it checks again.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ContractError(
            ErrorCode.invalid_input,
            f"invalid voice name {str(name)[:80]!r}: lowercase letters, digits, '-', '_'; 1-64",
            field,
        )
    return name


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32), int(sample_rate)


class VoiceLibrary:
    """Stored voices in `store`, with a local disk cache under `cache_dir`."""

    def __init__(self, store: ObjectStore, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)
        self._memory: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._memory_lock = threading.Lock()
        # Serialises this process's writes to a voice (a save racing a delete of the same name); writers in
        # other processes are not coordinated: the last metadata written wins.
        self._write_lock = threading.Lock()
        self._builtin: StoredVoice | None = None

    # -------------------------------------------------------------------------------------------- queries
    def exists(self, name: str) -> bool:
        if name == BUILTIN_VOICE:
            return True
        return self.store.head(_meta_key(_check_name(name, "name"))) is not None

    def get(self, name: str) -> StoredVoice:
        """The voice's samples (a private copy) and metadata; voice_not_found if there is none."""
        _check_name(name, "voice")
        if name == BUILTIN_VOICE:
            voice = self._builtin_voice()
            return StoredVoice(voice.info, voice.samples.copy(), voice.sample_rate)
        # One retry: a concurrent overwrite may delete the audio between our reading the old metadata and the
        # audio; the metadata read again then points at the new audio.
        for attempt in range(2):
            meta = self._read_meta(name)
            if meta is None:
                raise ContractError(ErrorCode.voice_not_found, f"voice {name!r} does not exist", "voice")
            try:
                samples, sample_rate = self._load_audio(name, meta)
            except ObjectNotFound:
                if attempt:
                    raise ContractError(
                        ErrorCode.storage_error, f"the audio of voice {name!r} is missing from storage"
                    ) from None
                continue
            return StoredVoice(self._info(meta), samples.copy(), sample_rate)
        raise AssertionError("unreachable")

    def list(self) -> list[VoiceInfo]:
        """Every voice, the built-in ones flagged, sorted by name."""
        voices: dict[str, VoiceInfo] = {}
        try:
            voices[BUILTIN_VOICE] = self._builtin_voice().info
        except ContractError:
            log.exception("the built-in voice is unavailable")
        for key in self.store.list(VOICES_PREFIX):
            parts = key.split("/")
            if len(parts) != 3 or parts[2] != META_FILE or not _NAME.fullmatch(parts[1]) or parts[1] == BUILTIN_VOICE:
                continue
            try:
                meta = self._read_meta(parts[1])
            except CorruptVoice:
                log.warning("skipping voice %r: its metadata is corrupt", parts[1], exc_info=True)
                continue
            if meta is not None:  # None: deleted since the listing
                voices[parts[1]] = self._info(meta)
        return [voices[name] for name in sorted(voices)]

    # -------------------------------------------------------------------------------------------- changes
    def save(
        self,
        name: str,
        samples: np.ndarray,
        sample_rate: int,
        text: str,
        *,
        overwrite: bool = False,
        original_duration: float | None = None,
        clipped: bool = False,
    ) -> UploadVoiceOutput:
        """Store `samples` (float32 mono, normally 24 kHz) with their transcript as voice `name`."""
        _check_name(name, "name")
        if name == BUILTIN_VOICE:
            raise ContractError(ErrorCode.voice_exists, f"{name!r} is a built-in voice and cannot be replaced", "name")
        if not text or not text.strip():
            raise ContractError(ErrorCode.invalid_input, "the voice's transcript is empty", "text")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0 or not np.isfinite(samples).all():
            raise ContractError(ErrorCode.invalid_input, "voice audio must be non-empty, finite, mono samples", "audio")
        if int(sample_rate) <= 0:
            raise ContractError(ErrorCode.invalid_input, f"invalid sample rate {sample_rate}", "audio")

        buffer = io.BytesIO()
        sf.write(buffer, np.clip(samples, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
        wav = buffer.getvalue()
        digest = hashlib.sha256(wav).hexdigest()
        audio_file = f"{digest[:16]}.wav"
        duration = round(samples.size / int(sample_rate), 3)
        meta = {
            "version": META_VERSION,
            "name": name,
            "text": text.strip(),
            "audio": audio_file,
            "sha256": digest,
            "duration": duration,
            "sample_rate": int(sample_rate),
            "original_duration": round(original_duration if original_duration is not None else duration, 3),
            "clipped": bool(clipped),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        with self._write_lock:
            old = self._read_meta(name)
            if old is not None and not overwrite:
                raise ContractError(
                    ErrorCode.voice_exists, f"voice {name!r} already exists; pass overwrite=true to replace it", "name"
                )
            old_audio = old.get("audio") if old else None
            new_audio_key = _audio_key(name, audio_file)
            try:
                self.store.put(new_audio_key, wav, "audio/wav")
                self.store.put(_meta_key(name), json.dumps(meta, indent=2).encode(), "application/json")
            except BaseException:
                # Remove what this save wrote, unless some metadata points at it: the old one (the same audio
                # saved again), or the new one after all (the write landed but its answer was lost).
                if old_audio != audio_file and not self._meta_may_reference(name, audio_file):
                    self._delete_quietly(new_audio_key)
                raise
            if old_audio and old_audio != audio_file:
                # The new metadata is in place; the old audio is now unreferenced. Failing to remove it leaves an
                # orphan, not a broken voice, so it does not fail the save.
                self._delete_quietly(_audio_key(name, old_audio))
                self._drop_cached(old.get("sha256"))
        self._write_cache(digest, wav)
        return UploadVoiceOutput(
            **self._info(meta).model_dump(), clipped=meta["clipped"], original_duration=meta["original_duration"]
        )

    def delete(self, name: str) -> DeleteVoiceOutput:
        _check_name(name, "name")
        if name == BUILTIN_VOICE:
            raise ContractError(ErrorCode.invalid_input, "built-in voices cannot be deleted", "name")
        with self._write_lock:
            meta = self._read_meta(name)
            if meta is None:
                raise ContractError(ErrorCode.voice_not_found, f"voice {name!r} does not exist", "name")
            self.store.delete(_meta_key(name))  # the voice is gone from here on
            if meta.get("audio"):
                self._delete_quietly(_audio_key(name, meta["audio"]))
            self._drop_cached(meta.get("sha256"))
        return DeleteVoiceOutput(name=name, deleted=True)

    # -------------------------------------------------------------------------------------------- internals
    def _read_meta(self, name: str) -> dict | None:
        """The voice's metadata, None if it has none; CorruptVoice if it is unusable."""
        try:
            raw = self.store.get(_meta_key(name))
        except ObjectNotFound:
            return None
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise CorruptVoice(name, f"not JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise CorruptVoice(name, "not a JSON object")
        # The audio file name becomes part of an object key: accept only what save() writes.
        if meta.get("name") != name or not _AUDIO_FILE.fullmatch(str(meta.get("audio"))):
            raise CorruptVoice(name, "bad name or audio fields")
        if not _SHA256.fullmatch(str(meta.get("sha256"))) or not isinstance(meta.get("text"), str):
            raise CorruptVoice(name, "bad sha256 or text fields")
        if not isinstance(meta.get("duration"), (int, float)) or not isinstance(meta.get("sample_rate"), int):
            raise CorruptVoice(name, "bad duration or sample_rate fields")
        return meta

    def _meta_may_reference(self, name: str, audio_file: str) -> bool:
        """Whether the voice's metadata points at `audio_file`; True when that cannot be known (keep the audio)."""
        try:
            meta = self._read_meta(name)
        except ContractError:
            return True
        return meta is not None and meta["audio"] == audio_file

    @staticmethod
    def _info(meta: dict) -> VoiceInfo:
        return VoiceInfo(
            name=meta["name"],
            text=meta["text"],
            duration=meta["duration"],
            sample_rate=meta["sample_rate"],
            builtin=False,
            created_at=meta.get("created_at"),
        )

    def _load_audio(self, name: str, meta: dict) -> tuple[np.ndarray, int]:
        """Samples by content hash: memory, then disk cache, then the store (verified against the hash)."""
        digest = meta["sha256"]
        with self._memory_lock:
            if digest in self._memory:
                self._memory.move_to_end(digest)
                return self._memory[digest]
        wav = self._read_cache(digest)
        if wav is None:
            wav = self.store.get(_audio_key(name, meta["audio"]))
            if hashlib.sha256(wav).hexdigest() != digest:
                raise ContractError(ErrorCode.storage_error, f"the audio of voice {name!r} does not match its checksum")
            self._write_cache(digest, wav)
        try:
            decoded = _decode_wav(wav)
        except RuntimeError as exc:  # soundfile's errors are RuntimeErrors
            raise ContractError(ErrorCode.storage_error, f"the audio of voice {name!r} is unreadable: {exc}") from None
        decoded[0].setflags(write=False)  # shared by every caller through the cache; callers get copies
        with self._memory_lock:
            self._memory[digest] = decoded
            self._memory.move_to_end(digest)
            while len(self._memory) > MEMORY_CACHE_VOICES:
                self._memory.popitem(last=False)
        return decoded

    def _cache_path(self, digest: str) -> Path:
        return self.cache_dir / f"{digest}.wav"

    def _read_cache(self, digest: str) -> bytes | None:
        try:
            data = self._cache_path(digest).read_bytes()
        except OSError:
            return None
        # A cache file that does not hash to its name is damaged: ignore it (it is rewritten on download).
        return data if hashlib.sha256(data).hexdigest() == digest else None

    def _write_cache(self, digest: str, data: bytes) -> None:
        """Best effort: a full or read-only disk costs a download next time, never a failed job."""
        temp_name = None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.cache_dir, prefix=".tmp-", suffix=".part", delete=False
            ) as handle:
                temp_name = handle.name
                handle.write(data)
            os.replace(temp_name, self._cache_path(digest))
            temp_name = None
        except OSError:
            log.warning("could not write the voice cache in %s", self.cache_dir, exc_info=True)
        finally:
            if temp_name is not None:
                Path(temp_name).unlink(missing_ok=True)

    def _drop_cached(self, digest: str | None) -> None:
        if not digest:
            return
        with self._memory_lock:
            self._memory.pop(digest, None)
        try:
            self._cache_path(digest).unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove a stale voice cache file", exc_info=True)

    def _delete_quietly(self, key: str) -> None:
        try:
            self.store.delete(key)
        except ContractError:
            log.warning("could not remove %s; it is left as an orphan", key, exc_info=True)

    def _builtin_voice(self) -> StoredVoice:
        if self._builtin is None:
            try:
                samples, sample_rate = _decode_wav(builtin_audio_file().read_bytes())
            except (OSError, RuntimeError) as exc:  # soundfile's errors are RuntimeErrors
                raise ContractError(
                    ErrorCode.voice_not_found, f"the built-in voice is not available: {exc}", "voice"
                ) from None
            samples.setflags(write=False)
            info = VoiceInfo(
                name=BUILTIN_VOICE,
                text=BUILTIN_TEXT,
                duration=round(samples.size / sample_rate, 3),
                sample_rate=sample_rate,
                builtin=True,
            )
            self._builtin = StoredVoice(info, samples, sample_rate)
        return self._builtin
