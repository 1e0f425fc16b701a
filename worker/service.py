"""One job end to end: validate the input, run the action, turn every failure into a coded error.

`WorkerService.run(raw_input)` is a generator of result items, because streaming synthesis yields one item per
text chunk; every other action yields exactly one item. A failure is yielded as `{"error": "<ErrorBody JSON>"}`,
which is RunPod's convention for a failed job; the traceback goes to the log, never to the caller.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker import audio, batcher, subtitles
from worker.config import Settings
from worker.crossfade import CrossFader
from worker.fetch import read_audio_source
from worker.schema import (
    BUILTIN_VOICE,
    CONTRACT_VERSION,
    MAX_REFERENCE_SECONDS,
    AudioSource,
    ContractError,
    DeleteVoiceInput,
    ErrorCode,
    HealthInput,
    HealthOutput,
    ListVoicesInput,
    ListVoicesOutput,
    StreamChunk,
    StreamEnd,
    SynthesizeInput,
    SynthesizeOutput,
    Timings,
    UploadVoiceInput,
    WordTime,
    parse_job_input,
)
from worker.storage import ObjectStore, open_store
from worker.voices import VoiceLibrary, voice_exists_error
from worker.word_timing import WordTimeline, WordTiming, estimate_all

if TYPE_CHECKING:
    from worker.aligner import Aligner
    from worker.engine import ChunkRequest, Engine, GeneratedChunk

log = logging.getLogger("worker")


class JobCancelled(Exception):
    """RunPod stopped the job (cancel or execution timeout); nothing is returned."""


@dataclass
class SpeechPiece:
    """One piece of a speech: the audio of one text chunk, final (cross-faded with its neighbours, silence removed
    when asked); the pieces of a speech joined in order are its whole result."""

    index: int  # 0-based piece number (one per text chunk)
    text: str  # the text chunk this piece speaks
    samples: np.ndarray  # float32 mono at Speech.sample_rate
    inference_s: float
    # Its words on the whole speech's timeline (with per-character times), when the job wants words.
    words: list[WordTiming] | None = None
    last: bool = False  # the speech's last piece (a consumer can close what it built of the speech with it)


@dataclass
class _SpokenChunk:
    """A generated chunk made ready: silence removed, its words timed within it."""

    chunk: GeneratedChunk
    wave: np.ndarray
    words: list[WordTiming] | None


@dataclass
class Speech:
    """A synthesis in progress: `pieces` is generated lazily (checking `cancelled` before each chunk, raising
    JobCancelled); once it is exhausted, `chunks`, `inference_s` and `duration` hold the totals."""

    voice: str
    seed: int
    sample_rate: int
    pieces: Iterator[SpeechPiece]
    chunks: int = 0
    inference_s: float = 0.0
    duration: float = 0.0
    words: list[WordTiming] | None = None  # every piece's words, when the job wants words


@dataclass
class Reference:
    """The voice a synthesis speaks in: normalised samples and their transcript."""

    name: str
    samples: np.ndarray
    sample_rate: int
    text: str


class WorkerService:
    """Holds the per-process state (engine, store, voices) and runs jobs against it.

    The engine is built by `engine_factory` once, in `start()`. If that fails, the exception is kept and every
    job gets `model_unavailable` with its message: the worker keeps answering instead of crash-looping, which
    on RunPod would burn GPU time and hide the cause.
    """

    def __init__(self, settings: Settings, engine_factory: Callable[[], Engine]) -> None:
        self.settings = settings
        self._engine_factory = engine_factory
        self.engine: Engine | None = None
        self.startup_error: str | None = None
        # Set for the device the engine loads on; until then (and if it fails to load) the CPU's: one at a time.
        self.batch_limits = batcher.batch_limits(settings, "cpu")
        # The word aligner, loaded once on the inference thread (at start with F5TTS_ALIGNER_PRELOAD, else by
        # the first job that wants words); a load failure is kept: jobs then get estimated times, not errors.
        self._aligner: Aligner | None = None
        self._aligner_error: str | None = None
        data_dir = settings.worker.data_dir
        self.store: ObjectStore = open_store(settings.storage, local_root=Path(data_dir) / "store")
        self.voices = VoiceLibrary(self.store, cache_dir=Path(data_dir) / "voice-cache")

    @property
    def concurrency(self) -> int:
        """Jobs this worker runs at once: from the same limits the batches follow (the loaded engine's device), so
        the queue's concurrency modifier, the http slots and health agree with the batch size."""
        return batcher.concurrency(self.settings, self.batch_limits)

    # ----------------------------------------------------------------------------------------------- start-up
    def start(self) -> None:
        self.voices.sweep_orphans()  # audio left by saves that crashed or lost a race (best effort)
        try:
            self.engine = self._run_on_inference_thread(self._engine_factory)
            self.batch_limits = batcher.batch_limits(self.settings, str(self.engine.device))
            if self.settings.model.warmup:
                t0 = time.perf_counter()
                self._run_on_inference_thread(self.engine.warmup)
                log.info("warm-up synthesis took %.2f s", time.perf_counter() - t0)
            if self.settings.model.aligner_preload:
                self._run_on_inference_thread(self._load_aligner)
        except Exception as exc:
            log.exception("model failed to load; every job will get model_unavailable")
            self.engine = None
            self.startup_error = f"model failed to load: {type(exc).__name__}: {exc}"

    # ----------------------------------------------------------------------------------------------- jobs
    def run(self, raw_input: Any, cancelled: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """Run one job; yields result items (dicts), or a single `{"error": ...}` item.

        `cancelled`, set by the handler when RunPod stops the job (cancel, execution timeout), is checked before
        each text chunk: the job then ends without a result or an uploaded object, and the inference thread is
        free for the next job after at most one chunk.
        """
        started = time.perf_counter()
        cancelled = cancelled or threading.Event()
        try:
            job = parse_job_input(raw_input)
            if self.engine is None:
                raise ContractError(ErrorCode.model_unavailable, self.startup_error or "model is not loaded")
            if isinstance(job, SynthesizeInput):
                yield from self._synthesize(job, started, cancelled)
            elif isinstance(job, UploadVoiceInput):
                yield self._upload_voice(job).model_dump()
            elif isinstance(job, ListVoicesInput):
                yield ListVoicesOutput(voices=self.voices.list()).model_dump()
            elif isinstance(job, DeleteVoiceInput):
                yield self.voices.delete(job.name).model_dump()
            elif isinstance(job, HealthInput):
                yield self._health().model_dump()
        except JobCancelled:
            log.info("job stopped by RunPod before it finished")
        except ContractError as exc:
            log.info("job refused: %s", exc.to_error_string())
            yield {"error": exc.to_error_string()}
        except Exception:
            log.exception("job failed")
            yield {"error": ContractError(ErrorCode.internal, "internal error; see the worker log").to_error_string()}

    # ----------------------------------------------------------------------------------------------- synthesize
    def speak(self, job: SynthesizeInput, cancelled: threading.Event) -> Speech:
        """Validate delivery-independent parts, resolve the reference and seed (raising ContractError before any
        audio), and return the lazily generated speech.

        The one generator behind whole results, queue streams and HTTP streams: each piece is final audio
        (silence removed per chunk, cross-faded with its neighbours through one CrossFader), so the pieces joined
        in order are the whole result, and a seed means the same audio in every mode.
        """
        if self.engine is None:
            raise ContractError(ErrorCode.model_unavailable, self.startup_error or "model is not loaded")
        reference = self._resolve_reference(job)
        seed = job.seed if job.seed is not None else secrets.randbelow(2**31)
        # Plans the chunks now (no torch yet): a text that cannot be spoken is refused before any audio.
        requests = self.engine.plan(
            reference.samples,
            reference.sample_rate,
            reference.text,
            job.text,
            speed=job.speed,
            nfe_step=job.nfe_step,
            cfg_strength=job.cfg_strength,
            sway_sampling_coef=job.sway_sampling_coef,
            seed=seed,
        )
        speech = Speech(voice=reference.name, seed=seed, sample_rate=self.engine.sample_rate, pieces=iter(()))
        speech.pieces = self._pieces(speech, self._sampled_in_groups(self.engine, requests, job, cancelled), job)
        return speech

    def _spoken(self, chunk: GeneratedChunk, job: SynthesizeInput, sample_rate: int) -> _SpokenChunk:
        """An engine chunk with its silences removed and, when the job wants words, its words aligned against
        that very audio (on the inference thread: the aligner is torch work too).

        remove_silence works per chunk, before the cross-fade, in every mode: a stream cannot wait for the
        whole wave. A pause spanning a chunk join is then at most the two chunks' edges (0.5 s each), which
        keeps the rule "no pause over 1 s"."""
        wave = audio.remove_silences(chunk.samples, sample_rate) if job.remove_silence else chunk.samples
        words = (
            self._run_on_inference_thread(self._time_words, wave, sample_rate, chunk.text) if job.wants_words else None
        )
        return _SpokenChunk(chunk, wave, words)

    def _load_aligner(self) -> Aligner | None:
        """The aligner, loaded on first call (on the inference thread); None, logged once, if it cannot load."""
        if self._aligner is None and self._aligner_error is None and self.engine is not None:
            try:
                from worker.aligner import Aligner

                self._aligner = Aligner.load(self.settings.model.aligner_dir, device=str(self.engine.device))
            except Exception as exc:
                self._aligner_error = f"{type(exc).__name__}: {exc}"
                log.exception("the word aligner failed to load; word times will be estimated")
        return self._aligner

    def _time_words(self, wave: np.ndarray, sample_rate: int, text: str) -> list[WordTiming]:
        aligner = self._load_aligner()
        if aligner is None:
            log.warning(
                "word times of %r are estimated: the aligner is unavailable (%s)", text[:40], self._aligner_error
            )
            return estimate_all(text, wave.size / sample_rate)
        return aligner.time_words(wave, sample_rate, text)

    def _pieces(self, speech: Speech, chunks: Iterator[_SpokenChunk], job: SynthesizeInput) -> Iterator[SpeechPiece]:
        """Final audio per chunk. Chunks are cross-faded, except where the text asks for a pause: there the
        chunk's held-back tail is flushed and the silence follows in the same piece (delivered with the chunk
        before it, so a stream never waits on the next chunk to play it), and joining starts afresh after it."""
        sample_rate = speech.sample_rate
        fader = CrossFader(sample_rate, job.cross_fade_duration)
        timeline = WordTimeline()
        origin = 0  # where the fader's joined audio starts on the delivered timeline, in samples
        total_samples = 0
        if job.wants_words:
            speech.words = []
        for spoken in chunks:
            chunk = spoken.chunk
            lead = silence(chunk.pause_before, sample_rate)  # before the first chunk only
            origin += lead.size
            samples = fader.push(spoken.wave)
            words = None
            if spoken.words is not None and speech.words is not None:
                # The chunk's words sit where its wave starts on the joined (delivered) timeline.
                words = timeline.place(spoken.words, (origin + fader.wave_start) / sample_rate)
                speech.words += words
            if chunk.pause_after > 0 or chunk.index == chunk.count - 1:
                samples = np.concatenate([lead, samples, fader.finish(), silence(chunk.pause_after, sample_rate)])
                fader = CrossFader(sample_rate, job.cross_fade_duration)
                origin = total_samples + samples.size
            elif lead.size:
                samples = np.concatenate([lead, samples])
            total_samples += samples.size
            speech.chunks += 1
            speech.inference_s += chunk.inference_s
            speech.duration = total_samples / sample_rate
            yield SpeechPiece(
                index=chunk.index,
                text=chunk.text,
                samples=samples,
                inference_s=chunk.inference_s,
                words=words,
                last=chunk.index == chunk.count - 1,
            )

    def _sampled_in_groups(
        self, engine: Engine, requests: list[ChunkRequest], job: SynthesizeInput, cancelled: threading.Event
    ) -> Iterator[_SpokenChunk]:
        """The speech's chunks, sampled on the inference thread in the groups `batcher.group_chunks` makes (the
        first chunk alone), each group possibly batched with other jobs' chunks, one group ahead: while a group
        is encoded and delivered (a stream posts it to RunPod), the next one is already being generated, so
        streaming costs the model no idle time. `cancelled` is checked before each group is started; a group
        still pending when the job stops is withdrawn."""
        groups = batcher.group_chunks(requests, self.batch_limits)

        def start(group: list[ChunkRequest]) -> list[Future[batcher.SampledChunk]]:
            if cancelled.is_set():
                raise JobCancelled
            return batcher.inference.sample(engine, group, self.batch_limits, cancelled)

        pending = start(groups[0])
        try:
            for number, group in enumerate(groups):
                try:
                    sampled = [future.result() for future in pending]
                except CancelledError:  # the inference thread dropped them: the job was cancelled meanwhile
                    raise JobCancelled from None
                if number + 1 < len(groups):
                    pending = start(groups[number + 1])
                for request, chunk in zip(group, sampled, strict=True):
                    generated = request.generated(chunk.wave, chunk.inference_s)
                    yield self._spoken(generated, job, engine.sample_rate)
        finally:
            for future in pending:
                future.cancel()  # a no-op for chunks already done or running

    def _synthesize(self, job: SynthesizeInput, started: float, cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        delivery = job.delivery or ("url" if self.store.supports_urls else "base64")
        if delivery == "url" and not self.store.supports_urls:
            raise ContractError(
                ErrorCode.invalid_input, "delivery 'url' needs a bucket; this worker has none", "delivery"
            )
        speech = self.speak(job, cancelled)
        if job.stream:
            yield from self._stream(job, speech, started)
            return

        wave = np.concatenate([piece.samples for piece in speech.pieces])
        data = audio.encode_audio(wave, speech.sample_rate, job.format)
        if delivery == "base64":
            encoded = base64.b64encode(data).decode("ascii")
            self._check_inline_size(len(encoded))
            delivered: dict[str, str] = {"audio_base64": encoded}
        else:
            delivered = self._publish(data, job.format)
        output = SynthesizeOutput(
            **delivered,
            **self._summary(job, speech, started),
            words=word_times(job, speech.words),
            subtitles=self._subtitles(job, speech),
        )
        yield output.model_dump(exclude_none=True)

    def _stream(self, job: SynthesizeInput, speech: Speech, started: float) -> Iterator[dict[str, Any]]:
        """Each piece of the speech, encoded on its own, as soon as it exists; then a summary item."""
        inline_bytes = 0
        for piece in speech.pieces:
            encoded = base64.b64encode(audio.encode_audio(piece.samples, speech.sample_rate, job.format)).decode(
                "ascii"
            )
            # RunPod aggregates a stream's items into one result for /runsync and /status: cap their sum.
            inline_bytes += len(encoded)
            self._check_inline_size(inline_bytes)
            yield StreamChunk(
                index=piece.index,
                text=piece.text,
                audio_base64=encoded,
                format=job.format,
                sample_rate=speech.sample_rate,
                duration=round(piece.samples.size / speech.sample_rate, 3),
                words=word_times(job, piece.words),
            ).model_dump(exclude_none=True)
        # A stream's words came with its chunks; its subtitles need them all, so they come last.
        yield StreamEnd(**self._summary(job, speech, started), subtitles=self._subtitles(job, speech)).model_dump(
            exclude_none=True
        )

    def _summary(self, job: SynthesizeInput, speech: Speech, started: float) -> dict[str, Any]:
        """What a whole result and a stream's last item both say about the speech (timings: measured now)."""
        return {
            "format": job.format,
            "sample_rate": speech.sample_rate,
            "duration": round(speech.duration, 3),
            "seed": speech.seed,
            "voice": speech.voice,
            "chunks": speech.chunks,
            "timings": self._timings(started, speech.inference_s, speech.duration),
        }

    @staticmethod
    def _subtitles(job: SynthesizeInput, speech: Speech) -> str | None:
        """The subtitle file's text, when the job asked for one."""
        if job.subtitle_format is None or speech.words is None:
            return None
        return subtitles.render(speech.words, job.subtitle_format)

    def _resolve_reference(self, job: SynthesizeInput) -> Reference:
        if job.ref_audio is None:
            voice = self.voices.get(job.voice or BUILTIN_VOICE)
            return Reference(voice.info.name, voice.samples, voice.sample_rate, voice.info.text)
        transcript = self._transcript(job.ref_text, "ref_text")
        prepared, text = self._load_reference(job.ref_audio, transcript, "ref_audio")
        return Reference("inline", prepared.samples, prepared.sample_rate, text)

    def _transcript(self, transcript: str | None, field: str) -> str | None:
        """The caller's transcript, or None for "transcribe it"; invalid_input if it is needed but missing.

        A blank transcript (whitespace only, by Python's definition, the one prepare_reference strips with) is no
        transcript: it must not slip past this check into a transcription that is switched off.
        """
        if transcript is not None and not transcript.strip():
            transcript = None
        if transcript is None and not self.settings.model.auto_transcribe:
            raise ContractError(
                ErrorCode.invalid_input,
                f"{field} (the transcript) is required and must not be blank: automatic transcription is off",
                field,
            )
        return transcript

    def _load_reference(
        self, source: AudioSource, transcript: str | None, field: str
    ) -> tuple[audio.PreparedReference, str]:
        """Fetch and normalise reference audio (clipped to 12 s); its transcript, transcribed if not given."""
        data = read_audio_source(source, self.settings.worker, field)
        prepared = audio.prepare_reference(data, transcript, max_seconds=MAX_REFERENCE_SECONDS, field=field)
        if prepared.text:
            return prepared, prepared.text
        assert self.engine is not None  # jobs run only once the engine has loaded (`handle` checks)
        text = self._run_on_inference_thread(self.engine.transcribe, prepared.samples, prepared.sample_rate).strip()
        if not text:
            raise ContractError(ErrorCode.audio_unreadable, "no speech was recognised in the reference audio", field)
        return prepared, text

    def _run_on_inference_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the inference thread, after whatever is queued there; its exception is raised here."""
        return batcher.inference.call(fn, *args).result()

    def _check_inline_size(self, size: int) -> None:
        limit = self.settings.worker.max_output_bytes
        if size > limit:
            raise ContractError(
                ErrorCode.output_too_large,
                f"the result is {size / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB inline limit; "
                "use delivery 'url' (needs a bucket), a compressed format (mp3, ogg) or shorter text",
                "delivery",
            )

    def _publish(self, data: bytes, fmt: str) -> dict[str, Any]:
        """Upload the audio under generated/ and return its key with a presigned URL."""
        now = datetime.now(UTC)
        key = f"generated/{now:%Y/%m/%d}/{uuid.uuid4().hex}.{fmt}"
        self.store.put(key, data, audio.CONTENT_TYPES[fmt])
        expiry = self.settings.storage.url_expiry_s
        return {
            "key": key,
            "audio_url": self.store.presign(key, expiry),
            "expires_at": (now + timedelta(seconds=expiry)).isoformat(timespec="seconds"),
        }

    @staticmethod
    def _timings(started: float, inference_s: float, duration: float) -> Timings:
        return Timings(
            total_s=round(time.perf_counter() - started, 4),
            inference_s=round(inference_s, 4),
            rtf=round(inference_s / duration, 4) if duration > 0 else 0.0,
        )

    # ----------------------------------------------------------------------------------------------- voices
    def _upload_voice(self, job: UploadVoiceInput) -> Any:
        transcript = self._transcript(job.text, "text")
        if job.name == BUILTIN_VOICE or (not job.overwrite and self.voices.exists(job.name)):
            # Checked before fetching so a doomed upload costs nothing (the library checks again when writing).
            raise voice_exists_error(job.name)
        prepared, text = self._load_reference(job.audio, transcript, "audio")
        return self.voices.save(
            job.name,
            prepared.samples,
            prepared.sample_rate,
            text,
            overwrite=job.overwrite,
            original_duration=prepared.original_duration,
            clipped=prepared.clipped,
            description=job.description,
            labels=job.labels,
        )

    def _health(self) -> HealthOutput:
        engine = self.engine
        assert engine is not None  # jobs run only once the engine has loaded (`handle` checks)
        return HealthOutput(
            status="ok",
            contract_version=CONTRACT_VERSION,
            model=engine.model_name,
            device=str(engine.device),
            dtype=str(engine.dtype),
            attn_backend=engine.attn_backend,
            storage=self.store.kind,
            sample_rate=engine.sample_rate,
            concurrency=self.concurrency,
            max_batch=self.batch_limits.max_batch,
            batch_frames=self.batch_limits.max_frames,
            batch_wait_ms=round(self.batch_limits.wait_s * 1000, 3),
        )


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    """Digital silence: a pause the text asks for, exactly as long (to the sample) in every mode."""
    return np.zeros(round(seconds * sample_rate), dtype=np.float32)


def word_times(job: SynthesizeInput, words: list[WordTiming] | None) -> list[WordTime] | None:
    """Word timings as the contract carries them, when the job asked for them (subtitles alone need them but
    do not return them): milliseconds are precision enough for captions."""
    if not job.word_timestamps or words is None:
        return None
    return [WordTime(word=w.word, start=round(w.start, 3), end=round(w.end, 3), estimated=w.estimated) for w in words]
