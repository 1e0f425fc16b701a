"""The job contract: every job input and output of the worker, and its error codes, as pydantic models.

This module is the single source of truth. The worker validates with it; `python -m worker.schema --write
clients/schema/contract.json` exports it as JSON Schema, from which the client SDK is generated. It imports
nothing but pydantic (and the standard-library markup reader) so that exporting the schema never pays for torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from worker import markup

CONTRACT_VERSION = "1.0"

# Voice names become object keys (`voices/<name>/`): a strict alphabet keeps them from escaping their prefix.
VOICE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_TEXT_CHARS = 5000
MAX_REF_TEXT_CHARS = 1000
MAX_REFERENCE_SECONDS = 12.0
# A voice's own notes (ElevenLabs' `description` and `labels`), stored with it and returned as they came.
MAX_VOICE_DESCRIPTION_CHARS = 500
MAX_VOICE_LABELS = 16
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 200
# Job inputs are flat: anything nested deeper is refused before validation (whose error formatting recurses).
MAX_INPUT_DEPTH = 32
# Caller input quoted in an error message or a log line is cut to this many characters.
MAX_ECHO_CHARS = 80
BUILTIN_VOICE = "default"

AudioFormat = Literal["wav", "flac", "mp3", "ogg", "aac", "pcm"]
Delivery = Literal["url", "base64"]
SubtitleFormat = Literal["srt", "vtt"]


class ErrorCode(StrEnum):
    """Machine-readable error codes; clients map each to a typed exception."""

    invalid_input = "invalid_input"
    voice_not_found = "voice_not_found"
    voice_exists = "voice_exists"
    audio_unreadable = "audio_unreadable"
    audio_too_large = "audio_too_large"
    reference_too_long = "reference_too_long"
    fetch_failed = "fetch_failed"
    storage_error = "storage_error"
    output_too_large = "output_too_large"
    model_unavailable = "model_unavailable"
    overloaded = "overloaded"  # http mode: every synthesis slot stayed busy past F5TTS_BUSY_WAIT_S
    internal = "internal"


class ErrorBody(BaseModel):
    """What the `error` string of a failed job decodes to (RunPod requires the error itself to be a string)."""

    code: ErrorCode
    message: str
    field: str | None = Field(None, description="The input field at fault, dotted (`ref_audio.url`), if any.")


class _Strict(BaseModel):
    # Unknown fields are refused so that a typo (`sped`, `fromat`) is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


def _exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """JSON Schema for "exactly one of these keys, as a non-null value" (what the model validator enforces)."""

    def edit(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [
            {
                "required": [name],
                "properties": {name: {"not": {"type": "null"}}, **{o: {"type": "null"} for o in names if o != name}},
            }
            for name in names
        ]

    return edit


class AudioSource(_Strict):
    """Audio given by the caller: exactly one of a public http(s) URL or base64-encoded file bytes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_of("url", "base64"))

    url: str | None = Field(None, max_length=2048, description="http(s) URL of an audio file.")
    base64: str | None = Field(None, description="The audio file's bytes, base64-encoded (size-capped).")

    @model_validator(mode="after")
    def _exactly_one(self) -> AudioSource:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of 'url' or 'base64'")
        return self


VoiceName = Annotated[
    str, Field(pattern=VOICE_NAME_PATTERN, description="Lowercase letters, digits, '-' and '_'; 1-64 chars.")
]


def _one_reference_schema(schema: dict[str, Any]) -> None:
    # What `_one_reference` and the service enforce, stated for JSON Schema users (the transcript of a
    # ref_audio is required unless the worker runs with F5TTS_AUTO_TRANSCRIBE=true).
    schema["dependentRequired"] = {"ref_text": ["ref_audio"], "ref_audio": ["ref_text"]}
    schema["not"] = {"required": ["voice", "ref_audio"]}


class SynthesizeInput(_Strict):
    """Speak `text` in a stored voice or in a reference given with the job."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_reference_schema)

    action: Literal["synthesize"] = "synthesize"
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description='Text to speak. `<break time="1.5s"/>` (or `500ms`, or `strength="medium"`) is a '
        f"pause of up to {markup.MAX_BREAK_SECONDS:g} s, a blank line between paragraphs one of "
        f"{markup.PARAGRAPH_SECONDS:g} s; a text in `<speak>` is read as SSML.",
        json_schema_extra={"pattern": r"\S"},
    )
    voice: VoiceName | None = Field(
        None, description=f"Stored voice; default `{BUILTIN_VOICE}` when no ref_audio is given."
    )
    ref_audio: AudioSource | None = Field(None, description="One-off reference clip instead of a stored voice.")
    ref_text: str | None = Field(None, max_length=MAX_REF_TEXT_CHARS, description="Transcript of ref_audio.")
    speed: float = Field(1.0, ge=0.3, le=3.0, description="Speaking rate multiplier.")
    nfe_step: int = Field(32, ge=4, le=64, description="Flow-matching steps: quality vs speed.")
    cfg_strength: float = Field(2.0, ge=0.0, le=10.0, description="Classifier-free guidance strength.")
    sway_sampling_coef: float = Field(-1.0, ge=-1.0, le=1.0, description="Sway sampling coefficient.")
    cross_fade_duration: float = Field(0.15, ge=0.0, le=1.0, description="Cross-fade between text chunks, seconds.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Random seed; echoed back, random if absent.")
    remove_silence: bool = Field(False, description="Strip long silences from the output.")
    format: AudioFormat = Field(
        "wav", description="Output container: wav (PCM16), flac, mp3, ogg (Opus), aac (ADTS) or pcm (raw s16le mono)."
    )
    delivery: Delivery | None = Field(
        None, description="`url` (presigned, needs a bucket) or `base64`; default url when a bucket is configured."
    )
    stream: bool = Field(False, description="Yield each text chunk's audio as soon as it is generated.")
    word_timestamps: bool = Field(
        False,
        description="Return `words`: when each word is spoken, in seconds on the delivered audio's timeline "
        "(forced alignment of the generated audio against the text).",
    )
    subtitle_format: SubtitleFormat | None = Field(
        None, description="Return `subtitles`, the text of an SRT or WebVTT file of the speech."
    )

    @property
    def wants_words(self) -> bool:
        """Whether the speech needs word timings: asked for, or needed for the subtitles."""
        return self.word_timestamps or self.subtitle_format is not None

    @field_validator("text")
    @classmethod
    def _readable_markup(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("nothing to speak")
        markup.parse(text)  # raises MarkupError (a ValueError): the caller hears what to fix, naming `text`
        return text

    @model_validator(mode="after")
    def _one_reference(self) -> SynthesizeInput:
        if self.voice is not None and self.ref_audio is not None:
            raise ValueError("give either 'voice' or 'ref_audio', not both")
        if self.ref_text is not None and self.ref_audio is None:
            raise ValueError("'ref_text' only goes with 'ref_audio'")
        return self


def _transcript_required(schema: dict[str, Any]) -> None:
    # The model accepts a missing transcript because a worker with F5TTS_AUTO_TRANSCRIBE=true transcribes it;
    # the published contract states what a default worker enforces: a non-empty transcript.
    text = schema["properties"]["text"]
    text.pop("anyOf", None)
    text.pop("default", None)
    text.update(type="string", minLength=1, maxLength=MAX_REF_TEXT_CHARS, pattern=r"\S")
    text["description"] += " Required unless the worker runs with F5TTS_AUTO_TRANSCRIBE=true."
    schema["required"] = [*schema.get("required", []), "text"]


VoiceDescription = Annotated[str, Field(max_length=MAX_VOICE_DESCRIPTION_CHARS)]
VoiceLabels = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=MAX_LABEL_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_LABEL_VALUE_CHARS)],
    ],
    Field(max_length=MAX_VOICE_LABELS),
]


class UploadVoiceInput(_Strict):
    """Store a reference clip and its transcript under a name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_transcript_required)

    action: Literal["upload_voice"]
    name: VoiceName
    audio: AudioSource
    text: str | None = Field(None, min_length=1, max_length=MAX_REF_TEXT_CHARS, description="Transcript of the audio.")
    overwrite: bool = Field(False, description="Replace an existing voice of that name.")
    description: VoiceDescription | None = Field(None, description="A note about the voice, returned with it.")
    labels: VoiceLabels | None = Field(
        None, description="Free-form labels of the voice (accent, age, ...), returned with it."
    )


class ListVoicesInput(_Strict):
    action: Literal["list_voices"]


class DeleteVoiceInput(_Strict):
    action: Literal["delete_voice"]
    name: VoiceName


class HealthInput(_Strict):
    action: Literal["health"]


JobInput = Annotated[
    SynthesizeInput | UploadVoiceInput | ListVoicesInput | DeleteVoiceInput | HealthInput,
    Field(discriminator="action"),
]
ACTIONS = ("synthesize", "upload_voice", "list_voices", "delete_voice", "health")


class Timings(BaseModel):
    total_s: float = Field(description="Wall time of the job inside the worker.")
    inference_s: float = Field(description="Time spent in F5-TTS (model + vocoder).")
    rtf: float = Field(description="Real-time factor: inference_s / audio duration.")


class WordTime(BaseModel):
    """When one word of the text is spoken, in seconds from the start of the delivered audio."""

    word: str = Field(description="The word as written in the text, punctuation included.")
    start: float
    end: float
    estimated: bool = Field(
        False,
        description="The times are estimated in proportion to the word's length, not aligned: words with digits, "
        "symbols or letters outside English's alphabet, and every word of a chunk whose alignment failed.",
    )


class SynthesizeOutput(BaseModel):
    audio_url: str | None = Field(None, description="Presigned GET URL (delivery=url).")
    expires_at: str | None = Field(None, description="When audio_url stops working (ISO 8601, UTC).")
    key: str | None = Field(None, description="Object key of the audio in the bucket.")
    audio_base64: str | None = Field(None, description="The encoded audio (delivery=base64).")
    format: AudioFormat
    sample_rate: int
    duration: float = Field(description="Audio duration, seconds.")
    seed: int
    voice: str = Field(description="The stored voice used, or `inline` for ref_audio.")
    chunks: int = Field(description="Number of text chunks synthesized.")
    timings: Timings
    words: list[WordTime] | None = Field(None, description="Word timings (word_timestamps=true).")
    subtitles: str | None = Field(None, description="The subtitle file's text (subtitle_format).")


class StreamChunk(BaseModel):
    """One item of a streaming job (`stream: true`): audio of one text chunk, encoded on its own."""

    type: Literal["chunk"] = "chunk"
    index: int
    text: str
    audio_base64: str
    format: AudioFormat
    sample_rate: int
    duration: float
    words: list[WordTime] | None = Field(
        None, description="This chunk's words on the whole stream's timeline (word_timestamps=true)."
    )


class StreamEnd(BaseModel):
    """The last item of a streaming job: a summary (no audio)."""

    type: Literal["end"] = "end"
    format: AudioFormat
    sample_rate: int
    duration: float
    seed: int
    voice: str
    chunks: int
    timings: Timings
    subtitles: str | None = Field(None, description="The subtitle file's text (subtitle_format).")


class VoiceInfo(BaseModel):
    name: str
    text: str = Field(description="Transcript of the stored reference.")
    duration: float = Field(description="Reference duration after normalisation, seconds.")
    sample_rate: int
    builtin: bool = False
    created_at: str | None = None
    description: str | None = Field(None, description="The note the voice was stored with.")
    labels: dict[str, str] | None = Field(None, description="The labels the voice was stored with.")


class UploadVoiceOutput(VoiceInfo):
    clipped: bool = Field(False, description="The upload was longer than 12 s and was clipped at a silence.")
    original_duration: float


class ListVoicesOutput(BaseModel):
    voices: list[VoiceInfo]


class DeleteVoiceOutput(BaseModel):
    name: str
    deleted: bool


class HealthOutput(BaseModel):
    status: Literal["ok"]
    contract_version: str
    model: str
    device: str
    dtype: str
    attn_backend: str
    storage: Literal["s3", "local"]
    sample_rate: int
    concurrency: int = Field(description="Jobs this worker runs at once (F5TTS_CONCURRENCY).")
    max_batch: int = Field(description="Most text chunks sampled in one model call (F5TTS_MAX_BATCH).")
    batch_frames: int = Field(description="Most mel frames one model call pads to (F5TTS_BATCH_FRAMES).")
    batch_wait_ms: float = Field(
        description="How long a chunk waits for others to share its call (F5TTS_BATCH_WAIT_MS)."
    )


ACTION_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "synthesize": (SynthesizeInput, SynthesizeOutput),
    "upload_voice": (UploadVoiceInput, UploadVoiceOutput),
    "list_voices": (ListVoicesInput, ListVoicesOutput),
    "delete_voice": (DeleteVoiceInput, DeleteVoiceOutput),
    "health": (HealthInput, HealthOutput),
}

_job_adapter: TypeAdapter[Any] = TypeAdapter(JobInput)


class ContractError(Exception):
    """A failure the caller should see: carries the error code, a message and the field at fault."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.body = ErrorBody(code=code, message=message, field=field)

    @property
    def code(self) -> ErrorCode:
        return self.body.code

    def to_error_string(self) -> str:
        """The string RunPod carries in `{"error": ...}`: JSON of ErrorBody."""
        return self.body.model_dump_json()


def echo(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` for an error message or a log line, cut to `limit` characters (caller input is unbounded)."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[: limit + 2] + "…"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists/dicts nest deeper than `limit` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def parse_job_input(raw: Any) -> BaseModel:
    """Validate a job's `input`; `action` defaults to synthesize. Raises ContractError(invalid_input)."""
    if not isinstance(raw, dict):
        raise ContractError(ErrorCode.invalid_input, "job input must be a JSON object")
    if _depth_exceeds(raw, MAX_INPUT_DEPTH):
        raise ContractError(ErrorCode.invalid_input, f"job input nests deeper than {MAX_INPUT_DEPTH} levels")
    data = {"action": "synthesize", **raw}
    action = data["action"]
    if not isinstance(action, str) or action not in ACTIONS:
        raise ContractError(
            ErrorCode.invalid_input, f"unknown action {echo(action)}; expected one of {', '.join(ACTIONS)}", "action"
        )
    try:
        return _job_adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        # The discriminator adds the action name as the first location element; drop it. An unknown key is
        # caller input: cut it.
        loc = [str(p)[:MAX_ECHO_CHARS] for p in first["loc"][1 if first["loc"][:1] == (action,) else 0 :]]
        field = ".".join(loc) or None
        message = first["msg"].removeprefix("Value error, ")[: MAX_ECHO_CHARS * 4]
        raise ContractError(ErrorCode.invalid_input, f"{field}: {message}" if field else message, field) from None


def contract_schema() -> dict[str, Any]:
    """The whole contract as one JSON document: inputs and outputs per action, stream items and error codes."""
    models: list[type[BaseModel]] = [m for pair in ACTION_MODELS.values() for m in pair]
    models += [StreamChunk, StreamEnd, ErrorBody]
    defs: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "F5-TTS worker job contract",
        "version": CONTRACT_VERSION,
        "actions": {name: {"input": i.__name__, "output": o.__name__} for name, (i, o) in ACTION_MODELS.items()},
        "stream": {"chunk": "StreamChunk", "end": "StreamEnd"},
        "error_codes": [c.value for c in ErrorCode],
        "$defs": dict(sorted(defs.items())),
    }


def contract_json() -> str:
    return json.dumps(contract_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the job contract as JSON Schema.")
    parser.add_argument("--write", type=Path, help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(contract_json())
    else:
        sys.stdout.write(contract_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
