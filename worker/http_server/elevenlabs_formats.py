"""ElevenLabs' `output_format`s: what each name means, and encoding a speech's pieces in it as they come.

A name is `codec_samplerate[_bitrate]` (ElevenLabs' list, as its SDK types it):

- `mp3_<rate>_<kbps>`: MP3 (LAME) at that rate and bitrate;
- `pcm_<rate>`: raw signed 16-bit little-endian mono, no header;
- `ulaw_8000`, `alaw_8000`: raw G.711 μ-law / A-law bytes at 8 kHz, what telephony (Twilio) takes;
- `opus_48000_<kbps>`: Opus in Ogg at 48 kHz and that bitrate;
- `wav_<rate>`: a 16-bit PCM WAV; its header says "length unknown" (sizes 0xFFFFFFFF, as streaming servers write
  it), so a streamed file and a whole one are the same bytes.

Every format is one stream over the whole speech (one resampler, one encoder), so the bytes do not depend on how
the speech was cut into pieces or read: streamed bytes, joined, are the unstreamed bytes. ffmpeg runs with
`bitexact` flags, so the same samples give the same bytes (Ogg's stream serial number is otherwise random).

Used by the REST routes (`worker/http_server/elevenlabs.py`) and the realtime WebSocket route alike.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from worker.audio_stream import ffmpeg_stream, pcm16, streaming_wav_header
from worker.schema import ContractError, ErrorCode

Codec = Literal["mp3", "pcm", "ulaw", "alaw", "opus", "wav"]

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
# ElevenLabs' MP3 and Opus formats: (rate, kbps). MP3 at 22.05 and 24 kHz is MPEG-2 Layer III, whose bitrates
# stop at 160 kbps, which is why ElevenLabs offers only low ones there.
MP3_FORMATS = ((22050, 32), (24000, 48), (44100, 32), (44100, 64), (44100, 96), (44100, 128), (44100, 192))
OPUS_BITRATES = (32, 64, 96, 128, 192)
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # ElevenLabs' default

CONTENT_TYPES: dict[Codec, str] = {
    "mp3": "audio/mpeg",
    "pcm": "audio/pcm",
    "ulaw": "audio/basic",  # RFC 2046's audio/basic is 8 kHz mono μ-law
    "alaw": "audio/PCMA",  # IANA's G.711 A-law type (RFC 4856)
    "opus": "audio/ogg",
    "wav": "audio/wav",
}

_BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact"]


@dataclass(frozen=True)
class OutputFormat:
    """One of ElevenLabs' output formats."""

    name: str
    codec: Codec
    sample_rate: int
    bitrate_kbps: int | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.codec]

    def ffmpeg_args(self) -> list[str]:
        """ffmpeg's output options for this format (streamable containers, no header to patch afterwards)."""
        rate = ["-ar", str(self.sample_rate)]
        if self.codec == "mp3":
            return [*rate, "-c:a", "libmp3lame", "-b:a", f"{self.bitrate_kbps}k", *_BITEXACT, "-f", "mp3"]
        if self.codec == "opus":
            encoder = ["-c:a", "libopus", "-b:a", f"{self.bitrate_kbps}k", "-page_duration", "200000"]
            return [*rate, *encoder, *_BITEXACT, "-f", "ogg"]
        if self.codec == "ulaw":
            return [*rate, "-c:a", "pcm_mulaw", "-f", "mulaw"]
        if self.codec == "alaw":
            return [*rate, "-c:a", "pcm_alaw", "-f", "alaw"]
        return [*rate, "-c:a", "pcm_s16le", "-f", "s16le"]  # pcm, and wav's data after our header


def _all_formats() -> dict[str, OutputFormat]:
    formats = [OutputFormat(f"mp3_{rate}_{kbps}", "mp3", rate, kbps) for rate, kbps in MP3_FORMATS]
    formats += [OutputFormat(f"{codec}_{rate}", codec, rate) for codec in ("pcm", "wav") for rate in PCM_RATES]
    formats += [OutputFormat("ulaw_8000", "ulaw", 8000), OutputFormat("alaw_8000", "alaw", 8000)]
    formats += [OutputFormat(f"opus_48000_{kbps}", "opus", 48000, kbps) for kbps in OPUS_BITRATES]
    return {f.name: f for f in formats}


OUTPUT_FORMATS: dict[str, OutputFormat] = _all_formats()


def parse_output_format(name: str | None) -> OutputFormat:
    """The format `name` names (ElevenLabs' default for None); `invalid_input` on `output_format` otherwise."""
    if name is None:
        return OUTPUT_FORMATS[DEFAULT_OUTPUT_FORMAT]
    found = OUTPUT_FORMATS.get(name)
    if found is None:
        raise ContractError(
            ErrorCode.invalid_input,
            f"unknown output_format {name[:40]!r}; one of: {', '.join(OUTPUT_FORMATS)}",
            "output_format",
        )
    return found


async def encode_output(
    pieces: AsyncIterator[np.ndarray], sample_rate: int, output: OutputFormat
) -> AsyncGenerator[bytes, None]:
    """Float32 mono pieces at `sample_rate`, in order, as one `output` stream, yielded as it is encoded."""
    if output.codec == "wav":
        yield streaming_wav_header(output.sample_rate)
    if output.codec in ("pcm", "wav") and output.sample_rate == sample_rate:
        async for samples in pieces:  # already at the asked rate: no encoder needed
            yield pcm16(samples)
        return
    async for data in ffmpeg_stream(pieces, sample_rate, output.ffmpeg_args()):
        yield data
