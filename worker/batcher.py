"""The inference thread: every torch call of the process, and the batching of text chunks across jobs.

One thread runs all torch work, one task at a time: seeding, the GPU itself and torch's per-thread state (an
OpenMP team on the CPU, cuBLAS handles on a GPU) are not shareable between jobs, while fetching, encoding and
uploading of concurrent jobs still overlap. One thread, not just a lock: the warm-up then prepares the very
thread jobs run on, and no second OpenMP team exists to make libgomp spin between ops (CPU inference ran ~25%
slower when jobs ran on the handler's pool threads; see docs/benchmarks.md).

Two kinds of task wait for it, in arrival order:
- a call (`inference.call(fn, *args)`): model load, warm-up, word alignment, transcription;
- text chunks (`inference.sample(...)`). When a chunk is next, the thread gathers every pending chunk that can
  share its `Engine.sample` call: the same engine, the same sampling settings (nfe_step, cfg_strength,
  sway_sampling_coef) and batch limits, within the limits (`BatchLimits`: items, padded frames, similar
  lengths). It waits at most `wait_s` for company, runs one call and hands each chunk its wave.

A chunk's audio does not depend on its batch mates beyond float rounding (Engine.sample), so batching changes
speed, never what a request hears. A cancelled job's chunks leave before the call (its `cancelled` event, or its futures cancelled);
an out-of-memory error splits the batch in halves and retries each (without the chunks of jobs cancelled
meanwhile), down to one chunk.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.engine import ChunkRequest, Engine

log = logging.getLogger("worker.batcher")

# A chunk joins a batch only if the batch's longest item stays within this many times its shortest: each item is
# padded to the longest, so a long chunk among short ones would make them pay for frames they do not have.
MAX_LENGTH_SPREAD = 2.0

# Defaults by device. On a GPU, F5 at batch 1 is bound by kernel launches (~2,000 ops per step), so 8 chunks in
# one pass cost little more than one; 8 reference+chunk sequences of F5's ~22 s (~2,000 frames) each fit the
# frame budget. On a CPU the arithmetic is the bottleneck and a batch costs more than its chunks in turn (the
# figures: docs/benchmarks.md, "Batching"), so the CPU runs one chunk at a time and waits for nobody.
GPU_MAX_BATCH = 8
GPU_BATCH_WAIT_MS = 5.0


@dataclass(frozen=True)
class BatchLimits:
    """What one Engine.sample call may take."""

    max_batch: int  # items
    max_frames: int  # padded mel frames: items x the longest item's frames
    wait_s: float  # how long the first chunk waits for others to join

    def admits(self, frames: Sequence[int]) -> bool:
        """Whether chunks of these mel frames may share one call. One chunk always may, however long."""
        if len(frames) <= 1:
            return True
        longest = max(frames)
        return (
            len(frames) <= self.max_batch
            and len(frames) * longest <= self.max_frames
            and longest <= MAX_LENGTH_SPREAD * min(frames)
        )


def batch_limits(settings: Settings, device: str) -> BatchLimits:
    """The limits F5TTS_MAX_BATCH, F5TTS_BATCH_FRAMES and F5TTS_BATCH_WAIT_MS set, with defaults for `device`:
    the torch device the engine loaded on (not F5TTS_DEVICE: `auto` may have fallen back to the CPU)."""
    worker = settings.worker
    gpu = device.startswith("cuda")
    max_batch = worker.max_batch or (GPU_MAX_BATCH if gpu else 1)
    wait_ms = worker.batch_wait_ms if worker.batch_wait_ms is not None else (GPU_BATCH_WAIT_MS if gpu else 0.0)
    return BatchLimits(max_batch=max_batch, max_frames=worker.batch_frames, wait_s=wait_ms / 1000)


def concurrency(settings: Settings, limits: BatchLimits) -> int:
    """Jobs a worker runs at once (F5TTS_CONCURRENCY): by default as many as a batch under `limits` takes, so
    concurrent jobs can fill it."""
    return settings.worker.concurrency or limits.max_batch


def group_chunks(requests: Sequence[ChunkRequest], limits: BatchLimits) -> list[list[ChunkRequest]]:
    """A speech's chunks in the calls it makes them in: the first alone (a stream speaks as soon as it is done),
    then each following run of chunks that the limits let share one call. Whole results and streams group alike,
    so they stay sample for sample the same."""
    groups: list[list[ChunkRequest]] = []
    for request in requests:
        if len(groups) > 1 and limits.admits([r.frames for r in groups[-1]] + [request.frames]):
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


@dataclass(frozen=True)
class SampledChunk:
    wave: np.ndarray  # float32 mono at the engine's sample rate
    inference_s: float  # its share of the call's time (by frames)


@dataclass(eq=False)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn(*self.args))
        except BaseException as exc:  # handed to the caller, who raises it in its own thread
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Chunk:
    engine: Engine
    request: ChunkRequest
    limits: BatchLimits
    cancelled: threading.Event
    arrived: float  # time.monotonic()
    future: Future[SampledChunk] = field(default_factory=Future)

    def shares_call_with(self, other: _Chunk) -> bool:
        return (
            self.engine is other.engine
            and self.limits == other.limits
            and self.request.sampling == other.request.sampling
        )

    @property
    def gone(self) -> bool:
        """Its job was cancelled, or nobody waits for it any more."""
        return self.cancelled.is_set() or self.future.cancelled()


class InferenceThread:
    """The process's one inference thread (started on first use) and its queue of calls and chunks."""

    def __init__(self) -> None:
        self._queue: collections.deque[_Call | _Chunk] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """`fn(*args)` on the inference thread, after what is queued; the future has its result or exception."""
        task = _Call(fn, args)
        self._enqueue([task])
        return task.future

    def sample(
        self,
        engine: Engine,
        requests: Sequence[ChunkRequest],
        limits: BatchLimits,
        cancelled: threading.Event,
    ) -> list[Future[SampledChunk]]:
        """One future per request, each done when its chunk is sampled, possibly in a batch with other jobs'.
        Once `cancelled` is set, chunks not yet started are dropped (their futures cancelled)."""
        now = time.monotonic()
        chunks = [_Chunk(engine, request, limits, cancelled, now) for request in requests]
        self._enqueue(chunks)
        return [chunk.future for chunk in chunks]

    def _enqueue(self, tasks: Sequence[_Call | _Chunk]) -> None:
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
                self._thread.start()
            self._queue.extend(tasks)  # all at once: a speech's group is never split by the thread's timing
            self._ready.notify()

    def _run(self) -> None:
        while True:
            task = self._next_task()
            if isinstance(task, _Call):
                task.run()
            else:
                self._sample([chunk for chunk in task if chunk.future.set_running_or_notify_cancel()])

    def _next_task(self) -> _Call | list[_Chunk]:
        """The oldest call, or the oldest chunk with the chunks that join it; blocks until there is one."""
        with self._ready:
            while True:
                self._drop_gone()
                if not self._queue:
                    self._ready.wait()
                    continue
                head = self._queue[0]
                if isinstance(head, _Call):
                    self._queue.popleft()
                    return head
                batch = self._batch_for(head)
                waited = time.monotonic() - head.arrived
                if len(batch) < head.limits.max_batch and waited < head.limits.wait_s:
                    self._ready.wait(head.limits.wait_s - waited)  # company may come; then look again
                    continue
                for chunk in batch:
                    self._queue.remove(chunk)
                return batch

    def _drop_gone(self) -> None:
        for task in [t for t in self._queue if isinstance(t, _Chunk) and t.gone]:
            self._queue.remove(task)
            task.future.cancel()

    def _batch_for(self, head: _Chunk) -> list[_Chunk]:
        """`head` and the pending chunks nearest its length that the limits let join it, in arrival order."""
        mates = [t for t in self._queue if isinstance(t, _Chunk) and t is not head and t.shares_call_with(head)]
        mates.sort(key=lambda chunk: abs(chunk.request.frames - head.request.frames))  # stable: older first
        batch = [head]
        for mate in mates:
            if head.limits.admits([chunk.request.frames for chunk in [*batch, mate]]):
                batch.append(mate)
        order = {id(task): position for position, task in enumerate(self._queue)}
        return sorted(batch, key=lambda chunk: order[id(chunk)])

    def _sample(self, chunks: list[_Chunk]) -> None:
        """One Engine.sample call for `chunks` (less those whose job was cancelled meanwhile); on running out of
        memory, each half on its own."""
        chunks = self._still_wanted(chunks)
        if not chunks:
            return
        import torch

        engine = chunks[0].engine
        started = time.perf_counter()
        try:
            waves = engine.sample([chunk.request for chunk in chunks])
        except torch.OutOfMemoryError as exc:
            # The failed call's frames (their locals hold its GPU tensors) are cleared now, not when the future
            # that carries the error is dropped.
            traceback.clear_frames(exc.__traceback__)
            if len(chunks) == 1:
                chunks[0].future.set_exception(exc)
                return
        except BaseException as exc:
            for chunk in chunks:
                chunk.future.set_exception(exc)
            return
        else:
            elapsed = time.perf_counter() - started
            jobs = len({id(chunk.cancelled) for chunk in chunks})
            log.debug("sampled %d chunk(s) of %d job(s) in one call, %.3f s", len(chunks), jobs, elapsed)
            frames = sum(chunk.request.frames for chunk in chunks)
            for chunk, wave in zip(chunks, waves, strict=True):
                chunk.future.set_result(SampledChunk(wave, elapsed * chunk.request.frames / frames))
            return
        # Out of memory: retried here, after the `except` block, so that the error (and the traceback that
        # references the failed call) is gone and its memory is free before the halves run.
        log.warning("out of memory sampling %d chunks at once; retrying them in two halves", len(chunks))
        if str(engine.device).startswith("cuda"):
            torch.cuda.empty_cache()
        half = len(chunks) // 2
        self._sample(chunks[:half])
        self._sample(chunks[half:])  # checked again: a job may have been cancelled while the first half ran

    @staticmethod
    def _still_wanted(chunks: list[_Chunk]) -> list[_Chunk]:
        """`chunks` less those of cancelled jobs; theirs (already running, so not cancellable) get CancelledError,
        as a dropped chunk's future does."""
        wanted = []
        for chunk in chunks:
            if chunk.cancelled.is_set():
                chunk.future.set_exception(CancelledError())
            else:
                wanted.append(chunk)
        return wanted


# The process's one inference thread: every WorkerService of the process shares it (tests build many).
inference = InferenceThread()
