"""worker.voice_cache: decoded voices in a small LRU in memory, their WAV bytes on disk under their SHA-256, and
every write best effort (a broken disk costs a download, never a job)."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.voice_cache import VoiceAudioCache

RATE = 24000


def voice(seed: int) -> tuple[str, bytes, np.ndarray]:
    """(digest, WAV bytes, samples) of a short random voice, as the voice library stores one."""
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, RATE // 10).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="FLOAT")
    wav = buffer.getvalue()
    return hashlib.sha256(wav).hexdigest(), wav, samples


# ------------------------------------------------------------------------------------------------ memory
def test_decoded_audio_is_kept_shared_and_read_only(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path)
    digest, _, samples = voice(1)
    assert cache.decoded(digest) is None
    cache.remember(digest, (samples, RATE))
    kept, rate = cache.decoded(digest) or (None, 0)
    assert kept is samples and rate == RATE  # the same array for every caller, not a copy each
    with pytest.raises(ValueError, match="read-only"):
        kept[0] = 1.0  # so no caller can change what the next one gets


def test_memory_keeps_the_most_recently_used_voices(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path, memory_entries=2)
    (a, _, wave_a), (b, _, wave_b), (c, _, wave_c) = voice(1), voice(2), voice(3)
    cache.remember(a, (wave_a, RATE))
    cache.remember(b, (wave_b, RATE))
    assert cache.decoded(a) is not None  # a is now more recent than b
    cache.remember(c, (wave_c, RATE))
    assert cache.decoded(b) is None  # the least recently used went
    assert cache.decoded(a) is not None and cache.decoded(c) is not None


def test_threads_sharing_the_cache_never_exceed_its_size(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path, memory_entries=3)
    voices = [voice(seed) for seed in range(12)]
    errors: list[BaseException] = []

    def use(offset: int) -> None:
        try:
            for round_ in range(50):
                digest, _, samples = voices[(offset + round_) % len(voices)]
                if cache.decoded(digest) is None:
                    cache.remember(digest, (samples.copy(), RATE))
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=use, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(cache.decoded(digest) is not None for digest, _, _ in voices) == 3


# ------------------------------------------------------------------------------------------------ disk
def test_wav_bytes_are_kept_on_disk_under_their_hash(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path / "voices")  # made on first write
    digest, wav, samples = voice(1)
    assert cache.wav(digest) is None
    cache.keep_wav(digest, wav)
    assert cache.wav(digest) == wav
    assert [p.name for p in (tmp_path / "voices").iterdir()] == [f"{digest}.wav"]  # no temporary file left
    decoded, rate = sf.read(io.BytesIO(cache.wav(digest) or b""), dtype="float32")
    assert rate == RATE and np.array_equal(decoded, samples)
    # Another cache on the same folder (the next worker process) finds it.
    assert VoiceAudioCache(tmp_path / "voices").wav(digest) == wav


def test_a_damaged_cache_file_is_ignored_then_rewritten(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path)
    digest, wav, _ = voice(1)
    cache.keep_wav(digest, wav)
    (tmp_path / f"{digest}.wav").write_bytes(wav[: len(wav) // 2])  # a torn write, a disk error
    assert cache.wav(digest) is None
    cache.keep_wav(digest, wav)  # what the library does after downloading it again
    assert cache.wav(digest) == wav


def test_drop_forgets_a_voice_in_memory_and_on_disk(tmp_path: Path) -> None:
    cache = VoiceAudioCache(tmp_path)
    (digest, wav, samples), (other, other_wav, other_samples) = voice(1), voice(2)
    for d, w, s in ((digest, wav, samples), (other, other_wav, other_samples)):
        cache.keep_wav(d, w)
        cache.remember(d, (s, RATE))
    cache.drop(digest)
    assert cache.decoded(digest) is None and cache.wav(digest) is None
    assert not (tmp_path / f"{digest}.wav").exists()
    assert cache.decoded(other) is not None and cache.wav(other) == other_wav  # the others stay
    cache.drop(digest)  # dropping what is not there is no error


def test_a_disk_that_cannot_be_written_costs_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache folder should be")
    cache = VoiceAudioCache(blocker / "voices")
    digest, wav, samples = voice(1)
    with caplog.at_level(logging.WARNING, logger="worker.voice_cache"):
        cache.keep_wav(digest, wav)
    assert "could not write the voice cache" in caplog.text
    assert cache.wav(digest) is None
    cache.remember(digest, (samples, RATE))  # memory still works
    assert cache.decoded(digest) is not None


def test_a_cache_file_that_cannot_be_removed_costs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = VoiceAudioCache(tmp_path)
    digest, _, samples = voice(1)
    (tmp_path / f"{digest}.wav").mkdir()  # unlink() fails on a directory
    cache.remember(digest, (samples, RATE))
    with caplog.at_level(logging.WARNING, logger="worker.voice_cache"):
        cache.drop(digest)
    assert "could not remove a stale voice cache file" in caplog.text
    assert cache.decoded(digest) is None  # memory is dropped all the same
