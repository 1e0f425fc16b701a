"""Writing streamed chunks into one playable file as they arrive (`f5tts say --stream`).

Each streamed chunk is a complete file of its format. MP3 frames and Ogg streams may simply be concatenated
(players read a chained Ogg / a run of MP3 frames as one stream). WAV chunks are unpacked and their PCM appended
under one header, which announces a huge length while the file grows (so a player reading it plays on) and is
patched to the true length at the end (on a pipe, such as stdout into a player, it stays open-ended). FLAC cannot be concatenated, so it is not streamed.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import BinaryIO

STREAMABLE_FORMATS = ("wav", "mp3", "ogg")
# The largest frame count whose byte length still fits the RIFF header's 32-bit size fields.
_OPEN_ENDED_FRAMES = 0x7FFF0000 // 2


class AudioSink:
    """`path` is a file to create, or an open binary stream (stdout) that stays open."""

    def __init__(self, path: Path | BinaryIO, fmt: str) -> None:
        if fmt not in STREAMABLE_FORMATS:
            raise ValueError(f"{fmt} cannot be streamed into one file; use one of {', '.join(STREAMABLE_FORMATS)}")
        self.path = path
        self.format = fmt
        self._owned = isinstance(path, Path)
        self._file: BinaryIO = path.open("wb") if isinstance(path, Path) else path
        self._seekable = self._file.seekable()
        self._wav: wave.Wave_write | None = None
        self._pipe_params: wave._wave_params | None = None  # the first chunk's format, on a pipe

    def write(self, audio: bytes) -> None:
        if self.format == "wav":
            self._write_wav(audio)
        else:
            self._file.write(audio)
        self._file.flush()

    def _write_wav(self, audio: bytes) -> None:
        with wave.open(io.BytesIO(audio), "rb") as chunk:
            params = chunk.getparams()
            frames = chunk.readframes(chunk.getnframes())
        if not self._seekable:
            self._write_wav_to_pipe(params, frames)
            return
        if self._wav is None:
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close(); it outlives this call
            self._wav.setparams(params._replace(nframes=_OPEN_ENDED_FRAMES))
        elif (params.nchannels, params.sampwidth, params.framerate) != (
            self._wav.getnchannels(),
            self._wav.getsampwidth(),
            self._wav.getframerate(),
        ):
            raise ValueError("a streamed chunk's WAV format differs from the first chunk's")
        self._wav.writeframesraw(frames)

    def _write_wav_to_pipe(self, params: wave._wave_params, frames: bytes) -> None:
        """No seeking back on a pipe: one open-ended header, then the PCM of every chunk as it comes."""
        if self._pipe_params is None:
            header = io.BytesIO()
            writer = wave.open(header, "wb")  # noqa: SIM115 - only its header is wanted; never closed (no patching)
            writer.setparams(params._replace(nframes=_OPEN_ENDED_FRAMES))
            writer.writeframesraw(b"")
            self._file.write(header.getvalue())
            self._pipe_params = params
        elif params[:3] != self._pipe_params[:3]:
            raise ValueError("a streamed chunk's WAV format differs from the first chunk's")
        self._file.write(frames)

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()  # patches the header to the true length (the file is seekable)
        if self._owned:
            self._file.close()
        else:
            self._file.flush()
