"""Which client methods exist and how each maps onto a contract action.

This is the one piece of client design that is not in the contract: method names, which parameters are
positional, and which hand-written base method carries the call. Everything about the parameters themselves
(names, types, defaults, ranges, descriptions) comes from the contract, so a new input field appears in every
method of its action after `python -m clients.codegen`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    owner: str  # "client" (AsyncClient) or "voices" (AsyncVoices)
    name: str
    action: str
    summary: str  # first docstring paragraph; the action's model description follows it
    positional: tuple[str, ...]  # contract fields taken positionally, in this order
    # The body's return statement: `values` holds the contract fields, `timeout` the deadline; `{action}` and
    # `{output}` become the action and the name of its output model in the contract.
    call: str
    returns: str  # return annotation
    returns_doc: str
    excluded: tuple[str, ...] = ("action",)  # contract fields the method sets itself
    is_async: bool = True  # a method returning an (async) iterator object is a plain `def` in both clients


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        owner="client",
        name="synthesize",
        action="synthesize",
        summary="Synthesize speech and wait for the result (`/runsync`, then `/status` polling if the job outlasts it).",
        positional=("text",),
        excluded=("action", "stream"),
        call="return await self._synthesize(values, timeout=timeout)",
        returns="AsyncSynthesisResult",
        returns_doc="The synthesis result: `audio_url` (or inline audio), `duration`, `sample_rate`, `seed`, `timings`; "
        "`.read()` returns the audio bytes and `.save(path)` writes them.",
    ),
    MethodSpec(
        owner="client",
        name="synthesize_stream",
        action="synthesize",
        summary="Synthesize speech as a stream: each text chunk's audio is yielded as soon as the worker has it "
        "(`/run` with `stream: true`, then `/stream` polling). Nothing is sent until iteration starts.",
        positional=("text",),
        excluded=("action", "stream"),
        call="return self._synthesize_stream(values, timeout=timeout)",
        returns="AsyncAudioStream",
        returns_doc="An iterator of `AudioChunk` (`index`, `text`, `audio` bytes, `format`, `sample_rate`, `duration`); "
        "after it is exhausted, `.summary` holds the job's totals. Use it as a context manager to cancel the job "
        "if you stop early.",
        is_async=False,
    ),
    MethodSpec(
        owner="client",
        name="submit",
        action="synthesize",
        summary="Queue a synthesis job (`/run`) and return at once with a handle to it.",
        positional=("text",),
        excluded=("action", "stream"),
        call="return await self._submit_synthesis(values, timeout=timeout)",
        returns="AsyncJob[AsyncSynthesisResult]",
        returns_doc="A job handle: `.id`, `.status()`, `.wait()` (returns the synthesis result), `.cancel()`.",
    ),
    MethodSpec(
        owner="client",
        name="health",
        action="health",
        summary="Ask a worker for its health: model, device, storage, contract version.",
        positional=(),
        call='return await self._call("{action}", values, models.{output}, timeout=timeout)',
        returns="models.HealthOutput",
        returns_doc="The worker's health report.",
    ),
    MethodSpec(
        owner="voices",
        name="upload",
        action="upload_voice",
        summary="Upload a reference clip (a file path, raw bytes or an http(s) URL) as a stored voice.",
        positional=("name", "audio", "text"),
        call='return await self._client._call("{action}", values, models.{output}, timeout=timeout)',
        returns="models.UploadVoiceOutput",
        returns_doc="The stored voice's metadata (after normalisation; `clipped` says whether it was shortened).",
    ),
    MethodSpec(
        owner="voices",
        name="list",
        action="list_voices",
        summary="List the stored voices, built-in ones included (flagged `builtin`).",
        positional=(),
        call='return (await self._client._call("{action}", values, models.{output}, timeout=timeout)).voices',
        returns="list[models.VoiceInfo]",
        returns_doc="One entry per voice.",
    ),
    MethodSpec(
        owner="voices",
        name="delete",
        action="delete_voice",
        summary="Delete a stored voice. Built-in voices cannot be deleted.",
        positional=("name",),
        call='return await self._client._call("{action}", values, models.{output}, timeout=timeout)',
        returns="models.DeleteVoiceOutput",
        returns_doc="The name and whether it was deleted.",
    ),
)
