"""Joining chunk waves with a cross-fade, all at once or as they arrive (plain numpy, no torch).

Whole results and streams join through the same `CrossFader`, so a stream's pieces, played in order, are the
whole result sample for sample: the fade is f5-tts's own (infer_batch_process: a linear cross-fade over
`cross_fade_duration`, capped by the shorter side; plain concatenation at 0), and a stream holds back each
chunk's last `cross_fade_duration` until the next chunk exists to blend it with.
"""

from __future__ import annotations

import numpy as np


class CrossFader:
    """Feed chunk waves in order with `push`; each call returns the audio that is final so far. `finish` returns
    the held-back tail after the last wave."""

    def __init__(self, sample_rate: int, seconds: float) -> None:
        self.fade = int(seconds * sample_rate) if seconds > 0 else 0
        # The last min(fade, joined so far) samples: the part the next wave may still blend into.
        self._tail = np.zeros(0, dtype=np.float32)
        self._joined = 0  # samples joined so far (returned plus held back)
        # Where the last pushed wave begins on the joined timeline, in samples: the offset of its words.
        self.wave_start = 0

    def push(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        overlap = min(self.fade, self._tail.size, wave.size)
        self.wave_start = self._joined - overlap
        self._joined += wave.size - overlap
        if overlap > 0:
            faded = self._tail[-overlap:] * np.linspace(1, 0, overlap) + wave[:overlap] * np.linspace(0, 1, overlap)
            joined = np.concatenate([self._tail[:-overlap], faded.astype(np.float32), wave[overlap:]])
        else:
            joined = np.concatenate([self._tail, wave])
        final = joined.size - min(self.fade, joined.size)
        self._tail = joined[final:]
        return joined[:final]

    def finish(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail


def cross_fade(waves: list[np.ndarray], sample_rate: int, seconds: float) -> np.ndarray:
    """Join chunk waves at once: linear cross-fade over `seconds` (capped by the shorter side), plain
    concatenation when `seconds` <= 0. A single wave passes through."""
    fader = CrossFader(sample_rate, seconds)
    parts = [fader.push(wave) for wave in waves]
    return np.concatenate([*parts, fader.finish()]).astype(np.float32, copy=False)
