"""Encoding audio while it is still being generated: one response's pieces in, encoded bytes out as they come.

Used by the http serving mode (`/v1/audio/speech`), where the response body is the audio file itself and its
first bytes leave as soon as the first text chunk is synthesized. The formats are OpenAI's `response_format`s:

- `pcm`: raw signed 16-bit little-endian mono at 24 kHz, as OpenAI's;
- `wav`: a RIFF header whose sizes say "unknown" (0xFFFFFFFF, as streaming servers write it), then the PCM;
- `mp3`, `opus` (in Ogg), `aac` (ADTS), `flac`: one ffmpeg process per response, fed PCM on stdin while its
  encoded output is read from stdout, both on the event loop (asyncio subprocess pipes: no thread per response).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np

from worker.audio import resample
from worker.model_facts import SAMPLE_RATE

STREAM_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAM_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg Opus (RFC 7845): what OpenAI's `opus` is too
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
PCM_SAMPLE_RATE = SAMPLE_RATE  # OpenAI's pcm is 24 kHz, and so is F5-TTS's output

_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
# Streamable containers only (no seeking back to patch a header): ADTS for AAC, Ogg pages for Opus.
# `-flush_packets 1` hands each encoded packet to the pipe at once instead of filling a 32 kB buffer first.
_FFMPEG_ENCODERS: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "96k", "-f", "mp3"],
    "opus": ["-ar", "48000", "-c:a", "libopus", "-b:a", "48k", "-page_duration", "200000", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "96k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}
_READ_SIZE = 64 * 1024


def pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] → signed 16-bit little-endian bytes."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 44-byte PCM16 mono WAV header for a stream of unknown length (sizes 0xFFFFFFFF; readers take the rest)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


async def encode_stream(pieces: AsyncIterator[np.ndarray], sample_rate: int, fmt: str) -> AsyncGenerator[bytes, None]:
    """Encode float32 mono pieces (in order) as one `fmt` file, yielding its bytes as the encoder produces them."""
    if fmt not in STREAM_CONTENT_TYPES:
        raise ValueError(f"unknown streaming format {fmt!r}")
    if sample_rate != PCM_SAMPLE_RATE:
        pieces = _resampled(pieces, sample_rate)
    if fmt in ("pcm", "wav"):
        if fmt == "wav":
            yield streaming_wav_header(PCM_SAMPLE_RATE)
        async for samples in pieces:
            yield pcm16(samples)
        return
    async for data in _ffmpeg_stream(pieces, fmt):
        yield data


async def _resampled(pieces: AsyncIterator[np.ndarray], sample_rate: int) -> AsyncIterator[np.ndarray]:
    async for samples in pieces:
        yield resample(samples, sample_rate, PCM_SAMPLE_RATE)


async def _ffmpeg_stream(pieces: AsyncIterator[np.ndarray], fmt: str) -> AsyncIterator[bytes]:
    raw_input = ["-f", "s16le", "-ar", str(PCM_SAMPLE_RATE), "-ac", "1", "-i", "pipe:0"]
    command = [*_FFMPEG, *raw_input, *_FFMPEG_ENCODERS[fmt], "-flush_packets", "1", "pipe:1"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    async def feed() -> None:
        try:
            async for samples in pieces:
                stdin.write(pcm16(samples))
                await stdin.drain()
        finally:
            stdin.close()  # end of input: ffmpeg flushes its encoder and exits

    feeder = asyncio.create_task(feed())
    stderr = asyncio.create_task(proc.stderr.read())
    try:
        while data := await proc.stdout.read(_READ_SIZE):
            yield data
        await feeder  # a failure of the pieces (the synthesis) is raised here
        if await proc.wait() != 0:
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {(await stderr).decode(errors='replace')[-500:]}")
    finally:
        feeder.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        stderr.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
