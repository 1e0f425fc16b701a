"""worker.crossfade: chunk waves joined with f5-tts's linear cross-fade, at once or as they arrive."""

from __future__ import annotations

import numpy as np
import pytest

from worker.crossfade import CrossFader, cross_fade

RATE = 24000


@pytest.mark.parametrize("seconds", [0.0, 0.15, 1.0])
def test_pushing_waves_one_by_one_gives_the_whole_join(seconds: float) -> None:
    rng = np.random.default_rng(7)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (30_000, 256, 5_000, 24_000, 700, 40_000)]
    fader = CrossFader(24000, seconds)
    pieces = [fader.push(w) for w in waves]
    pieces[-1] = np.concatenate([pieces[-1], fader.finish()])
    assert np.array_equal(np.concatenate(pieces), cross_fade(waves, 24000, seconds))
    held = int(seconds * 24000)
    assert pieces[0].size == waves[0].size - held  # the first piece holds back exactly the fade


def test_no_fade_is_plain_concatenation() -> None:
    waves = [np.full(n, float(i), dtype=np.float32) for i, n in enumerate((100, 1, 50), start=1)]
    assert np.array_equal(cross_fade(waves, RATE, 0.0), np.concatenate(waves))


def test_a_fade_blends_linearly_and_shortens_the_join_by_its_length() -> None:
    fade = 240  # 10 ms at 24 kHz
    joined = cross_fade([np.ones(1000, np.float32), np.zeros(1000, np.float32)], RATE, fade / RATE)
    assert joined.dtype == np.float32 and joined.size == 2000 - fade
    assert np.all(joined[: 1000 - fade] == 1) and np.all(joined[1000:] == 0)
    blend = joined[1000 - fade : 1000]
    assert blend[0] == 1 and blend[-1] == 0 and np.all(np.diff(blend) < 0)  # from the first wave into the second
    assert np.allclose(blend, np.linspace(1, 0, fade))


def test_the_fade_is_capped_by_the_shorter_side() -> None:
    joined = cross_fade([np.ones(1000, np.float32), np.zeros(10, np.float32)], RATE, 1.0)
    assert joined.size == 1000  # only the second wave's 10 samples overlap
    assert np.array_equal(cross_fade([np.ones(7, np.float32)], RATE, 1.0), np.ones(7, np.float32))


def test_wave_start_is_where_each_pushed_wave_begins_on_the_joined_timeline() -> None:
    fader = CrossFader(RATE, 100 / RATE)
    starts = []
    for size in (1000, 500, 50):
        fader.push(np.zeros(size, np.float32))
        starts.append(fader.wave_start)
    assert starts == [0, 900, 1350]  # each overlaps the one before by the fade (the last by its own 50 samples)


def test_no_waves_join_to_nothing() -> None:
    joined = cross_fade([], RATE, 0.15)
    assert joined.size == 0 and joined.dtype == np.float32
