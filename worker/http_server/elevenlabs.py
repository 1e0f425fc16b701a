"""The ElevenLabs-compatible surface, mounted under `/elevenlabs` (ElevenLabs' `/v1/models` and `/v1/voices`
would collide with the OpenAI-compatible `/v1`): an app or SDK that speaks ElevenLabs' API needs only a new base
URL. A voice here is a stored voice: its `voice_id` is its name.

- `POST /v1/text-to-speech/{voice_id}` (+ `/stream`): the audio in `output_format` (elevenlabs_formats.py).
  `voice_settings.speed` is the speed, `seed` the seed; F5-TTS's own fields ride along in the body.
- `POST /v1/text-to-speech/{voice_id}/with-timestamps` (+ `/stream/with-timestamps`): the audio as base64 with
  the character alignment of the text (elevenlabs_alignment.py), from the word aligner.
- `GET /v1/voices`, `GET /v2/voices`, `GET|DELETE /v1/voices/{voice_id}`, `POST /v1/voices/add` (multipart; the
  transcript in `labels["transcript"]`; the description and other labels stored with the voice).
- `GET /v1/models`: the one model.

The whole audio and the stream are the same bytes. Errors have ElevenLabs' shape (`errors.elevenlabs_error`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from worker.async_bridge import iterate_in_thread
from worker.http_server.elevenlabs_alignment import AlignmentBuilder, Alignments
from worker.http_server.elevenlabs_formats import (
    DEFAULT_OUTPUT_FORMAT,
    OutputFormat,
    encode_output,
    parse_output_format,
)
from worker.http_server.jobs import run_one, speech_items, unless_client_leaves
from worker.http_server.openai import MODEL_ID
from worker.http_server.responses import OwningStreamingResponse
from worker.http_server.state import HttpState, State
from worker.schema import (
    MAX_TEXT_CHARS,
    VOICE_NAME_PATTERN,
    ContractError,
    ErrorCode,
    SynthesizeInput,
    VoiceInfo,
    echo,
    parse_job_input,
)
from worker.service import Speech, SpeechPiece

PREFIX = "/elevenlabs"
# ElevenLabs' model ids all start so: apps with one hard-coded (`eleven_multilingual_v2`) work; all are F5-TTS.
ELEVENLABS_MODEL_PREFIX = "eleven_"
# ElevenLabs' seeds are unsigned 32-bit, F5's below 2**31: larger ones are folded into F5's range (`seed mod 2**31`),
# on every ElevenLabs route alike (the REST routes and the realtime WebSocket take their seeds as this type).
ELEVENLABS_MAX_SEED = 2**32 - 1
F5_SEEDS = 2**31
ElevenLabsSeed = Annotated[int, Field(ge=0, le=ELEVENLABS_MAX_SEED), AfterValidator(lambda seed: seed % F5_SEEDS)]
# F5TTS_v1_Base's training data (Emilia) is English and Chinese.
LANGUAGES = [{"language_id": "en", "name": "English"}, {"language_id": "zh", "name": "Chinese"}]
# The transcript of an uploaded clip comes in this label (ElevenLabs' `labels` are free-form strings).
TRANSCRIPT_LABEL = "transcript"

router = APIRouter(tags=["ElevenLabs"])


# ------------------------------------------------------------------------------------------------ errors
@contextlib.contextmanager
def _fields_named(names: dict[str, str]) -> Iterator[None]:
    """A ContractError naming a contract field, re-raised naming the field as the caller sent it."""
    try:
        yield
    except ContractError as exc:
        field = exc.body.field
        if field is None:
            raise
        head, _, rest = field.partition(".")
        renamed = names.get(head, head) + (f".{rest}" if rest else "")
        message = exc.body.message.replace(f"{field}:", f"{renamed}:", 1)
        raise ContractError(exc.code, message, renamed) from None


TTS_FIELDS = {"voice": "voice_id"}


def check_voice_id(voice_id: str) -> str:
    """voice_not_found for an id no stored voice can have (an ElevenLabs id such as `JBFqnCBsd6RMkjVDRZzb`)."""
    if not re.fullmatch(VOICE_NAME_PATTERN, voice_id):
        raise ContractError(
            ErrorCode.voice_not_found,
            f"voice {echo(voice_id)} does not exist: voice ids here are the names of stored voices "
            "(GET /v1/voices lists them)",
            "voice_id",
        )
    return voice_id


# ------------------------------------------------------------------------------------------------ text to speech
class VoiceSettings(BaseModel):
    """ElevenLabs' voice settings. `speed` sets the speaking rate; F5-TTS takes the rest of a voice's character
    from its reference clip, so the others are accepted and ignored."""

    model_config = ConfigDict(extra="forbid")

    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None
    speed: float | None = Field(None, description="Speaking rate, 0.3-3.0 (F5-TTS's range).")


class TextToSpeechRequest(BaseModel):
    """ElevenLabs' text-to-speech body, plus F5-TTS's own fields (the SDK's
    `request_options={"additional_body_parameters": {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description=f'Text to speak, 1-{MAX_TEXT_CHARS} characters; `<break time="1s"/>` pauses.')
    model_id: str | None = Field(None, description=f"`{MODEL_ID}`, or any of ElevenLabs' (`eleven_…`): all F5-TTS.")
    voice_settings: VoiceSettings | None = None
    seed: ElevenLabsSeed | None = Field(None, description="Same seed, same audio.")
    # ElevenLabs' fields that F5-TTS has no use for: accepted (apps send them), ignored.
    language_code: str | None = None
    pronunciation_dictionary_locators: list[dict[str, Any]] | None = None
    previous_text: str | None = None
    next_text: str | None = None
    previous_request_ids: list[str] | None = None
    next_request_ids: list[str] | None = None
    use_pvc_as_ivc: bool | None = None
    apply_text_normalization: str | None = None
    apply_language_text_normalization: bool | None = None
    # F5-TTS's own fields (same ranges as the job contract's `synthesize`)
    nfe_step: int | None = None
    cfg_strength: float | None = None
    sway_sampling_coef: float | None = None
    cross_fade_duration: float | None = None
    remove_silence: bool | None = None

    def to_job(self, voice_id: str, *, word_timestamps: bool = False) -> SynthesizeInput:
        if (
            self.model_id is not None
            and self.model_id != MODEL_ID
            and not self.model_id.startswith(ELEVENLABS_MODEL_PREFIX)
        ):
            raise ContractError(
                ErrorCode.invalid_input,
                f"unknown model_id {echo(self.model_id)}; use {MODEL_ID} (ElevenLabs' eleven_… ids are accepted too)",
                "model_id",
            )
        f5 = self.model_dump(
            include={"seed", "nfe_step", "cfg_strength", "sway_sampling_coef", "cross_fade_duration", "remove_silence"},
            exclude_none=True,
        )
        if self.voice_settings is not None and self.voice_settings.speed is not None:
            f5["speed"] = self.voice_settings.speed
        job_input = {"text": self.text, "voice": check_voice_id(voice_id), **f5, "word_timestamps": word_timestamps}
        with _fields_named({"speed": "voice_settings.speed", **TTS_FIELDS}):
            job = parse_job_input(job_input)
        assert isinstance(job, SynthesizeInput)
        return job


OutputFormatQuery = Query(
    DEFAULT_OUTPUT_FORMAT,
    description="codec_samplerate[_bitrate]: mp3_44100_128, pcm_16000, ulaw_8000, opus_48000_64, wav_24000, …",
)


@dataclass
class _OpenSpeech:
    """A speech whose first piece is made (so every error up to there has its own status), and what it holds
    (its synthesis slot, its job thread) until `resources` is closed."""

    speech: Speech
    pieces: AsyncIterator[SpeechPiece]
    resources: contextlib.AsyncExitStack

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Seed": str(self.speech.seed), "X-Voice": self.speech.voice}


async def _open_speech(state: HttpState, job: SynthesizeInput) -> _OpenSpeech:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(state.slots.slot())
        cancelled = threading.Event()
        stack.callback(cancelled.set)
        items = iterate_in_thread(speech_items(state.service, job, cancelled), name="elevenlabs")
        stack.push_async_callback(items.aclose)
        with _fields_named(TTS_FIELDS):
            speech = await anext(items)
            assert isinstance(speech, Speech)
            first = await anext(items, None)
        return _OpenSpeech(speech, _then(first, items), stack.pop_all())
    raise AssertionError("unreachable")  # pragma: no cover - the `with` returns or raises


async def _then(first: SpeechPiece | None, rest: AsyncIterator[SpeechPiece]) -> AsyncIterator[SpeechPiece]:
    if first is None:
        return
    yield first
    async for piece in rest:
        yield piece


async def _samples(pieces: AsyncIterator[SpeechPiece]) -> AsyncIterator[np.ndarray]:
    async for piece in pieces:
        yield piece.samples


def _streamed(body: AsyncGenerator[bytes, None], opened: _OpenSpeech, media_type: str) -> StreamingResponse:
    # The response closes `body` first, then the resources: it may be reading the pieces.
    return OwningStreamingResponse(body, opened.resources, media_type=media_type, headers=opened.headers)


@router.post(
    "/v1/text-to-speech/{voice_id}",
    summary="Speak text in a stored voice (ElevenLabs-compatible): the whole file",
    response_class=Response,
)
async def text_to_speech(
    voice_id: str, body: TextToSpeechRequest, state: State, request: Request, output_format: str = OutputFormatQuery
) -> Response:
    return await unless_client_leaves(request, _whole_file(voice_id, body, state, output_format))


async def _whole_file(voice_id: str, body: TextToSpeechRequest, state: HttpState, output_format: str) -> Response:
    output = parse_output_format(output_format)
    opened = await _open_speech(state, body.to_job(voice_id))
    async with opened.resources:  # the whole file is made before the answer: any failure gets its status
        data = await _encoded(_samples(opened.pieces), opened.speech.sample_rate, output)
    return Response(data, media_type=output.content_type, headers=opened.headers)


async def _encoded(samples: AsyncIterator[np.ndarray], sample_rate: int, output: OutputFormat) -> bytes:
    """The whole of `samples` in `output`; the encoder closed however it ends (an error, a client gone)."""
    async with contextlib.aclosing(encode_output(samples, sample_rate, output)) as encoded:
        return b"".join([data async for data in encoded])


@router.post(
    "/v1/text-to-speech/{voice_id}/stream",
    summary="Speak text in a stored voice (ElevenLabs-compatible), streamed as it is generated",
    response_class=StreamingResponse,
)
async def text_to_speech_stream(
    voice_id: str, body: TextToSpeechRequest, state: State, output_format: str = OutputFormatQuery
) -> Response:
    output = parse_output_format(output_format)
    opened = await _open_speech(state, body.to_job(voice_id))
    audio = encode_output(_samples(opened.pieces), opened.speech.sample_rate, output)
    return _streamed(audio, opened, output.content_type)


@router.post(
    "/v1/text-to-speech/{voice_id}/with-timestamps",
    summary="Speak text with the time of each of its characters (ElevenLabs-compatible)",
)
async def text_to_speech_with_timestamps(
    voice_id: str, body: TextToSpeechRequest, state: State, request: Request, output_format: str = OutputFormatQuery
) -> Response:
    return await unless_client_leaves(request, _whole_file_with_timestamps(voice_id, body, state, output_format))


async def _whole_file_with_timestamps(
    voice_id: str, body: TextToSpeechRequest, state: HttpState, output_format: str
) -> JSONResponse:
    output = parse_output_format(output_format)
    opened = await _open_speech(state, body.to_job(voice_id, word_timestamps=True))
    builder = AlignmentBuilder(body.text)
    alignments = Alignments()

    async def samples() -> AsyncIterator[np.ndarray]:
        async for piece in opened.pieces:
            alignments.extend(builder.add(piece.words or []))
            yield piece.samples

    async with opened.resources:
        data = await _encoded(samples(), opened.speech.sample_rate, output)
    alignments.extend(builder.finish(opened.speech.duration))
    content = {"audio_base64": base64.b64encode(data).decode("ascii"), **alignments.to_json()}
    return JSONResponse(content, headers=opened.headers)


@router.post(
    "/v1/text-to-speech/{voice_id}/stream/with-timestamps",
    summary="Speak text, streamed as JSON lines of base64 audio with the time of each character (ElevenLabs)",
    response_class=StreamingResponse,
)
async def text_to_speech_stream_with_timestamps(
    voice_id: str, body: TextToSpeechRequest, state: State, output_format: str = OutputFormatQuery
) -> Response:
    output = parse_output_format(output_format)
    opened = await _open_speech(state, body.to_job(voice_id, word_timestamps=True))
    lines = _timestamped_lines(opened, body.text, output)
    return _streamed(lines, opened, "application/x-ndjson")


async def _timestamped_lines(opened: _OpenSpeech, text: str, output: OutputFormat) -> AsyncGenerator[bytes, None]:
    """One JSON line per piece of encoded audio: its base64, and the alignment of the characters whose words were
    fed to the encoder since the line before (the last line has the rest). Times are on the whole speech's
    timeline; the audio of the lines, joined, is the whole file."""
    builder = AlignmentBuilder(text)
    pending = Alignments()

    async def samples() -> AsyncIterator[np.ndarray]:
        async for piece in opened.pieces:
            pending.extend(builder.add(piece.words or []))
            yield piece.samples
        pending.extend(builder.finish(opened.speech.duration))

    def line(data: bytes) -> bytes:
        nonlocal pending
        item = {"audio_base64": base64.b64encode(data).decode("ascii"), **pending.to_json()}
        pending = Alignments()
        return (json.dumps(item) + "\n").encode()

    async for data in encode_output(samples(), opened.speech.sample_rate, output):
        yield line(data)
    if pending.alignment.characters or pending.normalized.characters:
        yield line(b"")


# ------------------------------------------------------------------------------------------------ voices
def _voice(info: VoiceInfo) -> dict[str, Any]:
    """A stored voice as ElevenLabs describes one: its labels and description as it was added, its transcript
    `labels["transcript"]`."""
    created = datetime.fromisoformat(info.created_at) if info.created_at else None
    return {
        "voice_id": info.name,
        "name": info.name,
        "category": "premade" if info.builtin else "cloned",
        "labels": {**(info.labels or {}), TRANSCRIPT_LABEL: info.text},
        "description": info.description,
        "preview_url": None,
        "samples": None,
        "settings": None,
        "is_owner": not info.builtin,
        "created_at_unix": int(created.timestamp()) if created else None,
    }


async def _voices(state: HttpState) -> list[dict[str, Any]]:
    output = await run_one(state.service, {"action": "list_voices"})
    return [_voice(VoiceInfo.model_validate(v)) for v in output["voices"]]


@router.get("/v1/voices", summary="Stored voices (ElevenLabs-compatible)")
async def list_voices(state: State) -> dict[str, Any]:
    return {"voices": await _voices(state)}


@router.get("/v2/voices", summary="Stored voices, searched (ElevenLabs-compatible): one page of all that match")
async def search_voices(
    state: State, search: str | None = Query(None, description="Part of the voice's name.")
) -> dict[str, Any]:
    voices = await _voices(state)
    if search:
        voices = [v for v in voices if search.lower() in v["name"]]
    return {"voices": voices, "has_more": False, "total_count": len(voices), "next_page_token": None}


@router.get("/v1/voices/{voice_id}", summary="One stored voice (ElevenLabs-compatible)")
async def get_voice(voice_id: str, state: State) -> dict[str, Any]:
    check_voice_id(voice_id)
    for voice in await _voices(state):
        if voice["voice_id"] == voice_id:
            return voice
    raise ContractError(ErrorCode.voice_not_found, f"voice {voice_id!r} does not exist", "voice_id")


@router.delete("/v1/voices/{voice_id}", summary="Delete a stored voice (built-in voices cannot be deleted)")
async def delete_voice(voice_id: str, state: State) -> dict[str, Any]:
    check_voice_id(voice_id)
    with _fields_named({"name": "voice_id"}):
        await run_one(state.service, {"action": "delete_voice", "name": voice_id})
    return {"status": "ok"}


def voice_id_for(name: str) -> str:
    """The voice_id of a voice named `name`: lowercased, each run of whitespace a `-`; invalid_input (naming
    `name`, saying why) when that is no valid voice name."""
    voice_id = re.sub(r"\s+", "-", name.strip().lower())
    if not re.fullmatch(VOICE_NAME_PATTERN, voice_id):
        raise ContractError(
            ErrorCode.invalid_input,
            f"name {echo(name)} gives the voice_id {echo(voice_id)}, which is not valid: a voice_id is the name "
            "lowercased with spaces as '-', and must be 1-64 of a-z, 0-9, '-' and '_', starting with a letter or "
            "digit",
            "name",
        )
    return voice_id


UPLOAD_FIELDS = {"audio": "files", "text": "labels"}  # the contract's fields as this route names them
MAX_UPLOAD_FILES = 25  # ElevenLabs' own limit: more is refused by the form parser, fewer get a clear message


@router.post(
    "/v1/voices/add",
    summary="Store a voice from one clip and its transcript (ElevenLabs' instant voice cloning)",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["name", "files"],
                        "properties": {
                            "name": {"type": "string"},
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "description": {"type": "string"},
                            "labels": {
                                "type": "string",
                                "description": 'JSON: {"transcript": "<what the clip says>", ...your own labels}',
                            },
                            "remove_background_noise": {"type": "boolean"},
                        },
                    }
                }
            }
        }
    },
)
async def add_voice(request: Request, state: State) -> dict[str, Any]:
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=16)
    name = form.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ContractError(ErrorCode.invalid_input, "name: a voice needs a name", "name")
    voice_id = voice_id_for(name)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if len(files) != 1:
        raise ContractError(
            ErrorCode.invalid_input,
            f"files: send exactly one clip (got {len(files)}): F5-TTS clones a voice from one clip and its transcript",
            "files",
        )
    labels = _labels(form.get("labels"))
    transcript = labels.pop(TRANSCRIPT_LABEL, "").strip() or None  # kept as the voice's text, not as a label
    if transcript is None and not state.settings.model.auto_transcribe:
        raise ContractError(
            ErrorCode.invalid_input,
            'labels: the clip\'s transcript is required: send labels={"transcript": "<exactly what the clip says>"} '
            "(this worker does not transcribe clips itself)",
            "labels",
        )
    data = await files[0].read()
    job: dict[str, Any] = {
        "action": "upload_voice",
        "name": voice_id,
        "audio": {"base64": base64.b64encode(data).decode("ascii")},
    }
    if transcript is not None:
        job["text"] = transcript
    if labels:
        job["labels"] = labels
    description = form.get("description")
    if isinstance(description, str) and description.strip():
        job["description"] = description.strip()
    async with state.slots.slot():
        with _fields_named(UPLOAD_FIELDS):
            await run_one(state.service, job)
    return {"voice_id": voice_id, "requires_verification": False}


def _labels(labels: object) -> dict[str, str]:
    """The form's `labels`: a JSON object of strings (empty when absent). Their number and sizes are the
    contract's to check (`upload_voice.labels`)."""
    if not isinstance(labels, str) or labels.strip() in ("", "null"):
        return {}
    try:
        parsed = json.loads(labels)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(value, str) for value in parsed.values()):
        raise ContractError(
            ErrorCode.invalid_input,
            'labels: must be a JSON object of strings, e.g. {"transcript": "<exactly what the clip says>"}',
            "labels",
        )
    return parsed


# ------------------------------------------------------------------------------------------------ models
@router.get("/v1/models", summary="The one text-to-speech model (ElevenLabs-compatible)")
async def models() -> list[dict[str, Any]]:
    return [
        {
            "model_id": MODEL_ID,
            "name": "F5-TTS",
            "description": "F5-TTS voice cloning: any stored voice, from one clip and its transcript.",
            "can_do_text_to_speech": True,
            "can_do_voice_conversion": False,
            "can_be_finetuned": False,
            "can_use_style": False,
            "can_use_speaker_boost": False,
            "serves_pro_voices": False,
            "requires_alpha_access": False,
            "token_cost_factor": 1.0,
            "max_characters_request_free_user": MAX_TEXT_CHARS,
            "max_characters_request_subscribed_user": MAX_TEXT_CHARS,
            "maximum_text_length_per_request": MAX_TEXT_CHARS,
            "languages": LANGUAGES,
        }
    ]
