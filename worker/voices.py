"""Stored voices: a reference clip and its transcript under a name, kept in the object store.

Layout (one voice = one folder):

    voices/<name>/meta.json                   the metadata; its presence *is* the voice (written last, deleted first)
    voices/<name>/<sha256[:16]>-<nonce>.wav   the normalised clip (PCM16 WAV) the metadata points at

Several workers write to one bucket, so every rule here holds across processes, not only within one:
- Each save writes its audio under a key of its own (content hash plus a random nonce), then the metadata. No
  two saves share an audio object, so audio is only ever deleted by the writer that replaced (or deleted) the
  one metadata that referenced it, and a voice never points at missing audio, whatever the interleaving.
- The metadata is written conditionally: `If-None-Match: *` creates a voice (overwrite=false can never
  replace one: the loser of a race gets voice_exists), `If-Match: <etag>` replaces exactly the version that
  was read (a lost race is read again and retried).
- Where the store lacks conditional writes (Backblaze B2's S3 API answers NotImplemented), the fallback
  writes unconditionally and reads the metadata back: a creation that finds someone else's metadata reports
  voice_exists. Two creations within the same few milliseconds can then both succeed (the last one wins);
  neither breaks the voice.
- A crash between steps leaves only unreferenced audio, never a broken voice; `sweep_orphans` deletes audio no
  metadata points at once it is older than a grace period (saves in flight are younger), after each save or
  delete of that voice and, for all voices, when a worker starts.

Reading a voice costs one small GET (meta.json); the audio comes from a local disk cache and an in-memory LRU,
both keyed by the audio's SHA-256, so an overwritten voice is never served stale and a cached one is never
downloaded twice. The built-in `default` voice is the reference clip that ships with f5-tts.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file
from worker.schema import (
    BUILTIN_VOICE,
    VOICE_NAME_PATTERN,
    ContractError,
    DeleteVoiceOutput,
    ErrorCode,
    UploadVoiceOutput,
    VoiceInfo,
)
from worker.storage import ConditionalWritesUnsupported, ObjectNotFound, ObjectStore, PreconditionFailed
from worker.voice_cache import Decoded, VoiceAudioCache

log = logging.getLogger(__name__)

VOICES_PREFIX = "voices/"
META_FILE = "meta.json"
META_VERSION = 1
# Unreferenced audio younger than this may belong to a save in flight (audio written, metadata not yet).
ORPHAN_GRACE_S = 15 * 60
META_WRITE_ATTEMPTS = 5  # an overwrite that keeps losing the race to other writers gives up after this

_NAME = re.compile(VOICE_NAME_PATTERN)
AUDIO_FILE_PATTERN = r"^[0-9a-f]{16}(-[0-9a-f]{8})?\.wav$"
_AUDIO_FILE = re.compile(AUDIO_FILE_PATTERN)


class VoiceMeta(BaseModel):
    """A voice's meta.json. Strict: what a bucket holds is read back exactly as save() wrote it, or refused as
    corrupt (the audio file name becomes part of an object key: only what save() writes is accepted)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    version: int = META_VERSION
    name: str
    text: str
    audio: Annotated[str, Field(pattern=AUDIO_FILE_PATTERN)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    duration: float
    sample_rate: int
    original_duration: float | None = None  # absent in metadata written before clipping was reported
    clipped: bool = False
    created_at: str | None = None
    # The caller's own notes (absent in metadata written before they were kept); their bounds are the contract's.
    description: str | None = None
    labels: dict[str, str] | None = None

    def info(self) -> VoiceInfo:
        return VoiceInfo(
            name=self.name,
            text=self.text,
            duration=self.duration,
            sample_rate=self.sample_rate,
            builtin=False,
            created_at=self.created_at,
            description=self.description,
            labels=self.labels,
        )


def voice_exists_error(name: str) -> ContractError:
    """The one voice_exists error (the service checks early, the library again when writing)."""
    return ContractError(
        ErrorCode.voice_exists, f"voice {name!r} already exists; pass overwrite=true to replace it", "name"
    )


class CorruptVoice(ContractError):
    """A voice's metadata cannot be used (storage_error); listings skip such voices instead of failing."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(ErrorCode.storage_error, f"the metadata of voice {name!r} is corrupt: {problem}")


@dataclass
class StoredVoice:
    info: VoiceInfo
    samples: np.ndarray  # float32, mono
    sample_rate: int


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

    def __init__(self, store: ObjectStore, cache_dir: Path, *, orphan_grace_s: float | None = None) -> None:
        self.store = store
        self.cache = VoiceAudioCache(cache_dir)
        self.orphan_grace_s = ORPHAN_GRACE_S if orphan_grace_s is None else orphan_grace_s
        # Serialises this process's writes (fewer lost races to retry); other processes are coordinated by
        # the store's conditional writes (see the module docstring).
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
            return StoredVoice(meta.info(), samples.copy(), sample_rate)
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
                voices[parts[1]] = meta.info()
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
        description: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> UploadVoiceOutput:
        """Store `samples` (float32 mono, normally 24 kHz) with their transcript (and the caller's description and
        labels) as voice `name`."""
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
        audio_file = f"{digest[:16]}-{secrets.token_hex(4)}.wav"  # this save's own object (see the docstring)
        duration = round(samples.size / int(sample_rate), 3)
        meta = VoiceMeta(
            name=name,
            text=text.strip(),
            audio=audio_file,
            sha256=digest,
            duration=duration,
            sample_rate=int(sample_rate),
            original_duration=round(original_duration if original_duration is not None else duration, 3),
            clipped=bool(clipped),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            description=description,
            labels=labels,
        )
        encoded_meta = meta.model_dump_json(indent=2).encode()

        with self._write_lock:
            old, old_etag = self._read_meta_with_etag(name)
            if old is not None and not overwrite:
                raise voice_exists_error(name)
            audio_key = _audio_key(name, audio_file)
            try:
                self.store.put(audio_key, wav, "audio/wav")
                old = self._write_meta(name, encoded_meta, old, old_etag, overwrite=overwrite)
            except BaseException:
                # Remove what this save wrote (no one else uses it), unless the metadata write landed after all
                # (its answer was lost on the way back).
                if not self._meta_may_reference(name, audio_file):
                    self._delete_quietly(audio_key)
                raise
            if old is not None:
                # The new metadata is in place; the audio of the version it replaced is referenced by nothing.
                # Failing to remove it leaves an orphan for the sweep, not a broken voice.
                self._delete_quietly(_audio_key(name, old.audio))
                if old.sha256 != digest:
                    self.cache.drop(old.sha256)
        self.cache.keep_wav(digest, wav)
        self.sweep_orphans(name)
        return UploadVoiceOutput(
            **meta.info().model_dump(), clipped=meta.clipped, original_duration=meta.original_duration or duration
        )

    def _write_meta(
        self, name: str, encoded: bytes, old: VoiceMeta | None, old_etag: str | None, *, overwrite: bool
    ) -> VoiceMeta | None:
        """Write the metadata over exactly the version read (`old`), or create it; returns the version replaced.

        A lost race: overwrite=false → voice_exists; overwrite=true → read again and retry.
        """
        key = _meta_key(name)
        for _attempt in range(META_WRITE_ATTEMPTS):
            try:
                self.store.put(
                    key, encoded, "application/json", if_none_match=old is None, if_match=old_etag if old else None
                )
            except PreconditionFailed:
                if not overwrite:
                    raise voice_exists_error(name) from None
                old, old_etag = self._read_meta_with_etag(name)
                continue
            except ConditionalWritesUnsupported:
                return self._write_meta_unconditionally(name, encoded, overwrite=overwrite)
            return old
        raise ContractError(
            ErrorCode.storage_error, f"voice {name!r} kept changing while it was saved; try again", "name"
        )

    def _write_meta_unconditionally(self, name: str, encoded: bytes, *, overwrite: bool) -> VoiceMeta | None:
        """The fallback where the store has no conditional writes: check, write, read back.

        A creation checks that the name is still free just before writing, and afterwards that the metadata
        there is its own (else a concurrent creation won: voice_exists). Only two creations whose check-write
        steps overlap (milliseconds) can both succeed; the last one wins and the voice stays whole. An
        overwrite replaces whatever is there and deletes the audio of the version it read just before (no
        metadata can point at it any more, as every save writes audio of its own); overlapping overwrites
        can leave an orphan, which the sweep removes.
        """
        key = _meta_key(name)
        # Read again just before writing: the version replaced is most likely the one there now.
        old = self._read_meta(name)
        if old is not None and not overwrite:
            raise voice_exists_error(name)
        self.store.put(key, encoded, "application/json")
        if not overwrite:
            current = self._read_meta(name)
            if current is None or current.audio != VoiceMeta.model_validate_json(encoded).audio:
                raise voice_exists_error(name)
        return old

    def delete(self, name: str) -> DeleteVoiceOutput:
        _check_name(name, "name")
        if name == BUILTIN_VOICE:
            raise ContractError(ErrorCode.invalid_input, "built-in voices cannot be deleted", "name")
        with self._write_lock:
            meta = self._read_meta(name)
            if meta is None:
                raise ContractError(ErrorCode.voice_not_found, f"voice {name!r} does not exist", "name")
            self.store.delete(_meta_key(name))  # the voice is gone from here on
            self._delete_quietly(_audio_key(name, meta.audio))
            self.cache.drop(meta.sha256)
        self.sweep_orphans(name)
        return DeleteVoiceOutput(name=name, deleted=True)

    def sweep_orphans(self, name: str | None = None) -> int:
        """Delete audio that no metadata points at and that is older than the grace period; returns how many.

        Best effort (a failure is logged): orphans cost storage, never correctness. `name`: that voice only.
        """
        prefix = f"{VOICES_PREFIX}{name}/" if name else VOICES_PREFIX
        cutoff = datetime.now(UTC).timestamp() - self.orphan_grace_s
        removed = 0
        try:
            by_voice: dict[str, list] = {}
            for info in self.store.list_info(prefix):
                parts = info.key.split("/")
                if len(parts) == 3 and _NAME.fullmatch(parts[1]) and _AUDIO_FILE.fullmatch(parts[2]):
                    by_voice.setdefault(parts[1], []).append(info)
            for voice, audio_objects in by_voice.items():
                stale = [info for info in audio_objects if info.last_modified.timestamp() < cutoff]
                if not stale:
                    continue
                try:
                    meta = self._read_meta(voice)  # read after listing: a save that landed since is seen
                except CorruptVoice:
                    continue  # which audio it means is unknown: keep all of it
                referenced = meta.audio if meta else None
                for info in stale:
                    if info.key.rsplit("/", 1)[1] != referenced:
                        self.store.delete(info.key)
                        removed += 1
        except ContractError:
            log.warning("sweeping unreferenced voice audio failed; it is retried on the next sweep", exc_info=True)
        if removed:
            log.info("removed %d unreferenced voice audio object(s)", removed)
        return removed

    # -------------------------------------------------------------------------------------------- internals
    def _read_meta(self, name: str) -> VoiceMeta | None:
        """The voice's metadata, None if it has none; CorruptVoice if it is unusable."""
        return self._read_meta_with_etag(name)[0]

    def _read_meta_with_etag(self, name: str) -> tuple[VoiceMeta | None, str | None]:
        """The metadata and the etag of that very version (for a conditional overwrite)."""
        try:
            raw, etag = self.store.get_with_etag(_meta_key(name))
        except ObjectNotFound:
            return None, None
        return self._parse_meta(name, raw), etag

    @staticmethod
    def _parse_meta(name: str, raw: bytes) -> VoiceMeta:
        try:
            meta = VoiceMeta.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
            raise CorruptVoice(name, problems[:300]) from None
        if meta.name != name:
            raise CorruptVoice(name, f"it names voice {meta.name[:80]!r}")
        return meta

    def _meta_may_reference(self, name: str, audio_file: str) -> bool:
        """Whether the voice's metadata points at `audio_file`; True when that cannot be known (keep the audio)."""
        try:
            meta = self._read_meta(name)
        except ContractError:
            return True
        return meta is not None and meta.audio == audio_file

    def _load_audio(self, name: str, meta: VoiceMeta) -> Decoded:
        """Samples by content hash: memory, then disk cache, then the store (verified against the hash)."""
        digest = meta.sha256
        if (decoded := self.cache.decoded(digest)) is not None:
            return decoded
        wav = self.cache.wav(digest)
        if wav is None:
            wav = self.store.get(_audio_key(name, meta.audio))
            if hashlib.sha256(wav).hexdigest() != digest:
                raise ContractError(ErrorCode.storage_error, f"the audio of voice {name!r} does not match its checksum")
            self.cache.keep_wav(digest, wav)
        try:
            decoded = _decode_wav(wav)
        except RuntimeError as exc:  # soundfile's errors are RuntimeErrors
            raise ContractError(ErrorCode.storage_error, f"the audio of voice {name!r} is unreadable: {exc}") from None
        self.cache.remember(digest, decoded)
        return decoded

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
                text=BUILTIN_REFERENCE_TEXT,
                duration=round(samples.size / sample_rate, 3),
                sample_rate=sample_rate,
                builtin=True,
            )
            self._builtin = StoredVoice(info, samples, sample_rate)
        return self._builtin
