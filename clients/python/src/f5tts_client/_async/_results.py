"""The result of a synthesis: the contract's output plus `.read()` / `.save()` for the audio itself, and
`.save_subtitles()` for the subtitles asked for with `subtitle_format`."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from f5tts_client._async._transport import AsyncTransport
from f5tts_client._exceptions import UnexpectedResponse
from f5tts_client._generated import models
from f5tts_client._retry import Deadline


class AsyncSynthesisResult(models.SynthesizeOutput):
    """`audio_url` (presigned; `expires_at`) or inline audio, with `duration`, `sample_rate`, `seed`, `timings`."""

    _transport: AsyncTransport | None = PrivateAttr(None)
    _job_id: str | None = PrivateAttr(None)
    _audio: bytes | None = PrivateAttr(None)

    @classmethod
    def _from_output(
        cls, output: dict[str, Any], transport: AsyncTransport, job_id: str | None
    ) -> AsyncSynthesisResult:
        result = cls.model_validate(output)
        result._transport, result._job_id = transport, job_id
        return result

    @property
    def job_id(self) -> str | None:
        return self._job_id

    async def read(self, *, timeout: float | None = None) -> bytes:
        """The audio file's bytes (downloaded from `audio_url` once, then kept)."""
        if self._audio is None:
            if self.audio_base64 is not None:
                self._audio = base64.b64decode(self.audio_base64)
            elif self.audio_url and self._transport is not None:
                deadline = Deadline(self._transport.settings.timeout if timeout is None else timeout)
                self._audio = await self._transport.download(self.audio_url, deadline)
            else:
                raise UnexpectedResponse("the result carries no audio (neither audio_url nor audio_base64)")
        return self._audio

    async def save(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> Path:
        """Write the audio to `path` (its format is `self.format`, whatever the file's extension says)."""
        data = await self.read(timeout=timeout)
        target = Path(path)
        target.write_bytes(data)
        return target

    def save_subtitles(self, path: str | os.PathLike[str]) -> Path:
        """Write the subtitles (requested with `subtitle_format="srt"` or `"vtt"`) to `path`, UTF-8."""
        if self.subtitles is None:
            raise ValueError("the result has no subtitles: pass subtitle_format='srt' or 'vtt' to synthesize()")
        target = Path(path)
        target.write_text(self.subtitles, encoding="utf-8")
        return target

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield (key, f"<{len(value)} base64 chars>") if key == "audio_base64" and value else (key, value)
