"""Audio in and out of the worker: decoding what callers upload, normalising references, encoding results.

No torch here (numpy, soundfile, soxr and the ffmpeg CLI only), so voice management and encoding never pay for
the model's imports.

Silence is found on 10 ms frames with a level threshold that adapts to the recording: a few dB above its noise
floor, but never above the speech level minus 20 dB (see `_silence_threshold_db`). Digital silence, room tone and
a quiet hum are all "silence"; a held vowel is not.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from worker.model_facts import SAMPLE_RATE
from worker.schema import ContractError, ErrorCode

MAX_DECODED_SECONDS = 600.0  # anything longer is not a voice reference and would only cost memory
MIN_SPEECH_SECONDS = 0.5  # less sound than this gives F5 nothing to imitate
FFMPEG_TIMEOUT_S = 60.0
# Decoding work and memory per reference: frames x channels of a 10-minute stereo 48 kHz file. A header that
# declares more is refused before decoding; a stream that turns out longer is stopped at this count.
MAX_DECODE_VALUES = int(MAX_DECODED_SECONDS * 48000 * 2)
DECODE_BLOCK_FRAMES = 1 << 16

FRAME_SECONDS = 0.01
MIN_SOUND_SECONDS = 0.1  # an isolated burst shorter than this is a click or a breath, not a phrase
PHRASE_PAUSE_SECONDS = 0.25  # a pause at least this long separates phrases; word-internal stop gaps are shorter
EDGE_MARGIN_SECONDS = 0.1  # sound kept before the first and after the last voiced frame (soft onsets, decay)
LONG_PAUSE_SECONDS = 1.0  # pauses in a reference are shortened to this; longer ones only skew F5's duration estimate

CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "pcm": "audio/pcm",
}

# fmt -> (libsndfile container, subtype, extra soundfile.write arguments)
_SOUNDFILE_FORMATS: dict[str, tuple[str, str, dict]] = {
    "wav": ("WAV", "PCM_16", {}),
    "flac": ("FLAC", "PCM_16", {}),
    # Constant bit rate at level 0.5 is ~80 kbps at 24 kHz. libsndfile's lowest CBR levels (>= 0.7) write no
    # encoder-delay header, so decoders would report ~55 ms of extra audio.
    "mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT", "compression_level": 0.5}),
    # libsndfile's Opus encoder takes 24 kHz directly (Opus runs at 48 kHz internally; the Ogg header records
    # the input rate and the pre-skip, so decoders give back the exact duration). Its default is ~35 kbps.
    "ogg": ("OGG", "OPUS", {}),
}
_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
# The ffmpeg CLI is the fallback for a libsndfile built without MP3/Opus (WAV and FLAC are always there).
# libopus takes 48 kHz input, and the Ogg header's pre-skip keeps the decoded duration exact.
_FFMPEG_ENCODERS: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "80k", "-f", "mp3"],
    "ogg": ["-ar", "48000", "-c:a", "libopus", "-b:a", "48k", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "96k", "-f", "adts"],  # ADTS: AAC frames a player can start anywhere
}

# Phrase boundaries: the split f5-tts's chunk_text uses (punctuation followed by space, or CJK punctuation).
_PHRASE_SPLIT = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


@dataclass(frozen=True)
class PreparedReference:
    """A reference clip ready for F5-TTS: mono float32 at 24 kHz, edges trimmed, loudness normalised."""

    samples: np.ndarray
    sample_rate: int
    text: str | None  # None when no transcript was given (the caller transcribes)
    duration: float
    original_duration: float
    clipped: bool  # speech was cut off (and the transcript shortened to match); trimming silence is not clipping


# ------------------------------------------------------------------------------------------------ decoding
def decode_audio(data: bytes, *, field: str | None = "audio", target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode any audio file's bytes to float32 mono, at its native sample rate or resampled to `target_rate`.

    soundfile (libsndfile: wav, flac, ogg, mp3, aiff...) first; the ffmpeg CLI for the rest (m4a/aac, webm...).

    A few hundred kilobytes of FLAC can declare ten minutes of 8 channels at 384 kHz (gigabytes of PCM), so the
    decoded size is bounded twice: from the header before decoding (duration, and frames x channels against
    MAX_DECODE_VALUES), and while decoding, block by block, for files that declare no length or lie about it.
    Each block is mixed down to mono (and resampled, with `target_rate`) as it is read, so memory holds only
    the mono result.
    """
    if not data:
        raise ContractError(ErrorCode.audio_unreadable, "the audio is empty", field)
    try:
        samples, sample_rate = _decode_soundfile(data, field, target_rate)
    except ContractError:
        raise
    except Exception:
        samples, sample_rate = _decode_ffmpeg(data, field, target_rate)
    if samples.size == 0 or sample_rate <= 0:
        raise ContractError(ErrorCode.audio_unreadable, "the audio contains no samples", field)
    if not np.isfinite(samples).all():
        raise ContractError(ErrorCode.audio_unreadable, "the audio contains invalid (NaN or infinite) samples", field)
    _check_duration(samples.shape[0] / sample_rate, field)
    return samples, int(sample_rate)


def _check_duration(seconds: float, field: str | None) -> None:
    if seconds > MAX_DECODED_SECONDS:
        raise ContractError(
            ErrorCode.audio_too_large,
            f"the audio is longer than {MAX_DECODED_SECONDS / 60:.0f} minutes; a voice reference needs at most 12 s",
            field,
        )


def _too_many_values(channels: int, sample_rate: int, field: str | None) -> ContractError:
    return ContractError(
        ErrorCode.audio_too_large,
        f"the audio decodes to too much data ({channels} channel(s) at {sample_rate} Hz); send at most "
        f"{MAX_DECODED_SECONDS / 60:.0f} minutes of mono or stereo audio at up to 48 kHz",
        field,
    )


def _decode_soundfile(data: bytes, field: str | None, target_rate: int | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(io.BytesIO(data)) as f:
        channels, rate = f.channels, f.samplerate
        if rate <= 0 or channels <= 0:
            raise ContractError(ErrorCode.audio_unreadable, "the audio declares no sample rate or channels", field)
        # From the header, before decoding. libsndfile reports an undeclared length as a huge frame count:
        # such a file is only capped while decoding.
        declared_known = f.frames < 2**62
        if declared_known:
            _check_duration(f.frames / rate, field)
            if f.frames * channels > MAX_DECODE_VALUES:
                raise _too_many_values(channels, rate, field)
        out_rate = target_rate or rate
        resampler = soxr.ResampleStream(rate, out_rate, 1, dtype="float32", quality="HQ") if out_rate != rate else None
        max_out = int((MAX_DECODED_SECONDS + 1) * out_rate)
        pieces: list[np.ndarray] = []
        values = produced = 0
        for block in f.blocks(blocksize=DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):
            values += block.size
            if values > MAX_DECODE_VALUES:
                raise _too_many_values(channels, rate, field)
            mono = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():  # before resampling, which would smear a NaN over a whole window
                raise ContractError(
                    ErrorCode.audio_unreadable, "the audio contains invalid (NaN or infinite) samples", field
                )
            piece = resampler.resample_chunk(mono) if resampler else mono.copy()
            produced += piece.size
            if produced > max_out:
                _check_duration(produced / out_rate, field)
            pieces.append(piece)
        if resampler:
            pieces.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return samples, out_rate


def _decode_ffmpeg(data: bytes, field: str | None, target_rate: int | None) -> tuple[np.ndarray, int]:
    # Files rather than pipes: MP4/M4A often keep their index at the end, which ffmpeg can only reach by seeking.
    with tempfile.TemporaryDirectory(prefix="f5tts-decode-") as tmp:
        src, dst = Path(tmp) / "input", Path(tmp) / "decoded.wav"
        src.write_bytes(data)
        declared = _probe(src)
        if declared is not None:  # what the container declares, checked before decoding
            channels, native_rate, seconds = declared
            _check_duration(seconds, field)
            if seconds * channels * native_rate > MAX_DECODE_VALUES:
                raise _too_many_values(channels, native_rate, field)
        # ffmpeg decodes as a stream and mixes down (and resamples) as it goes; `-t` stops it at the limit
        # whatever the container declares, and longer input is then refused as too long. Without a target
        # rate, output above 48 kHz is resampled to 48 kHz so the result stays bounded.
        limit = f"{MAX_DECODED_SECONDS + 1:.0f}"
        native_rate = declared[1] if declared else 0
        out_rate = target_rate or (48000 if not 0 < native_rate <= 48000 else None)
        rate = ["-ar", str(out_rate)] if out_rate else []
        to_wav = ["-map", "0:a:0", "-t", limit, "-ac", "1", *rate, "-c:a", "pcm_f32le", "-f", "wav"]
        command = [*_FFMPEG, "-i", str(src), *to_wav, str(dst)]
        try:
            result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise ContractError(
                ErrorCode.audio_unreadable, "unsupported audio format (ffmpeg is not installed)", field
            ) from None
        except subprocess.TimeoutExpired:
            raise ContractError(ErrorCode.audio_unreadable, "decoding the audio took too long", field) from None
        if result.returncode != 0 or not dst.exists():
            raise ContractError(
                ErrorCode.audio_unreadable, "the audio could not be decoded (unknown or damaged format)", field
            )
        try:
            samples, sample_rate = sf.read(dst, dtype="float32")
        except Exception:
            raise ContractError(ErrorCode.audio_unreadable, "the audio could not be decoded", field) from None
        return np.ascontiguousarray(samples.reshape(samples.shape[0], -1)[:, 0]), sample_rate


def _probe(path: Path) -> tuple[int, int, float] | None:
    """(channels, sample rate, seconds) of the first audio stream as the container declares them, or None."""
    command = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-of", "json"]
    command += ["-show_entries", "stream=channels,sample_rate,duration:format=duration", str(path)]
    try:
        result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        info = json.loads(result.stdout or b"{}")
        stream = info["streams"][0]
        seconds = float(stream.get("duration") or info.get("format", {}).get("duration") or 0.0)
        return int(stream["channels"]), int(stream["sample_rate"]), seconds
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError, TypeError):
        return None  # no probe: decoding is still capped as it streams


def resample(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling (soxr); a no-op at the target rate."""
    if sample_rate == target_rate:
        return np.asarray(samples, dtype=np.float32)
    return soxr.resample(np.asarray(samples, dtype=np.float32), sample_rate, target_rate, quality="HQ").astype(
        np.float32
    )


# ------------------------------------------------------------------------------------------------ silence
def _frame_levels_db(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Level of each 10 ms frame in dBFS, median-smoothed over 50 ms so a lone noise spike is not sound."""
    hop = max(1, round(sample_rate * FRAME_SECONDS))
    whole = samples.shape[0] // hop
    # A reshaped view and einsum: no temporary copies of a recording that may be minutes long.
    frames = np.ascontiguousarray(samples[: whole * hop], dtype=np.float32).reshape(whole, hop)
    energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
    tail = samples[whole * hop :]
    if tail.size:  # a last partial frame, padded with silence
        energy = np.append(energy, np.dot(tail.astype(np.float64), tail.astype(np.float64)))
    rms = np.sqrt(energy / hop)
    levels = 20.0 * np.log10(np.maximum(rms, 1e-10))
    padded = np.pad(levels, 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1), hop


def _silence_threshold_db(levels: np.ndarray) -> float:
    """10 dB over the noise floor, at most 20 dB under the speech level, never under -55 dBFS.

    The noise floor is taken from frames that are not digital silence, so a recording with padded zeros is
    judged by its room tone.
    """
    audible = levels[levels > -90.0]
    if audible.size == 0:
        return -55.0
    noise_floor, speech_level = np.percentile(audible, 10), np.percentile(audible, 95)
    return float(np.clip(noise_floor + 10.0, -55.0, max(-55.0, speech_level - 20.0)))


def _voiced_segments(samples: np.ndarray, sample_rate: int, min_pause_s: float) -> list[tuple[int, int]]:
    """(start, end) sample ranges of sound, split only at pauses of at least `min_pause_s`; isolated clicks and
    breaths (under MIN_SOUND_SECONDS) count as silence."""
    if samples.size == 0:
        return []
    levels, hop = _frame_levels_db(samples, sample_rate)
    voiced = levels > _silence_threshold_db(levels)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], voiced.astype(np.int8), [0]))))
    runs = list(zip(edges[::2], edges[1::2], strict=True))
    min_gap = round(min_pause_s / FRAME_SECONDS)
    merged: list[list[int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    min_sound = round(MIN_SOUND_SECONDS / FRAME_SECONDS)
    return [(int(s) * hop, min(int(e) * hop, samples.shape[0])) for s, e in merged if e - s >= min_sound]


def _compact(
    samples: np.ndarray, segments: list[tuple[int, int]], edge: int, max_pause: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Keep `edge` samples around the outer segments and at most `max_pause` of each pause between them.

    Returns the new samples and the segments' positions in them. Only audio under the silence threshold is
    removed, so the joins need no cross-fade.
    """
    pieces, moved, out_len = [], [], 0
    for i, (start, end) in enumerate(segments):
        before = edge if i == 0 else min((start - segments[i - 1][1] + 1) // 2, max_pause // 2)
        after = edge if i == len(segments) - 1 else min((segments[i + 1][0] - end) // 2, max_pause - max_pause // 2)
        lo, hi = max(0, start - before), min(samples.shape[0], end + after)
        pieces.append(samples[lo:hi])
        moved.append((out_len + start - lo, out_len + end - lo))
        out_len += hi - lo
    return (np.concatenate(pieces) if pieces else samples[:0]), moved


def remove_silences(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Shorten long silences like f5-tts's `remove_silence` option: pauses of 1 s or more become 1 s, and
    silence at either end is cut to 0.5 s. Shorter pauses are left alone (they are prosody)."""
    samples = np.asarray(samples, dtype=np.float32)
    segments = _voiced_segments(samples, sample_rate, min_pause_s=1.0)
    if not segments:
        return samples
    compacted, _ = _compact(samples, segments, edge=int(0.5 * sample_rate), max_pause=int(1.0 * sample_rate))
    return compacted


def _normalise_loudness(samples: np.ndarray, segments: list[tuple[int, int]], target_rms: float = 0.1) -> np.ndarray:
    """Scale so that the voiced parts sit at -20 dBFS RMS (F5's own target level), without the peak passing 0.99."""
    voiced = np.concatenate([samples[s:e] for s, e in segments]) if segments else samples
    rms = float(np.sqrt(np.mean(np.square(voiced, dtype=np.float64)))) if voiced.size else 0.0
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if rms <= 0 or peak <= 0:
        return samples
    gain = min(target_rms / rms, 0.99 / peak)
    return (samples * gain).astype(np.float32)


# ------------------------------------------------------------------------------------------------ references
def prepare_reference(
    data: bytes, transcript: str | None, *, max_seconds: float = 12.0, field: str | None = "audio"
) -> PreparedReference:
    """Normalise a reference clip: mono, 24 kHz, edges trimmed, long pauses shortened, loudness normalised.

    If it is still longer than `max_seconds`, it is clipped at a pause, and the transcript must stay true to the
    clip. Without speech recognition the worker cannot know where words fall, so the rule is conservative:

    - the audio is split into phrases at pauses (>= 0.25 s of silence), the transcript at punctuation (commas,
      full stops...; if that does not match, at sentence ends only);
    - only if both give the same number of pieces, and each piece's share of the speaking time is within a
      factor of 3 of its share of the text, are they taken as aligned: the clip ends at the last pause that
      fits and keeps the matching phrases of the transcript;
    - otherwise the reference is refused (`reference_too_long`): guessing would teach F5 a wrong transcript,
      which it punishes with garbled speech.

    Without a transcript (`None`: the caller transcribes the result), the clip simply ends at the last pause
    that fits. Removing silence (trailing, leading, long pauses) never changes the transcript.
    """
    # Decoded straight to mono 24 kHz, block by block: memory holds only the result.
    samples, sample_rate = decode_audio(data, field=field, target_rate=SAMPLE_RATE)
    original_duration = samples.shape[0] / sample_rate

    segments = _voiced_segments(samples, sample_rate, PHRASE_PAUSE_SECONDS)
    speech_s = sum(end - start for start, end in segments) / sample_rate
    if speech_s < MIN_SPEECH_SECONDS:
        raise ContractError(
            ErrorCode.audio_unreadable,
            f"the reference has only {speech_s:.2f} s of sound; it needs at least {MIN_SPEECH_SECONDS} s of speech",
            field,
        )
    samples, segments = _compact(
        samples, segments, edge=int(EDGE_MARGIN_SECONDS * sample_rate), max_pause=int(LONG_PAUSE_SECONDS * sample_rate)
    )
    text = transcript.strip() if transcript is not None else None
    clipped = False
    max_samples = int(max_seconds * sample_rate)
    if samples.shape[0] > max_samples:
        # Possible cut points: a margin after each segment, but never past the start of the next one.
        next_starts = [start for start, _ in segments[1:]] + [samples.shape[0]]
        margin = int(EDGE_MARGIN_SECONDS * sample_rate)
        ends = [min(end + margin, nxt) for (_, end), nxt in zip(segments, next_starts, strict=True)]
        keep = sum(1 for cut in ends if cut <= max_samples)
        if keep == 0 or keep == len(segments):
            raise _too_long(max_seconds, "it has no pause to clip at within the limit", field)
        if text is not None:
            phrase_ends = _aligned_phrase_ends(text, segments)
            if phrase_ends is None:
                raise _too_long(max_seconds, "its pauses do not line up with the transcript's punctuation", field)
            text = text[: phrase_ends[keep - 1]].strip()
        samples, segments, clipped = samples[: ends[keep - 1]], segments[:keep], True
    samples = _normalise_loudness(samples, segments)
    return PreparedReference(
        samples=samples,
        sample_rate=sample_rate,
        text=text,
        duration=samples.shape[0] / sample_rate,
        original_duration=original_duration,
        clipped=clipped,
    )


def _too_long(max_seconds: float, why: str, field: str | None) -> ContractError:
    return ContractError(
        ErrorCode.reference_too_long,
        f"the reference is longer than {max_seconds:g} s and cannot be clipped safely ({why}); "
        f"upload at most {max_seconds:g} s of speech with its exact transcript, or split it at a pause",
        field,
    )


def _aligned_phrase_ends(text: str, segments: list[tuple[int, int]]) -> list[int] | None:
    """End offsets in `text` of phrases that line up 1:1 with the voiced segments, or None."""
    durations = np.array([end - start for start, end in segments], dtype=np.float64)
    for pattern in (_PHRASE_SPLIT, _SENTENCE_SPLIT):
        ends = [m.start() for m in pattern.finditer(text)] + [len(text)]
        starts = [0] + [m.end() for m in pattern.finditer(text)]
        phrases = [text[s:e].strip() for s, e in zip(starts, ends, strict=True)]
        if len(phrases) != len(segments) or not all(phrases):
            continue
        weights = np.array([len(p.encode("utf-8")) for p in phrases], dtype=np.float64)
        ratio = (durations / durations.sum()) / (weights / weights.sum())
        if np.all((ratio >= 1 / 3) & (ratio <= 3)):
            return ends
    return None


# ------------------------------------------------------------------------------------------------ encoding
def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode mono float samples as wav (PCM16), flac, mp3, ogg (Opus), aac (ADTS) or pcm (raw s16le)."""
    if fmt not in CONTENT_TYPES:
        raise ContractError(ErrorCode.invalid_input, f"unknown audio format {fmt!r}", "format")
    samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if fmt == "pcm":  # raw signed 16-bit little-endian, no header (OpenAI's `pcm`)
        return (samples * 32767.0).round().astype("<i2").tobytes()
    container, subtype, options = _SOUNDFILE_FORMATS.get(fmt, ("", "", {}))
    if container and subtype in sf.available_subtypes(container):
        buffer = io.BytesIO()
        sf.write(buffer, samples, sample_rate, format=container, subtype=subtype, **options)
        return buffer.getvalue()
    return encode_audio_ffmpeg(samples, sample_rate, fmt)


def encode_audio_ffmpeg(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """mp3, ogg (Opus) or aac through the ffmpeg CLI.

    The output goes to a file, not a pipe: ffmpeg seeks back to write the MP3 Xing/LAME header (frame count,
    encoder delay), without which decoders report tens of milliseconds of extra audio.
    """
    with tempfile.TemporaryDirectory(prefix="f5tts-encode-") as tmp:
        dst = Path(tmp) / f"encoded.{fmt}"
        raw_input = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
        command = [*_FFMPEG, *raw_input, *_FFMPEG_ENCODERS[fmt], str(dst)]
        raw = np.ascontiguousarray(samples, dtype="<f4").tobytes()
        result = subprocess.run(command, input=raw, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {result.stderr.decode(errors='replace')[-500:]}")
        return dst.read_bytes()
