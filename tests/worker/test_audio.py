"""worker.audio through the real codecs: libsndfile (soundfile) and the ffmpeg CLI."""

from __future__ import annotations

import io
import json
import mimetypes
import subprocess
from typing import get_args

import numpy as np
import pytest
import soundfile as sf

from tests.support import ffmpeg_decode
from worker import audio
from worker.schema import AudioFormat, ContractError, ErrorCode

SR = 24000


def tone(seconds: float, sample_rate: int = SR, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    # A little noise keeps lossy codecs honest (a pure sine compresses to almost nothing).
    noise = np.random.default_rng(0).standard_normal(t.size) * amplitude * 0.05
    return (amplitude * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def silence(seconds: float, sample_rate: int = SR) -> np.ndarray:
    return np.zeros(int(seconds * sample_rate), dtype=np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int = SR, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def code_of(excinfo: pytest.ExceptionInfo[ContractError]) -> ErrorCode:
    return excinfo.value.code


# ------------------------------------------------------------------------------------------------ encoding
# libsndfile writes all four; the ffmpeg CLI is the fallback for mp3 and ogg (Opus) only.
@pytest.mark.parametrize(
    ("encoder", "fmt"),
    [
        ("soundfile", "wav"),
        ("soundfile", "flac"),
        ("soundfile", "mp3"),
        ("soundfile", "ogg"),
        ("ffmpeg", "mp3"),
        ("ffmpeg", "ogg"),
    ],
)
def test_every_format_round_trips_with_its_duration(encoder: str, fmt: str) -> None:
    samples = tone(1.234)
    encode = audio.encode_audio if encoder == "soundfile" else audio.encode_audio_ffmpeg
    data = encode(samples, SR, fmt)
    expected = samples.size / SR

    by_soundfile, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert abs(len(by_soundfile) / rate - expected) < 0.05
    by_ffmpeg = ffmpeg_decode(data)
    assert abs(by_ffmpeg.size / SR - expected) < 0.05
    decoded, decoded_rate = audio.decode_audio(data)
    assert abs(decoded.size / decoded_rate - expected) < 0.05
    # The content survives, not only the length: the loudness is within 1.5 dB.
    rms_in, rms_out = np.sqrt(np.mean(samples**2)), np.sqrt(np.mean(by_ffmpeg**2))
    assert abs(20 * np.log10(rms_out / rms_in)) < 1.5


def test_every_format_the_contract_offers_has_a_content_type() -> None:
    assert set(audio.CONTENT_TYPES) == set(get_args(AudioFormat))


@pytest.mark.parametrize("fmt", sorted(set(get_args(AudioFormat)) - {"pcm"}))
def test_each_encoded_format_is_recognised_as_its_content_type(fmt: str) -> None:
    """ffmpeg's probe (a real demuxer sniffing the bytes, no file name to go by) finds the container the format
    names, and the content type sent with it is the standard one for that container (Python's mimetypes table;
    `audio/x-wav` and `audio/wav` are the same type, the second the spelling browsers and OpenAI use)."""
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name:stream=codec_name", "-of", "json", "pipe:0"],
        input=audio.encode_audio(tone(0.5), SR, fmt),
        capture_output=True,
        check=True,
        timeout=60,
    )
    report = json.loads(probed.stdout)
    container, (stream,) = report["format"]["format_name"], report["streams"]
    assert container == fmt
    if fmt == "ogg":
        assert stream["codec_name"] == "opus"  # Ogg Opus: what OpenAI's `opus` format is
    standard, _ = mimetypes.guess_type(f"speech.{container}", strict=False)
    assert standard is not None and audio.CONTENT_TYPES[fmt] == standard.replace("/x-", "/")


def test_pcm_is_headerless_16_bit_little_endian() -> None:
    # `audio/pcm` has no container to sniff: the bytes are the samples themselves, as OpenAI's `pcm` sends them.
    samples = tone(0.5)
    data = audio.encode_audio(samples, SR, "pcm")
    assert len(data) == 2 * samples.size
    decoded = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767
    assert np.abs(decoded - samples).max() < 1e-4


# ------------------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("data", [b"", b"this is not audio at all " * 40, b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_undecodable_input_is_audio_unreadable(data: bytes) -> None:
    with pytest.raises(ContractError) as excinfo:
        audio.decode_audio(data)
    assert code_of(excinfo) == ErrorCode.audio_unreadable


def test_nan_samples_are_refused() -> None:
    samples = tone(1.0)
    samples[100] = np.nan
    with pytest.raises(ContractError) as excinfo:
        audio.decode_audio(wav_bytes(samples, subtype="FLOAT"))
    assert code_of(excinfo) == ErrorCode.audio_unreadable


def test_absurdly_long_audio_is_too_large() -> None:
    # 11 minutes at 1 kHz: small in bytes, refused from the header before it is decoded.
    with pytest.raises(ContractError) as excinfo:
        audio.decode_audio(wav_bytes(np.zeros(660 * 1000, dtype=np.float32), sample_rate=1000))
    assert code_of(excinfo) == ErrorCode.audio_too_large


def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path) -> None:
    source = tone(1.5)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "pipe:0", "-c:a", "aac", str(m4a)],
        input=source.tobytes(),
        check=True,
        timeout=60,
    )
    with pytest.raises(sf.LibsndfileError):
        sf.read(io.BytesIO(m4a.read_bytes()))
    samples, rate = audio.decode_audio(m4a.read_bytes())
    assert rate == SR and samples.dtype == np.float32
    assert abs(samples.size / rate - 1.5) < 0.05


def test_stereo_44k1_becomes_mono_24k() -> None:
    left, right = tone(2.0, 44100), silence(2.0, 44100)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([left, right], axis=1), 44100, format="FLAC")
    samples, rate = audio.decode_audio(buffer.getvalue())
    assert samples.ndim == 1 and rate == 44100
    assert np.allclose(samples, (left + right) / 2, atol=1e-3)

    prepared = audio.prepare_reference(buffer.getvalue(), "A test tone.")
    assert prepared.sample_rate == 24000 and prepared.samples.ndim == 1 and prepared.samples.dtype == np.float32
    assert abs(prepared.original_duration - 2.0) < 0.01
    assert 1.9 < prepared.duration < 2.1  # edges already voiced: nothing to trim


# ------------------------------------------------------------------------------------------------ references
PHRASES = [
    "The first phrase is here,",
    "then the second one comes.",
    "A third one follows it;",
    "the fourth is next,",
    "and the fifth ends.",
]


def phrase_clip(durations: list[float], pause: float = 0.5, lead: float = 0.4, tail: float = 0.4) -> bytes:
    parts = [silence(lead)]
    for i, seconds in enumerate(durations):
        parts += [tone(seconds, freq=200 + 40 * i), silence(pause if i < len(durations) - 1 else tail)]
    return wav_bytes(np.concatenate(parts))


def test_long_reference_is_clipped_at_a_pause_with_its_transcript() -> None:
    # Five ~equal phrases of 2.5 s with 0.5 s pauses: 15.3 s, over the 12 s limit.
    data = phrase_clip([2.5] * 5)
    prepared = audio.prepare_reference(data, " ".join(PHRASES), max_seconds=12.0)
    assert prepared.clipped
    assert prepared.text == " ".join(PHRASES[:4])
    assert abs(prepared.original_duration - 15.3) < 0.01
    assert 11.0 < prepared.duration <= 12.0
    # The cut is in the pause: the clip ends in silence, not in the middle of a tone.
    assert np.max(np.abs(prepared.samples[-int(0.05 * SR) :])) < 1e-3


def test_reference_without_transcript_is_clipped_at_the_last_pause() -> None:
    prepared = audio.prepare_reference(phrase_clip([2.5] * 5), None, max_seconds=12.0)
    assert prepared.clipped and prepared.text is None
    assert 11.0 < prepared.duration <= 12.0


@pytest.mark.parametrize(
    "transcript",
    [
        "One long phrase without any punctuation that could be matched to the pauses",  # 1 phrase, 5 segments
        "Short, short, short, short, and then a phrase that is many times longer than all the others together.",
    ],
)
def test_misaligned_transcript_is_reference_too_long(transcript: str) -> None:
    with pytest.raises(ContractError) as excinfo:
        audio.prepare_reference(phrase_clip([2.5] * 5), transcript, max_seconds=12.0)
    assert code_of(excinfo) == ErrorCode.reference_too_long
    assert excinfo.value.body.field == "audio"
    assert "12 s" in str(excinfo.value)


def test_speech_without_any_pause_is_reference_too_long() -> None:
    with pytest.raises(ContractError) as excinfo:
        audio.prepare_reference(wav_bytes(tone(14.0)), None, max_seconds=12.0)
    assert code_of(excinfo) == ErrorCode.reference_too_long


def test_only_silence_removed_keeps_the_transcript() -> None:
    # 10 s of speech, then 6 s of trailing silence: 16 s long, but nothing spoken has to go.
    data = phrase_clip([4.5, 5.0], pause=0.5, lead=0.3, tail=6.0)
    prepared = audio.prepare_reference(data, "First half of it, second half of it.", max_seconds=12.0)
    assert not prepared.clipped
    assert prepared.text == "First half of it, second half of it."
    assert abs(prepared.original_duration - 16.3) < 0.01
    assert 10.0 <= prepared.duration < 10.5


def test_long_internal_pauses_are_shortened_not_clipped() -> None:
    data = phrase_clip([3.0, 3.0, 3.0], pause=3.0)  # 9 s of sound, 6 s of pauses: 15.8 s in all
    prepared = audio.prepare_reference(data, "One, two, three.", max_seconds=12.0)
    assert not prepared.clipped and prepared.text == "One, two, three."
    assert abs(prepared.duration - (9.0 + 2 * 1.0 + 2 * 0.1)) < 0.05


def test_quiet_reference_is_normalised_and_edges_trimmed() -> None:
    data = wav_bytes(np.concatenate([silence(1.0), tone(2.0, amplitude=0.01), silence(1.0)]))
    prepared = audio.prepare_reference(data, "Quiet.")
    assert abs(prepared.duration - 2.2) < 0.03  # 0.1 s margin kept on each side
    voiced = prepared.samples[int(0.2 * SR) : int(2.0 * SR)]
    assert abs(np.sqrt(np.mean(voiced**2)) - 0.1) < 0.01
    assert np.max(np.abs(prepared.samples)) <= 0.99


def test_reference_with_too_little_sound_is_refused() -> None:
    with pytest.raises(ContractError) as excinfo:
        audio.prepare_reference(wav_bytes(np.concatenate([silence(1.0), tone(0.3), silence(1.0)])), "Hi.")
    assert code_of(excinfo) == ErrorCode.audio_unreadable


# ------------------------------------------------------------------------------------------------ silences
def test_remove_silences_shortens_only_long_pauses() -> None:
    samples = np.concatenate([silence(2.0), tone(1.0), silence(3.0), tone(1.0), silence(0.4), tone(1.0), silence(2.0)])
    out = audio.remove_silences(samples, SR)
    # leading 2 s -> 0.5 s, the 3 s pause -> 1 s, the 0.4 s pause kept, trailing 2 s -> 0.5 s
    assert abs(out.size / SR - (0.5 + 1.0 + 1.0 + 1.0 + 0.4 + 1.0 + 0.5)) < 0.03
    assert out.dtype == np.float32


def test_remove_silences_leaves_audio_without_long_pauses_alone() -> None:
    samples = np.concatenate([tone(1.0), silence(0.5), tone(1.0)])
    assert np.array_equal(audio.remove_silences(samples, SR), samples)


# ------------------------------------------------------------------------------------------------ decode bombs
# Small files that decode to gigabytes, built here with ffmpeg (nothing binary is committed).
def _ffmpeg_silence(fmt: str, seconds: float, rate: int, layout: str, *extra: str) -> bytes:
    """Digital silence encoded by ffmpeg, written to a pipe (so a FLAC declares no length: it cannot seek back)."""
    command = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"anullsrc=r={rate}:cl={layout}", "-t", str(seconds)]
    return subprocess.run([*command, *extra, "-f", fmt, "pipe:1"], capture_output=True, check=True, timeout=60).stdout


def _declaring(flac: bytes, frames: int) -> bytes:
    """The FLAC with its STREAMINFO's total-samples field (36 bits after rate, channels, bits) set to `frames`."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0  # STREAMINFO comes first
    offset = 8 + 10  # "fLaC", block header, then min/max block and frame sizes
    packed = int.from_bytes(flac[offset : offset + 8], "big")
    packed = (packed & ~((1 << 36) - 1)) | frames
    return flac[:offset] + packed.to_bytes(8, "big") + flac[offset + 8 :]


def _bomb_declared_599s_8ch_384k() -> bytes:
    return _declaring(_ffmpeg_silence("flac", 1, 384000, "7.1"), 599 * 384000)


def _bomb_undeclared_30s_8ch_384k() -> bytes:
    return _ffmpeg_silence("flac", 30, 384000, "7.1")


def _bomb_m4a_8ch_96k() -> bytes:
    # AAC in MP4: not libsndfile's, so it goes through ffprobe + ffmpeg.
    return _ffmpeg_silence("ipod", 100, 96000, "7.1", "-c:a", "aac", "-b:a", "64k", "-movflags", "frag_keyframe")


BOMBS = {
    "flac declaring 599 s x 8 ch x 384 kHz": _bomb_declared_599s_8ch_384k,
    "flac declaring no length, 30 s x 8 ch x 384 kHz": _bomb_undeclared_30s_8ch_384k,
    "m4a 100 s x 8 ch x 96 kHz": _bomb_m4a_8ch_96k,
}


@pytest.mark.parametrize("make", BOMBS.values(), ids=BOMBS.keys())
def test_decode_bombs_are_too_large_with_bounded_memory(make) -> None:
    import tracemalloc

    data = make()
    assert len(data) < 2_000_000, "a bomb is a small file"
    tracemalloc.start()
    try:
        with pytest.raises(ContractError) as excinfo:
            audio.prepare_reference(data, "A transcript.")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code_of(excinfo) == ErrorCode.audio_too_large, excinfo.value.body
    # numpy's buffers are traced: the decoder never held more than a few blocks of the bomb.
    assert peak < 300e6, f"{peak / 1e6:.0f} MB"


def test_a_file_declaring_no_length_is_capped_while_decoding() -> None:
    data = _bomb_undeclared_30s_8ch_384k()
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert f.frames >= 2**62, "libsndfile sees no declared length"
    # Small enough to pass (10 s x 8 ch x 96 kHz = 7.7 M values), it decodes to its true length.
    short = _ffmpeg_silence("flac", 10, 96000, "7.1")
    samples, rate = audio.decode_audio(short, target_rate=24000)
    assert rate == 24000 and abs(samples.size / rate - 10.0) < 0.01
    with pytest.raises(ContractError) as excinfo:
        audio.decode_audio(data)
    assert code_of(excinfo) == ErrorCode.audio_too_large


def test_multichannel_high_rate_speech_within_the_budget_is_decoded() -> None:
    speech = tone(3.0, 96000)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(speech[:, None], 4, axis=1), 96000, format="FLAC")
    prepared = audio.prepare_reference(buffer.getvalue(), "A test tone.")
    assert prepared.sample_rate == 24000 and abs(prepared.original_duration - 3.0) < 0.01
