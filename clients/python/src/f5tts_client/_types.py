"""Shapes of RunPod's queue API answers, and the decoded items a client hands out."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from f5tts_client._exceptions import UnexpectedResponse
from f5tts_client._generated import models


class RunPodJobStatus:
    """The job states RunPod's queue API reports in `JobState.status` (plain strings, compared as such)."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})


class JobState(BaseModel):
    """One answer of `/run`, `/runsync`, `/status` or `/cancel` about a job."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    status: str
    output: Any = None
    error: Any = None
    delay_time_ms: float | None = Field(None, alias="delayTime")
    execution_time_ms: float | None = Field(None, alias="executionTime")

    @property
    def done(self) -> bool:
        return self.status in RunPodJobStatus.TERMINAL

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The output may hold megabytes of base64 audio: show its type, not its content.
        for key, value in super().__repr_args__():
            yield (key, f"<{type(value).__name__}>") if key == "output" and value is not None else (key, value)


class StreamState(BaseModel):
    """One answer of `/stream/<id>`: the job's state and the items yielded since the last call."""

    model_config = ConfigDict(extra="allow")

    status: str
    stream: list[Any] = Field(default_factory=list)

    @property
    def items(self) -> list[Any]:
        # RunPod wraps each item as {"output": item}; accept a bare item as well.
        return [i["output"] if isinstance(i, dict) and "output" in i else i for i in self.stream]


class AudioChunk(models.StreamChunk):
    """One streamed chunk: the audio of one text chunk, a complete file of `format` on its own."""

    @cached_property
    def audio(self) -> bytes:
        return base64.b64decode(self.audio_base64)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield (key, f"<{len(value)} base64 chars>") if key == "audio_base64" else (key, value)


def single_output(output: Any) -> Any:
    """The one result item of a non-streaming job.

    The worker's handler is a generator, so RunPod (with `return_aggregate_stream`) returns its items as a
    list; a job that is not streamed yields exactly one. A plain dict is accepted too.
    """
    if isinstance(output, list) and len(output) == 1:
        return output[0]
    if isinstance(output, dict):
        return output
    raise UnexpectedResponse(f"expected one result item, got {type(output).__name__} of length {_len(output)}")


def _len(value: Any) -> int | str:
    try:
        return len(value)
    except TypeError:
        return "-"
