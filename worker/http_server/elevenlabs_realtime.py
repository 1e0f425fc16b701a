"""ElevenLabs' realtime text input: `WS /elevenlabs/v1/text-to-speech/{voice_id}/stream-input`.

ElevenLabs' input-streaming protocol, as voice agents speak it (an LLM's text arrives piece by piece):

- The client's first message opens the session: `{"text": " ", "voice_settings": {...}, "generation_config":
  {...}}`, and may carry the key (`xi-api-key` or `authorization`) when the handshake did not. F5's own
  settings (`nfe_step`, `cfg_strength`, `sway_sampling_coef`, `cross_fade_duration`, `remove_silence`, `seed`)
  may ride along in it; `voice_settings.speed` is the speed.
- Then text messages `{"text": "Hello there. "}`: each sentence is spoken as soon as it is complete (the chunk
  plan's sentence boundaries, `chunk_plan.complete_sentences_end`), once at least the plan's floor of text is
  complete (F5 garbles very short inputs). `"flush": true` speaks whatever is buffered now; `{"text": ""}` speaks
  the rest and ends the session. A text of only spaces (`" "`) keeps a silent session alive.
- The server answers `{"audio": <base64>, "alignment": {...}, "normalizedAlignment": {...}}` per piece of the
  chunk plan, in `output_format` (query), each piece's characters timed in milliseconds from the start of its
  own audio; after the end, `{"isFinal": true}` and a normal close (1000).
- Query parameters: `output_format`, `inactivity_timeout` (seconds without a message, while nothing is being
  spoken, before the session is closed: 20 by default, at most 180, as ElevenLabs'), `seed`; `model_id` and
  ElevenLabs' other settings are accepted and ignored.

A session holds one synthesis slot (`slots.py`) from its first message to its close, so a voice agent is never
refused in mid-sentence. Every failure is one error message, `{"message", "error": <our code>, "code": <close
code>}`, then a close with that code; a client that takes no data for `F5TTS_SEND_TIMEOUT_S` is dropped with
1008 (`send_timeout.py`). The slot and the job's thread are released however the session ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketState

from worker import markup
from worker.async_bridge import iterate_in_thread
from worker.audio_stream import ffmpeg_stream, streaming_wav_header
from worker.chunk_plan import MIN_CHUNK_BYTES, complete_sentences_end, nbytes, speakable
from worker.http_server.elevenlabs import ElevenLabsSeed, check_voice_id
from worker.http_server.elevenlabs_alignment import AlignmentBuilder
from worker.http_server.elevenlabs_formats import OutputFormat, encode_output, parse_output_format
from worker.http_server.jobs import speech_items
from worker.http_server.send_timeout import ClientTooSlow
from worker.http_server.state import HttpState
from worker.schema import MAX_TEXT_CHARS, ContractError, ErrorCode, SynthesizeInput, parse_job_input
from worker.service import Speech, SpeechPiece

log = logging.getLogger("worker.http")

router = APIRouter()

MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is 125 bytes, 2 of them the code
# ElevenLabs' inactivity timeout: 20 s unless the `inactivity_timeout` query parameter says otherwise, at most 180.
DEFAULT_INACTIVITY_S = 20
MAX_INACTIVITY_S = 180


class Close:
    """The close codes a session ends with (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    INVALID_DATA = 1007  # a message that is not the protocol's JSON
    POLICY = 1008  # refused: the key, the input, the voice, a silent client
    INTERNAL = 1011
    TRY_AGAIN = 1013  # every slot busy, or the model still loading


# The close code of each contract error; any other code closes with POLICY.
CLOSE_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.overloaded: Close.TRY_AGAIN,
    ErrorCode.model_unavailable: Close.TRY_AGAIN,
    ErrorCode.internal: Close.INTERNAL,
    ErrorCode.storage_error: Close.INTERNAL,
}


class SessionError(Exception):
    """Ends the session: the client gets `message` with `code`, then the close `close_code`."""

    def __init__(self, code: str, message: str, close_code: int = Close.POLICY) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    @classmethod
    def of(cls, exc: ContractError) -> SessionError:
        return cls(exc.code.value, exc.body.message, CLOSE_BY_CODE.get(exc.code, Close.POLICY))


# ------------------------------------------------------------------------------------------------ messages
class StreamQuery(BaseModel):
    """The handshake's query parameters."""

    model_config = ConfigDict(extra="ignore")  # model_id, language_code, enable_logging, ...: ElevenLabs' own

    output_format: str = "mp3_44100_128"
    inactivity_timeout: int = Field(DEFAULT_INACTIVITY_S, ge=1, le=MAX_INACTIVITY_S)
    seed: ElevenLabsSeed | None = None


class VoiceSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")  # stability, similarity_boost, style, ...: F5 has no such settings

    speed: float | None = None


class TextMessage(BaseModel):
    """A client message: the first one (settings, key) and every text piece after it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    text: str
    flush: bool = False
    voice_settings: VoiceSettings | None = None
    xi_api_key: str | None = Field(None, alias="xi-api-key")
    authorization: str | None = None
    # F5-TTS's own settings (the job contract's ranges; the seed ElevenLabs'), taken from the first message
    seed: ElevenLabsSeed | None = None
    nfe_step: int | None = None
    cfg_strength: float | None = None
    sway_sampling_coef: float | None = None
    cross_fade_duration: float | None = None
    remove_silence: bool | None = None

    def job_fields(self) -> dict[str, Any]:
        fields = self.model_dump(
            exclude_none=True,
            include={"seed", "nfe_step", "cfg_strength", "sway_sampling_coef", "cross_fade_duration", "remove_silence"},
        )
        if self.voice_settings is not None and self.voice_settings.speed is not None:
            fields["speed"] = self.voice_settings.speed
        return fields


def _invalid(exc: ValidationError, what: str) -> SessionError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or what
    return SessionError(ErrorCode.invalid_input.value, f"{what}: {where}: {first.get('msg', 'invalid')}")


# ------------------------------------------------------------------------------------------------ the text
# A paragraph break that ends a spoken part: its pause is kept as a break tag (markup's own reading of a
# blank line needs text on both sides, and the next paragraph comes in a later part).
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_PARAGRAPH_PAUSE = f'<break time="{markup.PARAGRAPH_SECONDS:g}s"/>'


@dataclass(frozen=True)
class Part:
    """Text to speak in one synthesis: the caller's characters, and what is spoken of them (a paragraph break
    that ends the part kept as its pause)."""

    text: str
    spoken: str


class TextBuffer:
    """The text received and not yet spoken; hands out parts to speak as their sentences complete."""

    def __init__(self) -> None:
        self.pending = ""

    def add(self, text: str) -> None:
        if not self.pending:
            text = text.lstrip()  # a part starts at its first word (the opening " " is the protocol's)
        if len(self.pending) + len(text) > MAX_TEXT_CHARS:
            raise SessionError(
                ErrorCode.invalid_input.value,
                f"text: over {MAX_TEXT_CHARS} characters are waiting to be spoken; end sentences (or flush) sooner",
            )
        self.pending += text

    def take_sentences(self) -> Part | None:
        """The complete sentences, once they reach the plan's floor (a shorter part waits for more)."""
        end = complete_sentences_end(self.pending)
        if end == 0 or nbytes(self.pending[:end].strip()) < MIN_CHUNK_BYTES:
            return None
        return self._take(end)

    def take_all(self) -> Part | None:
        return self._take(len(self.pending))

    def _take(self, end: int) -> Part | None:
        text, self.pending = self.pending[:end], self.pending[end:]
        if not speakable(text):
            return None  # nothing to speak (spaces, emoji): its characters have no time of their own
        trailing = text[len(text.rstrip()) :]
        pause = _PARAGRAPH_PAUSE if _PARAGRAPH_BREAK.search(trailing) else ""
        return Part(text, text.strip() + pause)


# ------------------------------------------------------------------------------------------------ a piece's message
async def encode_piece(samples: np.ndarray, sample_rate: int, output: OutputFormat, number: int) -> bytes:
    """The session's piece `number` (0, 1, ...) in `output`, each message's audio playable on its own and all of
    them joined one stream: raw formats are just their samples (a WAV header comes with the first piece only),
    MP3 pieces are bare frames (no ID3 tag, no Xing header), Opus pieces chained Ogg streams, each with its own
    serial number (ffmpeg's bitexact Ogg numbers every stream alike)."""

    async def one() -> AsyncIterator[np.ndarray]:
        yield samples

    if output.codec in ("mp3", "opus"):
        args = output.ffmpeg_args()  # ends with the muxer: ["-f", <muxer>]
        muxer_options = (
            ["-id3v2_version", "0", "-write_xing", "0"] if output.codec == "mp3" else ["-serial_offset", str(number)]
        )
        encoded = ffmpeg_stream(one(), sample_rate, [*args[:-2], *muxer_options, *args[-2:]])
    else:
        encoded = encode_output(one(), sample_rate, output)
    data = b"".join([chunk async for chunk in encoded])
    return data[len(streaming_wav_header(output.sample_rate)) :] if output.codec == "wav" and number else data


# ------------------------------------------------------------------------------------------------ the session
def given_key(headers: Mapping[str, str]) -> str | None:
    """The key the handshake carried: `xi-api-key` (ElevenLabs') or `Authorization: Bearer <key>`."""
    if key := headers.get("xi-api-key"):
        return key
    authorization = headers.get("authorization", "")
    return authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None


def _key_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Session:
    websocket: WebSocket
    state: HttpState
    voice_id: str

    async def run(self) -> None:
        try:
            await self._run()
        except SessionError as exc:
            await self._fail(exc)
        except ContractError as exc:
            await self._fail(SessionError.of(exc))
        except WebSocketDisconnect:
            log.info("realtime session: the client went away")
        except ClientTooSlow:
            raise  # its sends are stuck: nothing more can be said; the send timeout's middleware drops it
        except Exception:
            log.exception("realtime session failed")
            await self._fail(
                SessionError(ErrorCode.internal.value, "internal error; see the worker log", Close.INTERNAL)
            )

    async def _run(self) -> None:
        try:
            query: StreamQuery | None = StreamQuery.model_validate(dict(self.websocket.query_params))
        except ValidationError as exc:
            query, query_error = None, _invalid(exc, "query")
        # The key may come in the first message: it is checked before anything else is answered.
        first = await self._receive(query.inactivity_timeout if query else DEFAULT_INACTIVITY_S)
        self._authenticate(first)
        if query is None:
            raise query_error
        output = parse_output_format(query.output_format)
        job = self._job(query, first)
        if self.state.service.engine is None:
            reason = self.state.service.startup_error or "the model is still loading; retry shortly"
            raise SessionError(ErrorCode.model_unavailable.value, reason, Close.TRY_AGAIN)
        await asyncio.to_thread(self.state.service.voices.get, self.voice_id)  # voice_not_found before any wait
        async with self.state.slots.slot():
            parts: asyncio.Queue[Part | None] = asyncio.Queue()  # None: the text has ended
            speaking = asyncio.Event()
            listener = asyncio.create_task(self._listen(first, parts, speaking, query.inactivity_timeout))
            speaker = asyncio.create_task(self._speak_all(job, output, parts, speaking))
            try:
                done, _ = await asyncio.wait({listener, speaker}, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if (error := task.exception()) is not None:
                        raise error
                await speaker
            finally:
                for task in (listener, speaker):
                    task.cancel()
                await asyncio.gather(listener, speaker, return_exceptions=True)
        await self.websocket.send_json({"isFinal": True})
        await self.websocket.close(Close.NORMAL)

    def _authenticate(self, first: TextMessage) -> None:
        api_key = self.state.settings.worker.api_key
        if api_key is None:
            return
        expected = api_key.get_secret_value()
        candidates = [given_key(self.websocket.headers), first.xi_api_key]
        if first.authorization:
            candidates.append(first.authorization.removeprefix("Bearer "))
        if not any(_key_matches(key, expected) for key in candidates):
            raise SessionError(
                "invalid_api_key", "invalid or missing API key (xi-api-key or Authorization: Bearer <key>)"
            )

    def _job(self, query: StreamQuery, first: TextMessage) -> dict[str, Any]:
        """The job input of every part but its text (checked now, with a stand-in text)."""
        fields = {"seed": query.seed, **first.job_fields()} if query.seed is not None else first.job_fields()
        job = {"action": "synthesize", "voice": check_voice_id(self.voice_id), "word_timestamps": True, **fields}
        parse_job_input({**job, "text": "-"})
        return job

    async def _receive(self, timeout_s: float) -> TextMessage:
        try:
            raw = await asyncio.wait_for(self.websocket.receive_text(), timeout_s)
        except TimeoutError:
            raise SessionError(
                "input_timeout_exceeded",
                f'no text received for {timeout_s:g} s (send " " to keep a session open; see inactivity_timeout)',
            ) from None
        except KeyError:  # a binary message: receive_text found no text in it
            raise SessionError(ErrorCode.invalid_input.value, "messages are JSON text", Close.INVALID_DATA) from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser recurses
            raise SessionError(
                ErrorCode.invalid_input.value, "a message is not JSON: " + raw[:40], Close.INVALID_DATA
            ) from None
        try:
            return TextMessage.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc, "message") from None

    async def _listen(
        self, first: TextMessage, parts: asyncio.Queue[Part | None], speaking: asyncio.Event, timeout_s: float
    ) -> None:
        """Text in, parts to speak out, until the text ends. Silence only counts while nothing is being spoken."""
        buffer = TextBuffer()
        message = first
        while True:
            if message.text == "":
                if (rest := buffer.take_all()) is not None:
                    parts.put_nowait(rest)
                parts.put_nowait(None)
                return
            buffer.add(message.text)
            part = buffer.take_all() if message.flush else buffer.take_sentences()
            if part is not None:
                parts.put_nowait(part)
            while True:
                try:
                    message = await self._receive(timeout_s)
                    break
                except SessionError as exc:
                    if exc.code != "input_timeout_exceeded" or not (speaking.is_set() or parts.qsize()):
                        raise

    async def _speak_all(
        self, job: dict[str, Any], output: OutputFormat, parts: asyncio.Queue[Part | None], speaking: asyncio.Event
    ) -> None:
        pieces = 0  # the session's pieces so far
        while (part := await parts.get()) is not None:
            speaking.set()
            try:
                pieces = await self._speak(job, part, output, pieces)
            finally:
                speaking.clear()

    async def _speak(self, job: dict[str, Any], part: Part, output: OutputFormat, pieces: int) -> int:
        """One part through the chunk plan: a message per piece, as soon as it is generated, its characters
        those of the caller's text. Returns the session's pieces so far (`pieces` before this part)."""
        parsed = parse_job_input({**job, "text": part.spoken})
        assert isinstance(parsed, SynthesizeInput)
        cancelled = threading.Event()
        items = iterate_in_thread(speech_items(self.state.service, parsed, cancelled), name="realtime")
        try:
            speech = await anext(items)
            assert isinstance(speech, Speech)
            builder = AlignmentBuilder(part.text)
            start_s = 0.0
            async for piece in items:
                assert isinstance(piece, SpeechPiece)
                data = await encode_piece(piece.samples, speech.sample_rate, output, pieces)
                alignments = builder.add(piece.words or [])
                if piece.last:
                    alignments.extend(builder.finish(speech.duration))
                await self.websocket.send_json(
                    {
                        "audio": base64.b64encode(data).decode("ascii"),
                        "alignment": alignments.alignment.to_realtime_json(start_s),
                        "normalizedAlignment": alignments.normalized.to_realtime_json(start_s),
                    }
                )
                start_s += piece.samples.size / speech.sample_rate
                pieces += 1
        finally:
            cancelled.set()
            await items.aclose()
        return pieces

    async def _fail(self, error: SessionError) -> None:
        log.info("realtime session refused: %s: %s", error.code, error.message)
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may be gone already
            await self.websocket.send_json({"message": error.message, "error": error.code, "code": error.close_code})
            # The close reason says it too, for clients that only read the close (at most 123 bytes).
            reason = f"{error.code}: {error.message}".encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
            await self.websocket.close(error.close_code, reason)


@router.websocket("/v1/text-to-speech/{voice_id}/stream-input")
async def stream_input(websocket: WebSocket, voice_id: str) -> None:
    """ElevenLabs' input streaming: text in as it is written, audio and alignment out sentence by sentence."""
    state: HttpState = websocket.app.state.http
    await websocket.accept()
    await Session(websocket, state, voice_id).run()
