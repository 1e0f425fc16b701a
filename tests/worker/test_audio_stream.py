"""worker.audio_stream: pieces of audio in, one encoded file out as it is produced (raw PCM, WAV, real ffmpeg)."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator

import numpy as np
import pytest

from tests.support import ffmpeg_decode
from worker.audio_stream import PCM_SAMPLE_RATE, encode_stream, pcm16

RNG = np.random.default_rng(3)
PIECES = [(0.5 * RNG.standard_normal(n)).clip(-1, 1).astype(np.float32) for n in (2400, 7, 12000)]


def encoded(pieces: list[np.ndarray], sample_rate: int, fmt: str) -> list[bytes]:
    async def source() -> AsyncIterator[np.ndarray]:
        for piece in pieces:
            yield piece

    async def collect() -> list[bytes]:
        return [data async for data in encode_stream(source(), sample_rate, fmt)]

    return asyncio.run(collect())


def test_pcm16_clips_and_rounds_to_little_endian_int16() -> None:
    samples = np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5], dtype=np.float32)
    assert np.frombuffer(pcm16(samples), dtype="<i2").tolist() == [0, 32767, -32767, 32767, -32767, 16384]


def test_pcm_is_one_output_per_piece_and_the_samples_in_order() -> None:
    out = encoded(PIECES, PCM_SAMPLE_RATE, "pcm")
    assert out == [pcm16(piece) for piece in PIECES]


def test_wav_is_a_streaming_header_then_the_pcm() -> None:
    out = encoded(PIECES, PCM_SAMPLE_RATE, "wav")
    assert len(out) == 1 + len(PIECES) and len(out[0]) == 44
    with wave.open(io.BytesIO(b"".join(out))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (PCM_SAMPLE_RATE, 1, 2)
        frames = w.readframes(sum(p.size for p in PIECES))
    assert frames == b"".join(pcm16(piece) for piece in PIECES)


def test_other_rates_are_resampled_to_24_khz() -> None:
    second = np.zeros(16000, dtype=np.float32)  # one second at 16 kHz
    pcm = b"".join(encoded([second, second], 16000, "pcm"))
    assert abs(len(pcm) // 2 - 2 * PCM_SAMPLE_RATE) <= 2 * 8  # two seconds at 24 kHz (a few samples of filter edge)


def test_flac_through_ffmpeg_is_lossless() -> None:
    data = b"".join(encoded(PIECES, PCM_SAMPLE_RATE, "flac"))
    assert data.startswith(b"fLaC")
    # Decoded by FFmpeg: a streamed FLAC's header leaves its length unknown, which libsndfile refuses.
    decoded = ffmpeg_decode(data, PCM_SAMPLE_RATE, "s16le")
    assert decoded.tobytes() == b"".join(pcm16(piece) for piece in PIECES)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac"])
def test_lossy_formats_decode_to_about_the_same_duration(fmt: str, ffprobe_duration) -> None:
    data = b"".join(encoded(PIECES, PCM_SAMPLE_RATE, fmt))
    seconds = sum(p.size for p in PIECES) / PCM_SAMPLE_RATE
    assert abs(ffprobe_duration(data) - seconds) < 0.1  # encoder padding and frame sizes, no more


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown streaming format"):
        encoded(PIECES, PCM_SAMPLE_RATE, "wma")
