"""ElevenLabs' output formats (worker/http_server/elevenlabs_formats.py): every name parses to its codec, rate and
bitrate; every one encodes through the real ffmpeg to audio a decoder reads at that rate; the bytes do not depend
on how the speech is cut into pieces; an unknown name is a coded error."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator

import numpy as np
import pytest

from worker.http_server.elevenlabs_formats import (
    DEFAULT_OUTPUT_FORMAT,
    OUTPUT_FORMATS,
    OutputFormat,
    encode_output,
    parse_output_format,
)
from worker.schema import ContractError, ErrorCode

pytestmark = [pytest.mark.timeout(120), pytest.mark.anyio]

RATE = 24000
# A second of a 440 Hz tone at F5's rate: real audio for every encoder.
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
# The names ElevenLabs' SDK types `output_format` with (elevenlabs 2.x).
SDK_FORMATS = {
    "alaw_8000",
    "mp3_22050_32",
    "mp3_24000_48",
    "mp3_44100_128",
    "mp3_44100_192",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "opus_48000_128",
    "opus_48000_192",
    "opus_48000_32",
    "opus_48000_64",
    "opus_48000_96",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_32000",
    "pcm_44100",
    "pcm_48000",
    "pcm_8000",
    "ulaw_8000",
    "wav_16000",
    "wav_22050",
    "wav_24000",
    "wav_32000",
    "wav_44100",
    "wav_48000",
    "wav_8000",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def pieces_of(samples: np.ndarray, sizes: list[int]) -> AsyncIterator[np.ndarray]:
    at = 0
    for size in sizes:
        yield samples[at : at + size]
        at += size
    yield samples[at:]


async def encoded(output: OutputFormat, sizes: list[int]) -> bytes:
    return b"".join([data async for data in encode_output(pieces_of(TONE, sizes), RATE, output)])


def probe(data: bytes, output: OutputFormat) -> tuple[int, float]:
    """(sample rate, seconds) as ffprobe/ffmpeg read the bytes; raw formats are told what they are."""
    raw = {"pcm": ["-f", "s16le"], "ulaw": ["-f", "mulaw"], "alaw": ["-f", "alaw"]}.get(output.codec)
    given = [*raw, "-ar", str(output.sample_rate), "-ac", "1"] if raw else []
    info = subprocess.run(
        ["ffprobe", "-v", "error", *given, "-show_streams", "-of", "json", "-i", "pipe:0"],
        input=data,
        capture_output=True,
        check=True,
    )
    stream = json.loads(info.stdout)["streams"][0]
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", *given, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(RATE), "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    samples = np.frombuffer(pcm, dtype=np.float32)
    assert np.abs(samples).max() > 0.1  # the tone survived
    return int(stream["sample_rate"]), samples.size / RATE


def test_every_name_elevenlabs_sdk_types_is_served_and_means_what_it_says():
    assert set(OUTPUT_FORMATS) == SDK_FORMATS
    assert parse_output_format(None).name == DEFAULT_OUTPUT_FORMAT == "mp3_44100_128"
    assert parse_output_format("mp3_22050_32") == OutputFormat("mp3_22050_32", "mp3", 22050, 32)
    assert parse_output_format("opus_48000_64").bitrate_kbps == 64
    assert parse_output_format("ulaw_8000").sample_rate == 8000


@pytest.mark.parametrize("name", ["mp3_44100_129", "pcm_12345", "flac", "", "ulaw_16000", "x" * 500])
def test_an_unknown_name_is_invalid_input_on_output_format(name):
    with pytest.raises(ContractError) as caught:
        parse_output_format(name)
    assert caught.value.code == ErrorCode.invalid_input and caught.value.body.field == "output_format"
    assert len(caught.value.body.message) < 1200  # caller input is cut


@pytest.mark.parametrize("name", sorted(SDK_FORMATS))
async def test_each_format_decodes_at_its_rate_and_length(name):
    output = OUTPUT_FORMATS[name]
    data = await encoded(output, [7000, 9000])
    rate, seconds = probe(data, output)
    assert rate == output.sample_rate
    assert abs(seconds - 1.0) < 0.08, seconds
    if output.codec == "wav":
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if output.codec == "pcm":
        assert len(data) == pytest.approx(2 * output.sample_rate, abs=64)
    if output.codec in ("ulaw", "alaw"):
        assert len(data) == pytest.approx(8000, abs=32)  # one byte a sample


@pytest.mark.parametrize("name", ["mp3_44100_128", "opus_48000_64", "pcm_16000", "ulaw_8000", "wav_24000"])
async def test_the_bytes_do_not_depend_on_how_the_speech_is_cut(name):
    output = OUTPUT_FORMATS[name]
    whole = await encoded(output, [])
    assert await encoded(output, [1, 5000, 3, 12000]) == whole
    assert await encoded(output, []) == whole  # and the same samples give the same bytes (Ogg's serial too)


async def test_mp3_bitrates_are_the_named_ones():
    low = await encoded(OUTPUT_FORMATS["mp3_44100_32"], [])
    high = await encoded(OUTPUT_FORMATS["mp3_44100_192"], [])
    # A second at 32 kbps is 4 kB of frames, at 192 kbps 24 kB (plus a small ID3 header each).
    assert 3000 < len(low) < 6000 < 20000 < len(high) < 28000, (len(low), len(high))
