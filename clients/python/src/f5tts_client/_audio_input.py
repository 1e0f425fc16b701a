"""Audio the caller gives (a file path, raw bytes, or an http(s) URL) as the contract's `AudioSource`."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Union

from f5tts_client._generated.error_code_exceptions import InvalidInput
from f5tts_client._not_given import NotGiven

AudioInput = Union[str, "os.PathLike[str]", bytes]


def audio_source(value: AudioInput | NotGiven | None, field: str) -> dict[str, str] | NotGiven | None:
    """`{"url": ...}` for an http(s) URL (the worker fetches it), else `{"base64": ...}` of the bytes or file."""
    if value is None or isinstance(value, NotGiven):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value.startswith(("http://", "https://")):
        return {"url": value}
    elif isinstance(value, (str, os.PathLike)):
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{field}: cannot read audio file {str(value)!r}: {exc.strerror}", field=field) from None
    else:
        raise InvalidInput(
            f"{field}: expected a file path, bytes or an http(s) URL, got {type(value).__name__}", field=field
        )
    if not data:
        raise InvalidInput(f"{field}: the audio is empty", field=field)
    return {"base64": base64.b64encode(data).decode("ascii")}
