"""What both local stacks share (stack.py: a queue endpoint; load_balancer.py: a load-balancing endpoint): their
settings, local S3, the emulator's loopback server, the workers' run directory, and the order of start and stop.

A subclass says how its emulator starts (`_start_server`), how one worker starts (`_spawn`), when they are all
ready (`_wait_ready`) and how they stop (`_stop_workers`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Self

from devstack.model import ModelChoice, ModelMode, choose_model
from devstack.s3 import LocalS3
from devstack.serving import LoopbackServer
from devstack.workers import REAL_WORKER_CMD


class LocalStack:
    """Local S3 + an emulator + N worker processes. Use as a context manager, or `start()` / `stop()`."""

    run_dir_prefix = "devstack-"
    config: Any  # the emulator's settings; both kinds have `api_key` and `endpoint_id`

    def __init__(
        self,
        workers: int,
        *,
        server: LoopbackServer,
        s3: LocalS3,
        worker_cmd: list[str] | None,
        worker_env: dict[str, str] | None,
        model: ModelMode | ModelChoice | None,
        ready_timeout_s: float,
        stop_grace_s: float,
        echo_logs: IO[str] | None,
    ) -> None:
        self.worker_count = workers
        self.worker_cmd = list(worker_cmd or REAL_WORKER_CMD)
        self.extra_worker_env = dict(worker_env or {})
        self.model_mode = model
        self.model: ModelChoice | None = model if isinstance(model, ModelChoice) else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.echo_logs = echo_logs
        self.s3 = s3
        self._server = server
        self._run_dir: Path | None = None  # the workers' HOMEs, working directories and logs; removed by stop()
        self._stopped = False

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def endpoint_url(self) -> str:
        """What a client is configured with: the queue endpoint's URL, or the load balancer's base URL."""
        raise NotImplementedError

    @property
    def workers(self) -> dict[str, int]:
        """Worker id → pid of the workers running now."""
        raise NotImplementedError

    @property
    def bucket(self) -> str:
        return self.s3.bucket

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint_url

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        atexit.register(self.stop)
        self._run_dir = Path(tempfile.mkdtemp(prefix=self.run_dir_prefix))
        try:
            if self.model is None and isinstance(self.model_mode, str):
                self.model = choose_model(self.model_mode)
            self.s3.start()
            self._start_server()
            for slot in range(1, self.worker_count + 1):
                self._spawn(slot)
            self._wait_ready()
            self._started()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> None:
        raise NotImplementedError

    def _spawn(self, slot: int) -> object:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _started(self) -> None:
        """Called once every worker is ready."""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._stop_workers()
        self._server.stop()
        self.s3.stop()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def _stop_workers(self) -> None:
        raise NotImplementedError
