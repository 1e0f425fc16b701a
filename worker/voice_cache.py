"""Voice audio cached by content hash (SHA-256 of the stored WAV): decoded samples in a small in-memory LRU, the
WAV bytes on local disk. Keyed by the hash, so an overwritten voice is never served stale and a cached one is
never downloaded twice. Every write is best effort: a full or read-only disk costs a download, never a job."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from worker.storage import write_file_atomically

log = logging.getLogger(__name__)

MEMORY_CACHE_VOICES = 8

Decoded = tuple[np.ndarray, int]  # float32 mono samples (read-only: shared by every caller), sample rate


class VoiceAudioCache:
    def __init__(self, cache_dir: Path, memory_entries: int = MEMORY_CACHE_VOICES) -> None:
        self.cache_dir = Path(cache_dir)
        self.memory_entries = memory_entries
        self._memory: OrderedDict[str, Decoded] = OrderedDict()
        self._lock = threading.Lock()

    def decoded(self, digest: str) -> Decoded | None:
        """The decoded audio if it is in memory (it becomes the most recently used)."""
        with self._lock:
            if digest not in self._memory:
                return None
            self._memory.move_to_end(digest)
            return self._memory[digest]

    def remember(self, digest: str, decoded: Decoded) -> None:
        decoded[0].setflags(write=False)  # shared by every caller; callers take copies
        with self._lock:
            self._memory[digest] = decoded
            self._memory.move_to_end(digest)
            while len(self._memory) > self.memory_entries:
                self._memory.popitem(last=False)

    def wav(self, digest: str) -> bytes | None:
        """The WAV bytes from disk, if cached there intact."""
        try:
            data = self._path(digest).read_bytes()
        except OSError:
            return None
        # A cache file that does not hash to its name is damaged: ignore it (it is rewritten on download).
        return data if hashlib.sha256(data).hexdigest() == digest else None

    def keep_wav(self, digest: str, data: bytes) -> None:
        try:
            write_file_atomically(self._path(digest), data, durable=False)
        except OSError:
            log.warning("could not write the voice cache in %s", self.cache_dir, exc_info=True)

    def drop(self, digest: str) -> None:
        with self._lock:
            self._memory.pop(digest, None)
        try:
            self._path(digest).unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove a stale voice cache file", exc_info=True)

    def _path(self, digest: str) -> Path:
        return self.cache_dir / f"{digest}.wav"
