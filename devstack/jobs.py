"""The job queue behind the emulator: job life cycle, long polls, timeouts, retention and lost workers.

All state lives on the emulator's one asyncio event loop and nothing here is thread-safe, by design: other
threads reach it through the loop (see `devstack.stack.QueueStack.call`). Times are `time.monotonic()` seconds.

Life cycle, as on RunPod: IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED, plus CANCELLED (`/cancel`, `/purge-queue`)
and TIMED_OUT (`policy.executionTimeout`). A terminal job is kept for its retention time (30 min for `/run`, 1 min
for `/runsync`), then forgotten (404). A job whose worker disappears is put back at the head of the queue until
it has been tried `max_attempts` times, then FAILED — it never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

log = logging.getLogger("devstack.jobs")


class EmulatedJobStatus(StrEnum):
    """A job's status as the emulated RunPod queue reports it (the client SDK has its own view of these)."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL = frozenset(
    {EmulatedJobStatus.COMPLETED, EmulatedJobStatus.FAILED, EmulatedJobStatus.CANCELLED, EmulatedJobStatus.TIMED_OUT}
)


@dataclass
class QueueOptions:
    """Timings of the emulated endpoint. Defaults are RunPod's where RunPod has one."""

    run_retention_s: float = 30 * 60  # results of /run jobs
    sync_retention_s: float = 60  # results of /runsync jobs
    execution_timeout_s: float = 600  # default policy.executionTimeout
    ttl_s: float = 24 * 3600  # default policy.ttl: a job's whole life, queue time included
    take_hold_s: float = 5.0  # how long an empty job take is held open (long poll)
    stop_hold_s: float = 2.0  # how long an empty job-stop poll is held open
    stream_hold_s: float = 2.0  # how long /stream waits for a first new chunk
    # Silence after which a worker's jobs are taken back. RunPod's SDK pings every RUNPOD_PING_INTERVAL (10 s,
    # each ping with a 20 s timeout) and its main loop polls job-take/job-stop every few seconds: two missed
    # intervals mark a frozen or cut-off worker as lost. A worker whose process ends is taken back at once
    # (the launcher sees it exit), as RunPod does when a pod's container exits.
    worker_lost_after_s: float = 20.0
    max_attempts: int = 2  # tries of a job whose worker was lost, before it FAILS
    sweep_interval_s: float = 0.1  # how often timeouts and expiries are checked

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


class Signal:
    """Wakes every waiter on a change: an Event that is replaced once set, so each change is seen once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


@dataclass(eq=False)
class Job:
    id: str
    input: Any
    sync: bool
    execution_timeout_s: float
    ttl_s: float
    created: float
    status: EmulatedJobStatus = EmulatedJobStatus.IN_QUEUE
    started: float | None = None
    finished: float | None = None
    expires: float | None = None  # when a terminal job is forgotten
    worker_id: str | None = None
    output: Any = None
    error: str | None = None
    stream: list[Any] = field(default_factory=list)  # items the worker posted to job-stream
    stream_read: int = 0  # how many of them /stream has handed out
    attempts: int = 0
    changed: Signal = field(default_factory=Signal)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def view(self) -> dict[str, Any]:
        """The job as RunPod's /status and /runsync show it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
            if self.finished is not None:
                body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.status is EmulatedJobStatus.COMPLETED:
            body["output"] = self.output
        if self.status is EmulatedJobStatus.FAILED:
            body["error"] = self.error
        return body


@dataclass(eq=False)
class WorkerRecord:
    id: str
    last_seen: float
    jobs: set[str] = field(default_factory=set)
    stop_ids: list[str] = field(default_factory=list)  # jobs it must stop, not yet fetched by job-stop
    stop_signal: Signal = field(default_factory=Signal)
    lost: bool = False  # silent for too long; its jobs were taken back (it may come back)
    gone: bool = False  # its process is known to be dead (told by the launcher); never comes back


class JobQueue:
    def __init__(self, options: QueueOptions | None = None) -> None:
        self.options = options or QueueOptions()
        self.jobs: dict[str, Job] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.expected_workers: set[str] = set()  # launched, not yet heard from: "initializing"
        self.counters: Counter[str] = Counter()
        self._queue: deque[str] = deque()
        self._queued = Signal()
        self._draining = False
        self._closed = False

    # ------------------------------------------------------------------------------------------- public side
    def submit(self, job_input: Any, *, sync: bool, policy: dict[str, Any] | None = None) -> Job:
        policy = policy or {}
        now = time.monotonic()
        job = Job(
            id=("sync-" if sync else "") + str(uuid.uuid4()),
            input=job_input,
            sync=sync,
            # RunPod's policy values are milliseconds.
            execution_timeout_s=policy["executionTimeout"] / 1000
            if "executionTimeout" in policy
            else self.options.execution_timeout_s,
            ttl_s=policy["ttl"] / 1000 if "ttl" in policy else self.options.ttl_s,
            created=now,
        )
        self.jobs[job.id] = job
        self._enqueue(job)
        return job

    def get(self, job_id: str) -> Job | None:
        self.sweep()  # so an expired job is never shown, whatever the sweeper's timing
        return self.jobs.get(job_id)

    async def wait_terminal(self, job: Job, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not job.terminal and job.id in self.jobs and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await job.changed.wait(remaining)

    async def read_stream(self, job: Job, hold: float) -> list[Any]:
        """Stream items not handed out yet; waits up to `hold` for a first one while the job runs."""
        deadline = time.monotonic() + hold
        while job.stream_read >= len(job.stream) and not job.terminal and job.id in self.jobs and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await job.changed.wait(remaining)
        items = job.stream[job.stream_read :]
        job.stream_read = len(job.stream)
        return items

    def cancel(self, job: Job) -> None:
        if not job.terminal:
            self._finish(job, EmulatedJobStatus.CANCELLED)

    def retry(self, job: Job) -> bool:
        """Requeue a FAILED or TIMED_OUT job under the same id (RunPod's /retry)."""
        if job.status not in (EmulatedJobStatus.FAILED, EmulatedJobStatus.TIMED_OUT):
            return False
        self._reset(job)
        self.counters["retried"] += 1
        self._enqueue(job)
        return True

    def purge(self) -> int:
        queued = [
            self.jobs[i] for i in self._queue if i in self.jobs and self.jobs[i].status is EmulatedJobStatus.IN_QUEUE
        ]
        for job in queued:
            self._finish(job, EmulatedJobStatus.CANCELLED)
        self._queue.clear()
        return len(queued)

    def health(self) -> dict[str, Any]:
        self.sweep()
        by_status = Counter(job.status for job in self.jobs.values())
        live = [w for w in self.workers.values() if not (w.gone or w.lost)]
        return {
            "jobs": {
                "completed": by_status[EmulatedJobStatus.COMPLETED],
                "failed": by_status[EmulatedJobStatus.FAILED] + by_status[EmulatedJobStatus.TIMED_OUT],
                "inProgress": by_status[EmulatedJobStatus.IN_PROGRESS],
                "inQueue": by_status[EmulatedJobStatus.IN_QUEUE],
                "retried": self.counters["retried"],
            },
            "workers": {
                "idle": sum(1 for w in live if not w.jobs),
                "initializing": len(self.expected_workers - self.workers.keys()),
                "ready": len(live),
                "running": sum(1 for w in live if w.jobs),
                "throttled": 0,
                "unhealthy": sum(1 for w in self.workers.values() if w.lost and not w.gone),
            },
        }

    # ------------------------------------------------------------------------------------------- worker side
    def seen(self, worker_id: str) -> WorkerRecord:
        """Record a sign of life from a worker's main loop (pings do not count: see `ping`)."""
        now = time.monotonic()
        worker = self.workers.get(worker_id)
        if worker is None:
            worker = self.workers[worker_id] = WorkerRecord(id=worker_id, last_seen=now)
            log.info("worker %s connected", worker_id)
        worker.last_seen = now
        if worker.lost and not worker.gone:
            log.warning("worker %s is back after being lost", worker_id)
            worker.lost = False
        return worker

    async def take(self, worker_id: str, max_jobs: int, hold: float) -> list[Job]:
        """Job take: up to `max_jobs` queued jobs, waiting up to `hold` for one to arrive."""
        deadline = time.monotonic() + hold
        while True:
            worker = self.seen(worker_id)
            if worker.gone or self._draining:
                return []
            taken: list[Job] = []
            while self._queue and len(taken) < max_jobs:
                job = self.jobs.get(self._queue.popleft())
                if job is not None and job.status is EmulatedJobStatus.IN_QUEUE:
                    self._start(job, worker)
                    taken.append(job)
            if taken:
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self._queued.wait(remaining)

    async def stop_signals(self, worker_id: str, hold: float) -> list[str]:
        """Job stop: ids of this worker's jobs that were cancelled or timed out, waiting up to `hold`."""
        deadline = time.monotonic() + hold
        while True:
            worker = self.seen(worker_id)
            if worker.stop_ids:
                ids, worker.stop_ids = worker.stop_ids, []
                return ids
            remaining = deadline - time.monotonic()
            if worker.gone or self._draining or remaining <= 0:
                return []
            await worker.stop_signal.wait(remaining)

    def add_stream(self, worker_id: str, job_id: str, body: Any) -> bool:
        job = self._own_running_job(worker_id, job_id)
        if job is None or not isinstance(body, dict):
            return False
        job.stream.append(body.get("output"))
        job.changed.notify()
        return True

    def complete(self, worker_id: str, job_id: str, body: Any) -> bool:
        """Job done: `{"output": ...}` or `{"error": "..."}` as the runpod SDK sends it."""
        job = self._own_running_job(worker_id, job_id)
        if job is None:
            self.counters["dropped"] += 1
            return False
        if not isinstance(body, dict):
            body = {"error": f"worker sent a malformed result: {type(body).__name__}"}
        if body.get("error"):
            job.error = body["error"] if isinstance(body["error"], str) else str(body["error"])
            self._finish(job, EmulatedJobStatus.FAILED)
        else:
            job.output = body.get("output")
            self._finish(job, EmulatedJobStatus.COMPLETED)
        self.counters[job.status.value] += 1  # results accepted, per outcome: each job's should arrive once
        return True

    def ping(self, worker_id: str, job_ids: str | None) -> None:
        """Heartbeat with the jobs the worker holds (runpod's `job_id`: comma-separated).

        Pings come from runpod's separate heartbeat process, which can outlive a killed worker: they do not keep a
        worker alive. They reconcile, though: a job the worker still holds that is no longer its running job
        (cancelled, timed out, taken back) is signalled to stop again. This covers a stop that arrived while the
        job was still in the worker's local queue, which runpod's stop_job ignores.
        """
        worker = self.workers.get(worker_id)
        if worker is None or worker.gone:
            return
        for job_id in filter(None, (job_ids or "").split(",")):
            job = self.jobs.get(job_id)
            if job is not None and job.status is EmulatedJobStatus.IN_PROGRESS and job.worker_id == worker_id:
                continue
            if job_id not in worker.stop_ids:
                worker.stop_ids.append(job_id)
                worker.stop_signal.notify()

    def expect_worker(self, worker_id: str) -> None:
        self.expected_workers.add(worker_id)

    def worker_gone(self, worker_id: str, reason: str) -> None:
        """The launcher saw the worker's process end: take its jobs back now, not after a silence."""
        self.expected_workers.discard(worker_id)
        worker = self.workers.get(worker_id) or self.seen(worker_id)
        worker.gone = True
        self._take_back(worker, reason)

    def ready_workers(self) -> set[str]:
        return {w.id for w in self.workers.values() if not (w.gone or w.lost)}

    def drain(self) -> None:
        """Stopping: answer every long poll now and hand out no more jobs, so workers can exit quickly."""
        self._draining = True
        self._queued.notify()
        for worker in self.workers.values():
            worker.stop_signal.notify()

    def close(self) -> None:
        """Shutting down: every waiting client request (runsync, stream) answers now with what there is."""
        self.drain()
        self._closed = True
        for job in self.jobs.values():
            job.changed.notify()

    # ------------------------------------------------------------------------------------------- sweeping
    def sweep(self) -> None:
        """Apply execution timeouts, TTLs, retention and worker silence. Called often; cheap."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.terminal:
                if job.expires is not None and now >= job.expires:
                    self._forget(job)
            elif now >= job.created + job.ttl_s:
                log.info("job %s expired (ttl) while %s", job.id, job.status.value)
                self._stop_on_worker(job)
                self._forget(job)
            elif (
                job.status is EmulatedJobStatus.IN_PROGRESS
                and job.started is not None
                and now >= job.started + job.execution_timeout_s
            ):
                self._finish(job, EmulatedJobStatus.TIMED_OUT)
        for worker in self.workers.values():
            if not (worker.gone or worker.lost) and now - worker.last_seen > self.options.worker_lost_after_s:
                worker.lost = True
                self._take_back(worker, f"worker {worker.id} stopped responding")

    async def run_sweeper(self) -> None:
        while True:
            self.sweep()
            await asyncio.sleep(self.options.sweep_interval_s)

    # ------------------------------------------------------------------------------------------- internals
    def _enqueue(self, job: Job, *, front: bool = False) -> None:
        (self._queue.appendleft if front else self._queue.append)(job.id)
        self._queued.notify()
        job.changed.notify()

    def _start(self, job: Job, worker: WorkerRecord) -> None:
        job.status = EmulatedJobStatus.IN_PROGRESS
        job.started = time.monotonic()
        job.worker_id = worker.id
        job.attempts += 1
        worker.jobs.add(job.id)
        if job.id in worker.stop_ids:  # a stale stop of an earlier attempt must not stop this one
            worker.stop_ids.remove(job.id)
        job.changed.notify()

    def _finish(self, job: Job, status: EmulatedJobStatus) -> None:
        if job.status is EmulatedJobStatus.IN_PROGRESS and status in (
            EmulatedJobStatus.CANCELLED,
            EmulatedJobStatus.TIMED_OUT,
        ):
            self._stop_on_worker(job)
        if job.worker_id in self.workers:
            self.workers[job.worker_id].jobs.discard(job.id)
        job.status = status
        job.finished = time.monotonic()
        job.expires = job.finished + (self.options.sync_retention_s if job.sync else self.options.run_retention_s)
        log.info("job %s %s", job.id, status.value)
        job.changed.notify()

    def _reset(self, job: Job) -> None:
        job.status = EmulatedJobStatus.IN_QUEUE
        job.started = job.finished = job.expires = None
        job.worker_id = job.output = job.error = None
        job.stream.clear()
        job.stream_read = 0

    def _take_back(self, worker: WorkerRecord, reason: str) -> None:
        for job_id in sorted(worker.jobs):
            job = self.jobs.get(job_id)
            if job is None or job.status is not EmulatedJobStatus.IN_PROGRESS:
                continue
            # Should the worker come back after all, it must stop what is no longer its job.
            worker.stop_ids.append(job.id)
            if job.attempts < self.options.max_attempts:
                log.warning("job %s: %s; requeued (attempt %d done)", job.id, reason, job.attempts)
                self._reset(job)
                self.counters["retried"] += 1
                self._enqueue(job, front=True)
            else:
                log.warning("job %s: %s; failed after %d attempts", job.id, reason, job.attempts)
                job.error = f"{reason} while running the job (tried {job.attempts} times)"
                self._finish(job, EmulatedJobStatus.FAILED)
        worker.jobs.clear()
        worker.stop_signal.notify()

    def _stop_on_worker(self, job: Job) -> None:
        worker = self.workers.get(job.worker_id) if job.worker_id else None
        if worker is not None and job.status is EmulatedJobStatus.IN_PROGRESS:
            worker.stop_ids.append(job.id)
            worker.jobs.discard(job.id)
            worker.stop_signal.notify()

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.worker_id in self.workers:
            self.workers[job.worker_id].jobs.discard(job.id)
        job.changed.notify()

    def _own_running_job(self, worker_id: str, job_id: str) -> Job | None:
        """The job, if it is running on this worker; a late result for a job taken back is dropped."""
        self.seen(worker_id)
        job = self.jobs.get(job_id)
        if job is None or job.status is not EmulatedJobStatus.IN_PROGRESS or job.worker_id != worker_id:
            log.info("dropped a result for job %s from worker %s: not its running job", job_id, worker_id)
            return None
        return job
