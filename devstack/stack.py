"""The whole local stack, started and stopped together: local S3, queue emulator, worker processes.

The emulator (uvicorn) runs on its own event loop in a background thread of this process, next to moto's S3
server; workers are child processes. Every wait is bounded, and `stop()` leaves no process behind: workers get
SIGTERM (runpod's graceful shutdown) and then their whole process group gets SIGKILL.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from devstack.emulator import EmulatorConfig, FaultInjector, create_app, worker_urls
from devstack.jobs import JobQueue, QueueOptions
from devstack.local_stack import LocalStack
from devstack.model import ModelChoice, ModelMode
from devstack.s3 import LocalS3
from devstack.serving import LoopbackServer
from devstack.workers import WorkerProcess, runpod_env, stack_worker_env

log = logging.getLogger("devstack")
T = TypeVar("T")


class StackError(RuntimeError):
    pass


class QueueStack(LocalStack):
    """A running local endpoint. Use as a context manager, or `start()` / `stop()`.

    `model`: "auto" (real weights if configured or cached, else the tiny noise model), "real", "tiny", a
    `ModelChoice` already made, or None for worker commands that load no model (the emulator tests' echo worker).
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        port: int = 0,
        worker_cmd: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
        model: ModelMode | ModelChoice | None = "auto",
        endpoint_id: str = "local",
        api_key: str | None = None,
        bucket: str | None = None,
        respawn: bool = True,
        max_respawns: int = 5,
        ready_timeout_s: float = 240.0,
        stop_grace_s: float = 5.0,
        echo_logs: IO[str] | None = None,
        queue_options: QueueOptions | None = None,
        config: EmulatorConfig | None = None,
    ) -> None:
        super().__init__(
            workers,
            server=LoopbackServer(port, what="queue emulator", thread_name="devstack-emulator", error=StackError),
            s3=LocalS3(bucket=bucket) if bucket else LocalS3(),
            worker_cmd=worker_cmd,
            worker_env=worker_env,
            model=model,
            ready_timeout_s=ready_timeout_s,
            stop_grace_s=stop_grace_s,
            echo_logs=echo_logs,
        )
        self.respawn = respawn
        self.respawns_left = max_respawns  # a worker that dies at every start must not be restarted forever
        self.config = config or EmulatorConfig(endpoint_id=endpoint_id)
        if api_key is not None:
            self.config.api_key = api_key
        self.queue = JobQueue(queue_options)
        self.faults = FaultInjector()
        self._workers: dict[int, WorkerProcess] = {}  # slot → its current process
        self._generations: dict[int, int] = {}
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------------------------------- what callers use
    @property
    def endpoint_url(self) -> str:
        return f"{self.base_url}/v2/{self.config.endpoint_id}"

    @property
    def s3_credentials(self) -> dict[str, str]:
        return self.s3.credentials

    def s3_client(self) -> Any:
        return self.s3.client()

    @property
    def workers(self) -> dict[str, int]:
        """Worker id (the `workerId` of a job) → pid of its process, for the workers running now."""
        return {w.worker_id: w.pid for w in self._workers.values() if w.exit_code() is None}

    @property
    def worker_pids(self) -> list[int]:
        return list(self.workers.values())

    def inject_fault(self, path_suffix: str, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `count` public-API requests matching `path_suffix` with `status`, unprocessed."""
        self.call(self.faults.add, path_suffix, status, count, retry_after)

    def health(self) -> dict[str, Any]:
        return self.call(self.queue.health)

    def counters(self) -> dict[str, int]:
        """Emulator-side counts: results accepted per outcome ("COMPLETED", "FAILED"), results dropped because
        the job was no longer the sender's ("dropped"), jobs requeued ("retried")."""
        return self.call(lambda: dict(self.queue.counters))

    def log_tails(self, lines: int = 30) -> str:
        """The last lines each worker wrote, for error messages."""
        return "\n".join(f"--- {w.worker_id}\n{w.log_tail(lines)}" for w in self._workers.values())

    def worker_logs(self) -> str:
        """Everything the current workers have written so far (their worker.log files), for tests that check
        what a worker did."""
        return "\n".join(w.log_path.read_text(errors="replace") for w in self._workers.values() if w.log_path.exists())

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run `fn(*args)` on the emulator's event loop (its state is not thread-safe) and return the result."""
        return self._server.call(fn, *args, timeout=timeout)

    # ------------------------------------------------------------------------------------------- start
    def _start_server(self) -> None:
        app = create_app(self.queue, self.config, self.faults)
        self._server.start(lambda: app, lifespan="on")
        log.info("queue emulator at %s", self.endpoint_url)

    def _worker_env(self, worker_id: str, workdir: Path) -> dict[str, str]:
        env = stack_worker_env(workdir, self.worker_count, self.s3, self.model)
        env.update(
            runpod_env(
                worker_urls(self.base_url, self.config.endpoint_id),
                worker_id,
                self.config.worker_key,
                self.config.endpoint_id,
            )
        )
        env.update(self.extra_worker_env)
        return env

    def _spawn(self, slot: int) -> WorkerProcess:
        generation = self._generations.get(slot, 0)
        self._generations[slot] = generation + 1
        worker_id = f"local-worker-{slot}" + (f"-r{generation}" if generation else "")
        assert self._run_dir is not None
        workdir = self._run_dir / worker_id
        worker = WorkerProcess(
            worker_id, self.worker_cmd, self._worker_env(worker_id, workdir), workdir, echo=self.echo_logs
        )
        self.call(self.queue.expect_worker, worker_id)
        worker.start()
        self._workers[slot] = worker
        return worker

    def _wait_ready(self) -> None:
        """Until every worker takes jobs (the real worker loads its model first), or a worker dies, or timeout."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            for worker in self._workers.values():
                code = worker.exit_code()
                if code is not None:
                    raise StackError(
                        f"worker {worker.worker_id} exited with {code} while starting:\n{worker.log_tail()}"
                    )
            ready = self.call(self.queue.ready_workers)
            if all(w.worker_id in ready for w in self._workers.values()):
                return
            if time.monotonic() > deadline:
                raise StackError(f"workers not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tails()}")
            time.sleep(0.1)

    def _started(self) -> None:
        self._monitor = threading.Thread(target=self._watch_workers, name="devstack-monitor", daemon=True)
        self._monitor.start()

    def _watch_workers(self) -> None:
        """A worker process that ends: its jobs are taken back at once, its group is cleaned, a new one starts."""
        while not self._stopping.wait(0.2):
            for slot, worker in list(self._workers.items()):
                code = worker.exit_code()
                if code is None or self._stopping.is_set():
                    continue
                log.warning("worker %s (pid %d) exited with %s", worker.worker_id, worker.pid, code)
                worker.signal_group(signal.SIGKILL)  # its heartbeat process would linger
                try:
                    self.call(self.queue.worker_gone, worker.worker_id, f"worker {worker.worker_id} exited ({code})")
                    if self.respawn and self.respawns_left > 0:
                        self.respawns_left -= 1
                        self._spawn(slot)
                    else:
                        log.error("worker slot %d stays empty (respawn is off or exhausted)", slot)
                        del self._workers[slot]
                except Exception:
                    if not self._stopping.is_set():
                        log.exception("could not replace worker %s", worker.worker_id)

    # ------------------------------------------------------------------------------------------- stop
    def _stop_workers(self) -> None:
        self._stopping.set()
        try:
            if self._server.loop is not None:
                self.call(self.queue.drain)
        except Exception:
            log.exception("could not drain the queue")
        if self._monitor is not None:
            self._monitor.join(timeout=30)  # first: it must not start a replacement behind our back
        workers = list(self._workers.values())
        for worker in workers:
            if worker.exit_code() is None:
                worker.signal_group(signal.SIGTERM)
        for worker in workers:
            worker.stop(self.stop_grace_s)
        try:
            if self._server.loop is not None:
                self.call(self.queue.close)
        except Exception:
            log.exception("could not close the queue")


def print_ready(stack: LocalStack, out: IO[str] = sys.stdout) -> None:
    print(f"ready {stack.endpoint_url} {stack.api_key}", file=out, flush=True)
