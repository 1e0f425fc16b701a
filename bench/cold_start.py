"""Cold start: process start until the worker asks for its first job, vs a bare script loading the same weights.

    python -m bench.cold_start [--rounds 5]

- worker: the real `python -m worker.handler` (tiny model, a local S3 bucket, RunPod's worker variables), timed
  from just before the process is spawned until runpod's worker loop sends its first job-take request to a stub
  of RunPod's job API here. By then the engine is loaded and the warm-up synthesis is done: that request is the
  moment the worker would accept a job.
- bare: `python -c` importing torch and reading the same checkpoint (safetensors) and vocoder state dict
  (torch.load), timed until it prints that it is done. No model object is built: the floor any worker pays.

Then the import-time breakdown of the worker's start-up imports (`python -X importtime`), grouped by top-level
package, and the load and warm-up times the worker logged.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.server
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import (
    TIMING_HEADERS,
    headline,
    interleaved,
    machine_line,
    median,
    paired_ratio,
    print_table,
    quiet_aws_env,
    timing_row,
)
from devstack.emulator import worker_urls
from devstack.model import tiny_model_env
from devstack.paths import REPO_ROOT
from devstack.s3 import LocalS3
from devstack.workers import runpod_env

READY_TIMEOUT_S = 180.0

BARE_SCRIPT = """
import sys
import torch
from safetensors.torch import load_file
model = load_file(sys.argv[1])
vocoder = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
print("ready", flush=True)
"""

# What the worker imports before it can take a job, in main()'s order (runpod, the handler, f5-tts's inference).
WORKER_IMPORTS = (
    "import worker.handler; from worker.lean_imports import import_f5_infer, import_runpod; "
    "import_runpod(); import_f5_infer()"
)


class JobApiStub:
    """Answers RunPod's worker API with "no job" (204) and notes when the first job-take request arrives."""

    def __init__(self) -> None:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if "/job-take" in self.path and stub.first_take is None:
                    stub.first_take = time.perf_counter()
                    stub.taken.set()
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.first_take: float | None = None
        self.taken = threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.first_take = None
        self.taken.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "F5TTS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    return env


class ColdStart:
    def __init__(self, workdir: Path, s3: LocalS3, api: JobApiStub) -> None:
        self.workdir = workdir
        self.api = api
        self.model_env = tiny_model_env()
        self.worker_env = {
            **base_env(),
            **self.model_env,
            **s3.worker_env(),
            **runpod_env(worker_urls(api.base_url, "bench"), "bench-worker", "bench-key", "bench"),
            "F5TTS_DATA_DIR": str(workdir / "data"),
        }
        self.log_path = workdir / "worker.log"

    def worker(self) -> float:
        self.api.reset()
        with open(self.log_path, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.handler"],
                cwd=REPO_ROOT,
                env=self.worker_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: runpod's heartbeat process goes down with it
            )
            try:
                deadline = time.monotonic() + READY_TIMEOUT_S
                while not self.api.taken.wait(0.05):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            f"the worker never asked for a job; its log:\n{self.log_path.read_text()[-3000:]}"
                        )
                assert self.api.first_take is not None
                return self.api.first_take - started
            finally:
                _stop_group(proc)

    def bare(self) -> float:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BARE_SCRIPT,
                self.model_env["F5TTS_CKPT_FILE"],
                str(Path(self.model_env["F5TTS_VOCODER_DIR"]) / "pytorch_model.bin"),
            ],
            env=base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None  # a pipe
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - started
        proc.communicate(timeout=60)
        if line.strip() != b"ready":
            raise SystemExit(f"the bare script failed (exit {proc.returncode})")
        return elapsed

    def interpreter(self) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=base_env(), check=True)
        return time.perf_counter() - started

    def logged_phases(self) -> list[list[object]]:
        """The engine load and warm-up times from the last worker's log."""
        text = self.log_path.read_text(errors="replace")
        rows = []
        for name, pattern in (
            ("engine load (worker log)", r"loaded .* in ([0-9.]+) s"),
            ("warm-up synthesis (worker log)", r"warm-up synthesis took ([0-9.]+) s"),
        ):
            if match := re.search(pattern, text):
                rows.append([name, float(match.group(1))])
        return rows


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (runpod's heartbeat process too): it holds nothing worth keeping."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def import_breakdown(top: int = 12) -> tuple[list[list[object]], float]:
    """Self import time per top-level package for the worker's start-up imports (ms), and their total (s)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", WORKER_IMPORTS],
        cwd=REPO_ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    per_package: collections.Counter[str] = collections.Counter()
    for line in result.stderr.splitlines():
        if match := re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line):
            per_package[match.group(2).split(".")[0]] += int(match.group(1))
    total = sum(per_package.values())
    rows = [[name, us / 1000, 100 * us / total] for name, us in per_package.most_common(top)]
    rows.append(["(all others)", (total - sum(us for _, us in per_package.most_common(top))) / 1000, None])
    return [[n, ms, "" if share is None else f"{share:.0f}%"] for n, ms, share in rows], total / 1e6


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved starts of each (default 5)")
    args = parser.parse_args(argv)

    quiet_aws_env()
    print("== cold start: `python -m worker.handler` until its first job request vs bare torch + weights ==")
    print(machine_line())
    s3 = LocalS3()
    s3.start()
    api = JobApiStub()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as workdir:
            bench = ColdStart(Path(workdir), s3, api)
            bench.worker()  # once each first: the page cache and .pyc files are then warm for both
            bench.bare()
            times = interleaved(
                {"worker": bench.worker, "bare": bench.bare, "interpreter": bench.interpreter}, args.rounds
            )
            phases = bench.logged_phases()
        import_rows, import_total = import_breakdown()
    finally:
        api.stop()
        s3.stop()

    ratio = median(times["worker"]) / median(times["bare"])
    print_table(
        TIMING_HEADERS,
        [
            timing_row("worker: start -> first job request", times["worker"]),
            timing_row("bare: torch + weights loaded", times["bare"]),
            timing_row("python -c pass (for scale)", times["interpreter"]),
        ],
        title="cold start, interleaved (tiny model, warm page cache)",
    )
    print_table(["phase", "s"], phases, title="inside the worker")
    print_table(
        ["package", "self ms", "share"],
        import_rows,
        title=f"worker start-up imports by top-level package (python -X importtime; {import_total:.2f} s in all)",
    )
    print(
        f"\nratio of medians {ratio:.3f}; median of per-round ratios {paired_ratio(times['worker'], times['bare']):.3f}"
    )
    headline("cold_start_ratio", ratio)
    return ratio


if __name__ == "__main__":
    main()
