"""Batched synthesis (issue 19), through the real f5-tts `CFM.sample` on the tiny checkpoint: a chunk in a batch
sounds as it does alone, the inference thread batches across jobs and within a job, fairly, and survives
cancellation and running out of memory; in the queue mode's service and the http mode's app alike."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from tests.worker.helpers import make_service, serving
from worker import batcher, handler
from worker.batcher import BatchLimits, InferenceThread, group_chunks
from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import TARGET_RMS, ChunkRequest, Engine, seed_everything
from worker.http_server import create_app
from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(300)

FAST = {"nfe_step": 4}
# Float32 rounding of a batched pass (other matmul shapes) moves samples by ~1e-7; without attention masks a
# padded chunk moved by ~3e-4. The waves peak around 0.1.
SAME_WITHIN = 1e-5
LONG = (
    "The rivers carve the valleys, and the winds shape the mountains over the ages, while the seasons turn "
    "without asking anyone for permission."
)
SHORT = "Hi there, how are you?"
# Five chunks with the default voice (738, 1506, 1276, 1295 and 1420 mel frames): a first sentence, then four.
STORY = (
    "The lamp was lit at dusk. "
    "He polished the great lens until it shone, then lit the lamp and watched the beam sweep across the water. "
    "Ships passing in the night would see the light and know that the rocks were near. "
    "Some of the sailors waved, though they knew he could not see them from so far away. "
    "When the morning came, he put out the lamp, wrote a line in his logbook, and went down to sleep."
)
WIDE = BatchLimits(max_batch=8, max_frames=1_000_000, wait_s=0.0)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(str(builtin_audio_file()), dtype="float32")
    return samples, rate


def request(
    engine: Engine, reference: tuple[np.ndarray, int], text: str, seed: int, seconds: float = 0
) -> ChunkRequest:
    """The first chunk of `text` in the built-in voice (its first `seconds` only, with a shorter transcript, when
    given: another reference length)."""
    samples, rate = reference
    ref_text = BUILTIN_REFERENCE_TEXT
    if seconds:
        samples, ref_text = samples[: int(seconds * rate)], "Some call me nature."
    return engine.plan(samples, rate, ref_text, text, seed=seed, **FAST)[0]


def assert_same(batched: np.ndarray, alone: np.ndarray) -> None:
    assert batched.shape == alone.shape  # same length: no frame gained or lost to a batch mate
    assert np.abs(batched - alone).max() < SAME_WITHIN, np.abs(batched - alone).max()


# ------------------------------------------------------------------------------------------------ engine
def test_a_chunk_alone_gives_f5_tts_own_bytes(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    """The batched path at batch 1 is f5-tts's infer_batch_process, byte for byte (seeded as the worker seeds)."""
    samples, rate = reference
    chunk = request(engine, reference, LONG, seed=5)
    (wave,) = engine.sample([chunk])
    seed_everything(5)
    f5_waves = engine._f5.infer_batch_process(
        (torch.from_numpy(samples.copy()).unsqueeze(0), rate),
        chunk.prompt.text,
        [LONG],
        engine.model,
        engine.vocoder,
        progress=None,
        target_rms=TARGET_RMS,
        cross_fade_duration=0.0,
        nfe_step=4,
        device=engine.device,
        streaming=True,
        chunk_size=sys.maxsize,
    )
    f5_wave, _ = next(f5_waves)
    assert np.array_equal(wave, f5_wave)
    assert np.array_equal(engine.sample([chunk])[0], wave)  # and again: the same seed, the same bytes


def test_a_shorter_sentence_in_a_batch_keeps_its_words(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    """F5-TTS#1179: the shorter item of a batch (padded to the longer) dropped words. Here each item, another
    voice length and text, comes out as it does alone; without attention masks the padded one would not."""
    short, long = request(engine, reference, SHORT, seed=9, seconds=3), request(engine, reference, LONG, seed=11)
    assert short.frames < long.frames / 2
    (short_alone,), (long_alone,) = engine.sample([short]), engine.sample([long])
    long_batched, short_batched = engine.sample([long, short])
    assert_same(short_batched, short_alone)
    assert_same(long_batched, long_alone)

    model: Any = engine.model
    processors = [block.attn.processor for block in model.transformer.transformer_blocks]
    try:
        for processor in processors:
            processor.attn_mask_enabled = False  # f5-tts's shipped setting
        _, short_unmasked = engine.sample([long, short])
    finally:
        for processor in processors:
            processor.attn_mask_enabled = True
    assert np.abs(short_unmasked - short_alone).max() > 10 * SAME_WITHIN  # what the mask prevents


def test_each_item_has_its_own_noise(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    """CFM.sample's one `seed` would give every item the same noise; each item's comes from its own seed."""
    seven, eight = request(engine, reference, LONG, seed=7), request(engine, reference, LONG, seed=8)
    (seven_alone,) = engine.sample([seven])
    batched = engine.sample([seven, eight, seven])
    assert not np.allclose(batched[0], batched[1], atol=1e-3)
    assert_same(batched[0], seven_alone)
    assert_same(batched[2], seven_alone)


def test_one_call_takes_one_set_of_sampling_settings(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference
    four = request(engine, reference, LONG, seed=1)
    (eight,) = engine.plan(samples, rate, BUILTIN_REFERENCE_TEXT, LONG, seed=1, nfe_step=8)
    with pytest.raises(ValueError, match="one set of sampling settings"):
        engine.sample([four, eight])


# ------------------------------------------------------------------------------------------------ limits
def test_limits_cap_items_padded_frames_and_length_spread() -> None:
    limits = BatchLimits(max_batch=3, max_frames=3000, wait_s=0)
    assert limits.admits([5000])  # one chunk always runs, whatever its length
    assert limits.admits([900, 1000, 800])
    assert not limits.admits([900, 1000, 800, 900])  # items
    assert not limits.admits([1000, 1100, 1000])  # 3 x 1100 padded frames
    assert not limits.admits([400, 1000])  # a long one would pad a short one to 2.5x its length


def test_a_speech_groups_its_chunks_first_alone_then_by_the_limits(
    engine: Engine, reference: tuple[np.ndarray, int]
) -> None:
    samples, rate = reference
    requests = engine.plan(samples, rate, BUILTIN_REFERENCE_TEXT, STORY, seed=3, **FAST)
    assert len(requests) == 5
    groups = group_chunks(requests, BatchLimits(max_batch=4, max_frames=100_000, wait_s=0))
    assert [[r.index for r in group] for group in groups] == [[0], [1, 2, 3, 4]]
    two = group_chunks(requests, BatchLimits(max_batch=3, max_frames=100_000, wait_s=0))
    assert [[r.index for r in group] for group in two] == [[0], [1, 2, 3], [4]]
    by_frames = group_chunks(requests, BatchLimits(max_batch=4, max_frames=2 * 1506, wait_s=0))
    assert [[r.index for r in group] for group in by_frames] == [[0], [1, 2], [3, 4]]
    assert [len(g) for g in group_chunks(requests, BatchLimits(1, 100_000, 0))] == [1, 1, 1, 1, 1]


def test_defaults_follow_the_device(tmp_path) -> None:
    settings = Settings(model=ModelSettings(_env_file=None), worker=WorkerSettings(_env_file=None, data_dir=tmp_path))

    def tuned(**worker: Any) -> Settings:
        return Settings(model=settings.model, worker=WorkerSettings(_env_file=None, data_dir=tmp_path, **worker))

    cpu, gpu = batcher.batch_limits(settings, "cpu"), batcher.batch_limits(settings, "cuda:0")
    assert (cpu, gpu) == (BatchLimits(1, 16384, 0.0), BatchLimits(8, 16384, 0.005))
    assert (batcher.concurrency(settings, cpu), batcher.concurrency(settings, gpu)) == (1, 8)
    assert batcher.batch_limits(tuned(max_batch=3, batch_wait_ms=1), "cuda") == BatchLimits(3, 16384, 0.001)
    four = tuned(max_batch=4)
    assert batcher.concurrency(four, batcher.batch_limits(four, "cpu")) == 4
    assert batcher.concurrency(tuned(concurrency=2), gpu) == 2


def test_health_and_the_http_slots_follow_the_device_the_engine_loaded_on(engine: Engine, tmp_path) -> None:
    """F5TTS_DEVICE says cuda (or auto, with CUDA present but unusable) and the engine loaded on the CPU: every
    number follows the CPU, the device batches run on; none follows the setting."""
    settings = Settings(
        model=ModelSettings(_env_file=None, device="cuda", warmup=False),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path, busy_wait_s=0.05),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)  # the tiny engine, loaded on the CPU
    long_text = " ".join(["This sentence keeps the only synthesis slot busy for a while."] * 6)

    async def over_http() -> tuple[dict, list[int]]:
        app = create_app(service, settings)  # loads the model in its lifespan, as under uvicorn
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=120) as client,
        ):
            for _ in range(300):
                if (await client.get("/ping")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            health = (await client.post("/job", json={"input": {"action": "health"}})).json()
            responses = await asyncio.gather(
                client.post("/v1/audio/speech", json=speech(long_text, 1, nfe_step=16)),
                client.post("/v1/audio/speech", json=speech(SHORT, 2)),
            )
        return health, sorted(r.status_code for r in responses)

    health, statuses = asyncio.run(over_http())
    assert health["device"] == "cpu"
    assert (health["concurrency"], health["max_batch"], health["batch_wait_ms"]) == (1, 1, 0.0)
    assert statuses == [200, 503]  # one slot, as on any CPU worker


# ------------------------------------------------------------------------------------------------ the thread
@pytest.fixture
def calls(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Each Engine.sample call's chunk seeds (the real call runs)."""
    made: list[list[int]] = []
    real = engine.sample

    def recording(requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        made.append([r.seed for r in requests])
        return real(requests)

    monkeypatch.setattr(engine, "sample", recording)
    return made


def held(thread: InferenceThread) -> threading.Event:
    """Keeps `thread` busy until the returned event is set, so that what is queued meanwhile waits together."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    thread.call(hold)
    assert started.wait(30)
    return release


@contextlib.contextmanager
def gathered(chunks: int) -> Iterator[None]:
    """Holds the process's inference thread until `chunks` chunks wait for it (at most 60 s), so that the jobs
    started in the block share their first call however the machine schedules their threads."""
    release = held(batcher.inference)

    def release_once_queued() -> None:
        deadline = time.monotonic() + 60
        while len(batcher.inference._queue) < chunks and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()

    releaser = threading.Thread(target=release_once_queued, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        release.set()
        releaser.join(60)


def test_pending_chunks_of_several_jobs_share_one_call_by_length(
    engine: Engine, reference: tuple[np.ndarray, int], calls: list[list[int]]
) -> None:
    thread = InferenceThread()
    release = held(thread)
    short = [request(engine, reference, SHORT, seed=s, seconds=3) for s in (1, 2, 3)]
    long = request(engine, reference, LONG, seed=4)
    never = threading.Event()
    futures = [thread.sample(engine, [chunk], WIDE, never)[0] for chunk in (short[0], long, short[1], short[2])]
    release.set()
    waves = [future.result(60).wave for future in futures]
    # The oldest chunk goes first with the chunks of its length; the long one, which would pad them, goes alone.
    assert calls == [[1, 2, 3], [4]]
    for chunk, wave in zip((short[0], long, short[1], short[2]), waves, strict=True):
        assert_same(wave, next(engine._one_by_one([chunk])).samples)
    assert all(future.result().inference_s > 0 for future in futures)


def test_a_cancelled_jobs_chunks_leave_the_batch_and_the_others_are_served(
    engine: Engine, reference: tuple[np.ndarray, int], calls: list[list[int]]
) -> None:
    thread = InferenceThread()
    release = held(thread)
    stopped, running = threading.Event(), threading.Event()
    gone = thread.sample(engine, [request(engine, reference, SHORT, seed=s, seconds=3) for s in (1, 2)], WIDE, stopped)
    kept = thread.sample(engine, [request(engine, reference, SHORT, seed=3, seconds=3)], WIDE, running)
    withdrawn = thread.sample(engine, [request(engine, reference, SHORT, seed=4, seconds=3)], WIDE, running)
    stopped.set()  # RunPod cancelled the first job
    withdrawn[0].cancel()  # a consumer that went away
    release.set()
    assert kept[0].result(60).wave.size > 0
    assert all(future.cancelled() for future in [*gone, *withdrawn])
    assert calls == [[3]]


def failing_above(
    most: int, engine: Engine, calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> list[weakref.ref[torch.Tensor]]:
    """A GPU that holds `most` chunks at a time, simulated: Engine.sample with more items than that records
    `[-1] * items` in `calls` and raises torch's out-of-memory error (after allocating a tensor, as a real call
    would have); smaller calls go to the real sample. Returns weak references to the failed calls' tensors."""
    recording = engine.sample
    failed: list[weakref.ref[torch.Tensor]] = []

    def limited(requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        if len(requests) > most:
            calls.append([-1] * len(requests))
            activations = torch.zeros(len(requests), 1000)
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return recording(requests)

    monkeypatch.setattr(engine, "sample", limited)
    return failed


def test_running_out_of_memory_splits_the_batch_and_retries(
    engine: Engine, reference: tuple[np.ndarray, int], calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = failing_above(2, engine, calls, monkeypatch)
    limited = engine.sample
    # What the thread holds while each retried half runs: the error still being handled, the failed calls' tensors.
    during_retries: list[tuple[object, int]] = []

    def observed(requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        if len(requests) <= 2:
            during_retries.append((sys.exc_info()[1], sum(ref() is not None for ref in failed)))
        return limited(requests)

    monkeypatch.setattr(engine, "sample", observed)
    thread = InferenceThread()
    release = held(thread)
    chunks = [request(engine, reference, SHORT, seed=s, seconds=3) for s in range(1, 6)]
    futures = thread.sample(engine, chunks, WIDE, threading.Event())
    release.set()
    waves = [future.result(60).wave for future in futures]
    assert calls == [[-1] * 5, [1, 2], [-1] * 3, [3], [4, 5]]
    # The halves ran after the error was handled and dropped: no exception in flight, the failed calls' memory freed.
    assert during_retries == [(None, 0)] * 3
    for chunk, wave in zip(chunks, waves, strict=True):
        assert_same(wave, next(engine._one_by_one([chunk])).samples)


def test_a_job_cancelled_while_the_first_half_runs_leaves_the_second(
    engine: Engine, reference: tuple[np.ndarray, int], calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_above(2, engine, calls, monkeypatch)
    limited = engine.sample
    kept, stopped = threading.Event(), threading.Event()

    def cancelling(requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        if [r.seed for r in requests] == [1, 2]:
            stopped.set()  # the other job is cancelled while this half runs
        return limited(requests)

    monkeypatch.setattr(engine, "sample", cancelling)
    thread = InferenceThread()
    release = held(thread)
    first = thread.sample(engine, [request(engine, reference, SHORT, seed=s, seconds=3) for s in (1, 2)], WIDE, kept)
    second = thread.sample(
        engine, [request(engine, reference, SHORT, seed=s, seconds=3) for s in (3, 4)], WIDE, stopped
    )
    release.set()
    assert all(future.result(60).wave.size > 0 for future in first)
    for future in second:
        with pytest.raises(CancelledError):
            future.result(60)
    assert calls == [[-1] * 4, [1, 2]]  # the cancelled job's half was never sampled


def test_a_failure_reaches_every_chunk_of_its_call_and_the_thread_goes_on(
    engine: Engine, reference: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.sample
    monkeypatch.setattr(engine, "sample", lambda requests: (_ for _ in ()).throw(RuntimeError("broken")))
    thread = InferenceThread()
    futures = thread.sample(engine, [request(engine, reference, SHORT, seed=1, seconds=3)], WIDE, threading.Event())
    with pytest.raises(RuntimeError, match="broken"):
        futures[0].result(60)
    monkeypatch.setattr(engine, "sample", real)
    assert thread.call(lambda: "still here").result(60) == "still here"


# ------------------------------------------------------------------------------------------------ services
def batching_service(engine: Engine, tmp_path, **worker: Any) -> WorkerService:
    settings: dict[str, Any] = {"max_batch": 4, "batch_wait_ms": 500.0, **worker}
    return make_service(engine, StorageSettings(_env_file=None), tmp_path, **settings)


def pcm(item: dict) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(base64.b64decode(item["audio_base64"])), dtype="float32")
    return samples


def concurrently(jobs: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        barrier.wait(30)
        results[index] = jobs[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def job(text: str, seed: int, **fields: object) -> dict:
    return {"text": text, "seed": seed, "delivery": "base64", "format": "wav", "nfe_step": 4, **fields}


def assert_same_pcm(batched: np.ndarray, alone: np.ndarray) -> None:
    """WAV is 16-bit: float noise may flip the last bit of a sample."""
    assert batched.shape == alone.shape
    assert np.abs(batched - alone).max() <= 2 / 32768


def test_queue_mode_concurrent_jobs_are_batched_and_sound_as_they_do_alone(
    engine: Engine, tmp_path, calls: list[list[int]]
) -> None:
    service = batching_service(engine, tmp_path, concurrency=3)
    jobs = [job(SHORT, 1), job(LONG, 2), job("The winds shape the mountains over the ages.", 3)]
    alone = [pcm(next(service.run(j))) for j in jobs]
    assert calls == [[1], [2], [3]]
    calls.clear()

    def run_job(job_input: dict) -> list[dict]:
        return list(service.run(job_input))

    with gathered(len(jobs)):
        results: list[Any] = concurrently([functools.partial(run_job, j) for j in jobs])
    assert max(len(c) for c in calls) > 1, calls  # at least two jobs shared a call
    for items, wave in zip(results, alone, strict=True):
        assert_same_pcm(pcm(items[0]), wave)


def test_health_reports_the_batching_settings(engine: Engine, tmp_path) -> None:
    (health,) = batching_service(engine, tmp_path, concurrency=3, batch_frames=9000).run({"action": "health"})
    assert (health["concurrency"], health["max_batch"], health["batch_frames"]) == (3, 4, 9000)
    assert health["batch_wait_ms"] == 500.0


def test_whole_results_group_chunks_as_streams_do(engine: Engine, tmp_path, calls: list[list[int]]) -> None:
    service = batching_service(engine, tmp_path, batch_wait_ms=0.0)
    whole = pcm(next(service.run(job(STORY, 5))))
    assert calls == [[5], [6, 7, 8, 9]]  # the first chunk alone, then the rest in one call
    items = list(service.run(job(STORY, 5, stream=True)))
    streamed = np.concatenate([pcm(item) for item in items[:-1]])
    assert np.array_equal(streamed, whole)  # sample for sample
    assert calls[2:] == [[5], [6, 7, 8, 9]]


def speech(text: str, seed: int, **fields: object) -> dict:
    """An OpenAI speech request body (16-bit PCM out)."""
    body = {"model": "tts-1", "input": text, "voice": "default", "seed": seed, "nfe_step": 4, "response_format": "pcm"}
    return {**body, **fields}


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2") / 32768


def http_service(engine: Engine, tmp_path, **worker: Any) -> WorkerService:
    """A service as the http mode runs it (warmed up by nobody: the engine is loaded once per session)."""
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path, **worker),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


def speak_over_http(service: WorkerService, bodies: list[dict], together: bool) -> list[bytes]:
    """The bodies' audio from the app's /v1/audio/speech, sent all at once or one after another."""

    async def speak_all() -> list[bytes]:
        transport = httpx.ASGITransport(app=create_app(service, service.settings, start_service=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=120) as client:

            async def speak(body: dict) -> bytes:
                response = await client.post("/v1/audio/speech", json=body)
                assert response.status_code == 200, response.text
                return response.content

            if together:
                return list(await asyncio.gather(*(speak(body) for body in bodies)))
            return [await speak(body) for body in bodies]

    return asyncio.run(speak_all())


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.01)


def test_http_mode_concurrent_requests_are_batched_and_sound_as_they_do_alone(
    engine: Engine, tmp_path, calls: list[list[int]]
) -> None:
    service = http_service(engine, tmp_path, max_batch=4, batch_wait_ms=500.0, concurrency=3)
    bodies = [
        speech(text, seed) for seed, text in enumerate((SHORT, LONG, "The winds shape the mountains over the ages."))
    ]
    alone = speak_over_http(service, bodies, together=False)
    calls.clear()
    with gathered(len(bodies)):
        together = speak_over_http(service, bodies, together=True)
    assert max(len(c) for c in calls) > 1, calls
    for batched, single in zip(together, alone, strict=True):
        assert_same_pcm(pcm16(batched), pcm16(single))


# Three one-chunk texts of about one length (any two may share a call), each with its job's seed.
ALIKE = {
    1: "The winds shape the mountains over the ages.",
    2: "The rivers carve the valleys over the years.",
    3: "The seasons turn without asking anyone at all.",
}
# A call with all three chunks: the first waits for the others (up to 1 s, the most allowed), then starts at once.
ALL_THREE = {"max_batch": 3, "batch_wait_ms": 1000.0, "concurrency": 3}


def assert_split_and_retried(calls: list[list[int]]) -> None:
    """The three jobs' chunks shared one call, which ran out of memory; each half then ran on its own."""
    assert calls[0] == [-1, -1, -1], calls
    assert sorted(len(c) for c in calls[1:]) == [1, 2] and sorted(seed for call in calls[1:] for seed in call) == [
        1,
        2,
        3,
    ], calls


def test_queue_mode_running_out_of_memory_splits_the_shared_call_and_serves_every_job(
    engine: Engine, tmp_path, calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through WorkerService.run, as the queue handler runs jobs. The out-of-memory error is simulated
    (`failing_above`: a call of more than two chunks raises torch.OutOfMemoryError; smaller calls go to the real
    f5-tts sample)."""
    alone = {seed: pcm(next(batching_service(engine, tmp_path).run(job(text, seed)))) for seed, text in ALIKE.items()}
    failing_above(2, engine, calls, monkeypatch)
    calls.clear()
    service = batching_service(engine, tmp_path, **ALL_THREE)

    def run_job(job_input: dict) -> list[dict]:
        return list(service.run(job_input))

    with gathered(len(ALIKE)):
        results: list[Any] = concurrently([functools.partial(run_job, job(text, seed)) for seed, text in ALIKE.items()])
    assert_split_and_retried(calls)
    for seed, items in zip(ALIKE, results, strict=True):
        assert_same_pcm(pcm(items[0]), alone[seed])


def test_http_mode_running_out_of_memory_splits_the_shared_call_and_serves_every_request(
    engine: Engine, tmp_path, calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the http app's OpenAI route. The out-of-memory error is simulated (`failing_above`: a call of more
    than two chunks raises torch.OutOfMemoryError; smaller calls go to the real f5-tts sample)."""
    bodies = [speech(text, seed) for seed, text in ALIKE.items()]
    alone = speak_over_http(http_service(engine, tmp_path), bodies, together=False)
    failing_above(2, engine, calls, monkeypatch)
    calls.clear()
    service = http_service(engine, tmp_path, **ALL_THREE)
    with gathered(len(bodies)):
        together = speak_over_http(service, bodies, together=True)
    assert_split_and_retried(calls)
    for batched, single in zip(together, alone, strict=True):
        assert_same_pcm(pcm16(batched), pcm16(single))


def test_queue_mode_a_cancelled_job_leaves_the_shared_call_and_its_batch_mates_are_served(
    engine: Engine, tmp_path, calls: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the RunPod handler coroutine: RunPod stops a job by cancelling it. Its chunk was waiting with two
    other jobs' chunks for the inference thread; those two then share a call without it."""
    service = batching_service(engine, tmp_path, concurrency=3)
    alone = {seed: pcm(next(service.run(job(text, seed)))) for seed, text in ALIKE.items() if seed != 1}
    calls.clear()
    monkeypatch.setattr(handler, "_service", service)

    async def collected(job_input: dict) -> list[dict]:
        return [item async for item in handler.handler({"id": "job", "input": job_input})]

    async def scenario() -> dict[int, list[dict]]:
        release = held(batcher.inference)
        try:
            tasks = {seed: asyncio.create_task(collected(job(text, seed))) for seed, text in ALIKE.items()}
            while len(batcher.inference._queue) < 3:  # every job's chunk waits for the thread
                assert not any(task.done() for task in tasks.values()), tasks
                await asyncio.sleep(0.01)
            tasks[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[1]
        finally:
            release.set()
        return {seed: await tasks[seed] for seed in (2, 3)}

    results = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert [sorted(call) for call in calls] == [[2, 3]]  # one call, shared by the two jobs left (in arrival order)
    for seed, items in results.items():
        assert_same_pcm(pcm(items[0]), alone[seed])


def test_http_mode_a_client_that_hangs_up_leaves_the_shared_calls_and_its_batch_mate_is_served(
    engine: Engine, tmp_path, calls: list[list[int]]
) -> None:
    """A real server (uvicorn): two streamed requests of ten chunks or more share their calls; one client hangs up
    after its first audio, and the other still gets all of its audio, as it sounds alone."""
    service = http_service(engine, tmp_path, max_batch=2, batch_wait_ms=1000.0, concurrency=2)
    text = " ".join(["The fox runs far away into the forest to hide from the dog."] * 20)  # ten chunks or more
    statuses: dict[str, int] = {}
    kept: list[bytes] = []
    with serving(create_app(service, service.settings, start_service=False)) as port:
        url = f"http://127.0.0.1:{port}"
        alone = httpx.post(f"{url}/v1/audio/speech", json=speech(text, 200), timeout=120).content
        chunks = sum(len(call) for call in calls)
        assert chunks >= 10 and max(len(call) for call in calls) == 2
        calls.clear()
        barrier = threading.Barrier(2)

        def hang_up() -> None:
            barrier.wait(30)
            with httpx.stream("POST", f"{url}/v1/audio/speech", json=speech(text, 100), timeout=120) as response:
                statuses["gone"] = response.status_code
                next(response.iter_raw())  # the first chunk's audio, then the client hangs up

        def listen() -> None:
            barrier.wait(30)
            response = httpx.post(f"{url}/v1/audio/speech", json=speech(text, 200), timeout=120)
            statuses["kept"] = response.status_code
            kept.append(response.content)

        threads = [threading.Thread(target=hang_up), threading.Thread(target=listen)]
        with gathered(2):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
    assert statuses == {"gone": 200, "kept": 200}
    assert any(min(call) < 200 <= max(call) for call in calls), calls  # the two requests shared a call
    gone = [seed for call in calls for seed in call if seed < 200]
    assert 1 <= len(gone) <= 5, calls  # the abandoned request stopped within two groups of its chunks
    assert sorted(seed for call in calls for seed in call if seed >= 200) == list(range(200, 200 + chunks))
    assert_same_pcm(pcm16(kept[0]), pcm16(alone))


def test_a_cancelled_job_leaves_the_queue_and_its_batch_mate_is_served(
    engine: Engine, tmp_path, calls: list[list[int]]
) -> None:
    """Queue mode's cancel (RunPod stops a job): its waiting chunk is dropped, the other job's chunk runs as alone."""
    service = batching_service(engine, tmp_path, concurrency=2, batch_wait_ms=0.0)
    alone = pcm(next(service.run(job(SHORT, 21))))
    calls.clear()
    release = held(batcher.inference)
    stop = threading.Event()
    outcomes: dict[str, Any] = {}

    def stopped_job() -> None:
        outcomes["stopped"] = list(service.run(job(STORY, 20), stop))

    def kept_job() -> None:
        outcomes["kept"] = list(service.run(job(SHORT, 21)))

    threads = [threading.Thread(target=stopped_job), threading.Thread(target=kept_job)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(batcher.inference._queue) == 2, "both jobs' first chunks wait for the thread")
    stop.set()
    release.set()
    for thread in threads:
        thread.join(120)
    assert outcomes["stopped"] == []  # stopped: no result, no error
    assert calls == [[21]]
    assert_same_pcm(pcm(outcomes["kept"][0]), alone)
