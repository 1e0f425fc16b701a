"""Small helpers of the devstack tests: an API client for a stack, bounded waits, `python -m devstack up` as a
child process."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from devstack.stack import QueueStack
from tests.support import REPO_ROOT

ECHO_WORKER = [sys.executable, str(Path(__file__).with_name("echo_worker.py"))]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
T = TypeVar("T")


def api(stack: QueueStack, timeout: float = 60.0, key: str | None = None) -> httpx.Client:
    """An HTTP client of the stack's public API, authorized (or with `key`; "" for no Authorization header)."""
    key = stack.api_key if key is None else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.endpoint_url + "/", headers=headers, timeout=timeout)


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_status(client: httpx.Client, job_id: str, wanted: set[str] | str, timeout: float = 30.0) -> dict[str, Any]:
    wanted = {wanted} if isinstance(wanted, str) else wanted
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = client.get(f"status/{job_id}").json()
        return last if last.get("status") in wanted else None

    try:
        return wait_until(check, timeout, f"job {job_id} to be {'/'.join(sorted(wanted))}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status {last}") from None


def group_gone(pgid: int) -> bool:
    """True when no process of the process group `pgid` is left (a worker and its heartbeat child)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def devstack_up(args: list[str], log_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m devstack up ARGS` as a developer runs it: yields the process and its first stdout line (read
    with a bounded wait), its stderr going to `log_path`; killed at the end if it is still running."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    lines: queue.Queue[str] = queue.Queue()  # read by a thread, so that the wait for the first line is bounded

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    try:
        threading.Thread(target=read_lines, daemon=True).start()
        yield proc, lines.get(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_stack_gone(worker_pids: list[int], url: str) -> None:
    """After a stop: no process of any worker's group is left, and nothing answers at `url`."""
    wait_until(lambda: all(group_gone(pid) for pid in worker_pids), 5, "every worker process to be gone")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
