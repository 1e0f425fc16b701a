"""Worker processes: the real `python -m worker.handler` (or any runpod worker command) pointed at the emulator.

Each worker runs in its own session (process group), with its own HOME and working directory, as a container
would: runpod's heartbeat is a separate child process that outlives a killed worker, so stopping a worker means
signalling its whole group, which is what leaves no process behind.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from devstack.paths import REPO_ROOT
from worker.model_facts import hf_home

if TYPE_CHECKING:
    from devstack.model import ModelChoice
    from devstack.s3 import LocalS3

log = logging.getLogger("devstack.workers")

REAL_WORKER_CMD = [sys.executable, "-m", "worker.handler"]

# Variables of the developer's shell that would point a worker at a real deployment or a real bucket.
_INHERITED_PREFIXES_DROPPED = ("RUNPOD_", "BUCKET_")


# Run before the worker command, in the child: SIGTERM (runpod's graceful shutdown, which also ends its heartbeat
# process) when the launcher dies without stopping us, e.g. killed by a test runner's timeout. A prctl setting
# survives exec; a wrapper instead of Popen's preexec_fn, which is unsafe in a process with threads.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def runpod_env(urls: dict[str, str], worker_id: str, worker_key: str, endpoint_id: str) -> dict[str, str]:
    """The variables RunPod sets in a serverless worker's container (see runpod/serverless/modules)."""
    return {
        **urls,
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_POD_HOSTNAME": f"{worker_id}.devstack.local",
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        "RUNPOD_AI_API_KEY": worker_key,
        "RUNPOD_PING_INTERVAL": "1000",  # ms; pings also re-send stops that came too early (see JobQueue.ping)
        # No GPU and no container here: runpod's start-up fitness checks would refuse the machine.
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
    }


def base_env(workdir: Path, threads: int) -> dict[str, str]:
    """The developer's environment minus deployment variables, with a private HOME and the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES_DROPPED)}
    # The Hugging Face cache stays the developer's (real weights, when cached, are found there); a worker
    # never downloads: fetching weights is `python -m worker.prefetch`'s job, not a job's.
    env["HF_HOME"] = str(hf_home())  # not under the worker's private HOME
    env["HF_HUB_OFFLINE"] = "1"
    env["HOME"] = str(workdir / "home")
    env["XDG_CACHE_HOME"] = str(workdir / "home" / ".cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["F5TTS_DATA_DIR"] = str(workdir / "data")
    env["F5TTS_ALLOW_PRIVATE_URLS"] = "true"  # reference audio may come from the local S3 on 127.0.0.1
    return env


def stack_worker_env(workdir: Path, worker_count: int, s3: LocalS3, model: ModelChoice | None) -> dict[str, str]:
    """`base_env` with this worker's share of the CPU threads, the local S3 and the model (None: a worker command
    that loads none): what every worker of a local stack gets, before its endpoint type's own variables."""
    threads = max(1, (os.cpu_count() or 1) // max(1, worker_count))
    env = base_env(workdir, threads)
    env.update(s3.worker_env())
    if model is not None:
        env.update(model.env)
    return env


class WorkerProcess:
    """One worker process, its output in `workdir/worker.log` (and echoed with a prefix if asked)."""

    def __init__(
        self, worker_id: str, cmd: list[str], env: dict[str, str], workdir: Path, *, echo: IO[str] | None = None
    ):
        self.worker_id = worker_id
        self.cmd = cmd
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / "worker.log"
        self._echo = echo
        self._tail: collections.deque[str] = collections.deque(maxlen=60)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", _DIE_WITH_PARENT, *self.cmd] if sys.platform.startswith("linux") else self.cmd
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, name=f"log-{self.worker_id}", daemon=True)
        self._reader.start()
        log.info("started %s (pid %d)", self.worker_id, self._proc.pid)

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.log_path, "ab") as logfile:
            for raw in self._proc.stdout:
                logfile.write(raw)
                logfile.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                self._tail.append(line)
                if self._echo is not None:
                    print(f"[{self.worker_id}] {line}", file=self._echo, flush=True)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._tail)[-lines:])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # the session leader's pid is the group id

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM (runpod's graceful shutdown), then SIGKILL the whole group once the grace time is over."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.worker_id, grace_s)
        # Whatever is left of the group (the heartbeat process, a stuck main process) goes now.
        self.signal_group(signal.SIGKILL)
        self._proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def wait_gone(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.05)
