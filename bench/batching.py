"""Batching: throughput and latency of concurrent jobs, batched vs one chunk at a time, side by side in one run.

    python -m bench.batching [--model tiny|base] [--device cpu] [--concurrency 1 2 4 8] [--rounds 3] [--nfe 8]
                             [--max-batch 8] [--wait-ms 5]

Through WorkerService (the handler's job path, base64 WAV, no bucket) on one loaded engine: for each
concurrency c, c jobs start together (one thread each, as RunPod's concurrency_modifier or the http slots run
them), each a one-chunk sentence of its own with its own seed; a round ends when all are done. Two services
share the engine and differ only in batching:
- sequential: F5TTS_MAX_BATCH=1, chunks one at a time (what a CPU worker does, and every worker did before);
- batched: F5TTS_MAX_BATCH=8 and F5TTS_BATCH_WAIT_MS=5, a GPU worker's defaults (`--max-batch`, `--wait-ms`):
  the inference thread gathers the jobs' chunks into shared model calls, a chunk waiting up to 5 ms for company.
Rounds alternate the two (A B, B A, ...). Prints per c: jobs per wall second, seconds of audio per wall second,
p50/p95 job latency and the mean batch size of the model calls; then the headline ratios:
- `batching_throughput_ratio_c<max>`: batched ÷ sequential audio seconds per wall second at the top concurrency
  (target on a GPU: >= 3 at 8);
- `batching_p50_ratio_c<max>`: batched p50 latency at the top concurrency ÷ a job alone (c = 1, sequential)
  (target on a GPU: <= 2);
- `batching_c1_time_ratio`: batched ÷ sequential wall time at c = 1: what batching on costs a job that has
  nobody to batch with (its wait for company; target <= 1.02).

`--model base` builds random weights of the full F5TTS_v1_Base (bench/gpu_rtf.py's builder, ~336 M parameters);
with `--device cuda --dtype float16` and `--attn-backend torch|flash_attn` it is the GPU measurement (bench/gpu_rtf.py
runs it for both backends in one go).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import headline, machine_line, paired_ratio, print_table
from worker.batcher import GPU_BATCH_WAIT_MS, GPU_MAX_BATCH

# One-chunk sentences of similar length (each job speaks one; jobs beyond eight reuse them with other seeds).
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, then runs far away into the hills.",
    "Nobody in the village saw where it went, but the children said it had a den.",
    "In the morning the farmer found fresh tracks in the snow beside the old mill.",
    "The rivers carve the valleys, and the winds shape the mountains over the ages.",
    "Ships passing in the night would see the light and know the rocks were near.",
    "He polished the great lens until it shone, then lit the lamp for the night.",
    "Some of the sailors waved, though they knew he could not see them from there.",
    "When the morning came, he put out the lamp and went down to sleep until noon.",
]
MODES = ("sequential", "batched")


def load_engine(model: str, device: str, dtype: str, attn_backend: str) -> Any:
    """The tiny model or random full-size F5TTS_v1_Base weights, loaded as bench/gpu_rtf.py loads them."""
    from bench.gpu_rtf import load_engine as load_from_env
    from bench.gpu_rtf import model_env

    env, _ = model_env(tiny=model == "tiny")
    return load_from_env(env, device, dtype, attn_backend)


def make_service(engine: Any, data_dir: Path, max_batch: int, concurrency: int, wait_ms: float) -> Any:
    from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
    from worker.service import WorkerService

    worker = WorkerSettings(
        _env_file=None, data_dir=data_dir, max_batch=max_batch, concurrency=concurrency, batch_wait_ms=wait_ms
    )
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False), storage=StorageSettings(_env_file=None), worker=worker
    )
    service = WorkerService(settings, lambda: engine)
    service.start()
    return service


def run_round(service: Any, jobs: Sequence[dict[str, Any]]) -> tuple[float, list[float], float]:
    """All `jobs` started together: (wall seconds, each job's latency, seconds of audio)."""
    latencies = [0.0] * len(jobs)
    audio = [0.0] * len(jobs)
    errors: list[str] = []
    barrier = threading.Barrier(len(jobs) + 1)

    def run(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        items = list(service.run(jobs[index]))
        latencies[index] = time.perf_counter() - started
        if "error" in items[-1]:
            errors.append(items[-1]["error"])
            return
        audio[index] = items[-1]["duration"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a job failed: {errors[0]}")
    return time.perf_counter() - started, latencies, sum(audio)


def percentile(values: Sequence[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@dataclass
class Measured:
    """One concurrency in one mode, over all its rounds."""

    concurrency: int
    mode: str
    walls: list[float] = field(default_factory=list)  # each round's wall seconds
    latencies: list[float] = field(default_factory=list)  # every job's seconds
    audio_s: float = 0.0  # seconds of audio made, all rounds
    batch_sizes: list[int] = field(default_factory=list)  # items of each model call

    @property
    def jobs_per_s(self) -> float:
        return len(self.latencies) / sum(self.walls)

    @property
    def audio_per_s(self) -> float:
        return self.audio_s / sum(self.walls)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 95)

    def row(self) -> list[object]:
        """The table's row: concurrency, mode, then the summary's figures in its order."""
        return [self.concurrency, self.mode, *self.summary().values()]

    def summary(self) -> dict[str, float]:
        return {
            "jobs_per_s": self.jobs_per_s,
            "audio_s_per_s": self.audio_per_s,
            "p50_s": self.p50,
            "p95_s": self.p95,
            "mean_batch": statistics.mean(self.batch_sizes),
        }


@dataclass
class Sweep:
    """Every concurrency in both modes, and the ratios the targets are set on."""

    measured: dict[tuple[int, str], Measured]

    @property
    def top(self) -> int:
        return max(c for c, _ in self.measured)

    def throughput_ratio(self) -> float:
        """Batched ÷ sequential seconds of audio per wall second at the top concurrency."""
        top = self.top
        return self.measured[top, "batched"].audio_per_s / self.measured[top, "sequential"].audio_per_s

    def p50_ratio(self) -> float | None:
        """Batched p50 latency at the top concurrency ÷ a job alone (c = 1, sequential)."""
        if (1, "sequential") not in self.measured:
            return None
        return self.measured[self.top, "batched"].p50 / self.measured[1, "sequential"].p50

    def c1_time_ratio(self) -> float | None:
        """Batched ÷ sequential wall time at c = 1, round by round."""
        if (1, "batched") not in self.measured:
            return None
        return paired_ratio(self.measured[1, "batched"].walls, self.measured[1, "sequential"].walls)

    def print(self, title: str) -> None:
        print_table(
            ["concurrent", "mode", "jobs/s", "audio s/s", "p50 s", "p95 s", "mean batch"],
            [m.row() for m in self.measured.values()],
            title=title,
        )


def sweep(
    engine: Any,
    concurrency: Sequence[int],
    *,
    rounds: int,
    nfe: int,
    max_batch: int = GPU_MAX_BATCH,
    wait_ms: float = GPU_BATCH_WAIT_MS,
    deadline: float | None = None,
) -> Sweep:
    """Each concurrency, sequential and batched (`max_batch`, `wait_ms`) on `engine`, rounds alternating; stops
    early (with what it has) once `deadline` (time.monotonic()) has passed."""
    batch_sizes: list[int] = []
    real_sample = engine.sample

    def counted(requests: Sequence[Any]) -> Any:
        batch_sizes.append(len(requests))
        return real_sample(requests)

    engine.sample = counted
    measured: dict[tuple[int, str], Measured] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-batching-") as data_dir:
            for c in concurrency:
                if deadline is not None and time.monotonic() > deadline:
                    print(f"  out of time: concurrency {c} and above not measured", flush=True)
                    break
                services = {
                    "sequential": make_service(engine, Path(data_dir), 1, c, 0.0),
                    "batched": make_service(engine, Path(data_dir), max_batch, c, wait_ms),
                }
                jobs = [
                    {"text": SENTENCES[i % len(SENTENCES)], "seed": i, "nfe_step": nfe, "delivery": "base64"}
                    for i in range(c)
                ]
                run_round(services["batched"], jobs)  # untimed: shapes and allocator for this size
                results = {name: Measured(c, name) for name in MODES}
                for round_index in range(rounds):
                    for name in MODES if round_index % 2 == 0 else reversed(MODES):
                        batch_sizes.clear()
                        wall, job_latencies, seconds = run_round(services[name], jobs)
                        results[name].walls.append(wall)
                        results[name].latencies += job_latencies
                        results[name].audio_s += seconds
                        results[name].batch_sizes += batch_sizes
                measured.update({(c, name): result for name, result in results.items()})
                print(f"  concurrency {c} done", flush=True)
    finally:
        engine.sample = real_sample
    return Sweep(measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny", help="tiny (default) or base (full size)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (default: float16 on CUDA), float16, float32 ...")
    parser.add_argument("--attn-backend", default="torch", choices=["torch", "flash_attn"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8], help="default 1 2 4 8")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency and mode (default 3)")
    parser.add_argument("--nfe", type=int, default=8, help="flow-matching steps (default 8)")
    parser.add_argument("--max-batch", type=int, default=GPU_MAX_BATCH, help="batched mode's F5TTS_MAX_BATCH (8)")
    parser.add_argument("--wait-ms", type=float, default=GPU_BATCH_WAIT_MS, help="its F5TTS_BATCH_WAIT_MS (5)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; nothing may download

    print(f"== batching: {args.model} model on {args.device}, NFE {args.nfe}, {args.rounds} rounds ==")
    print(machine_line())
    engine = load_engine(args.model, args.device, args.dtype, args.attn_backend)
    result = sweep(
        engine, args.concurrency, rounds=args.rounds, nfe=args.nfe, max_batch=args.max_batch, wait_ms=args.wait_ms
    )
    result.print(
        f"each round: all jobs started together; batched: max batch {args.max_batch}, wait {args.wait_ms:g} ms; "
        "throughput over all rounds"
    )
    print()
    headline(f"batching_throughput_ratio_c{result.top}", result.throughput_ratio())
    if (p50_ratio := result.p50_ratio()) is not None:
        headline(f"batching_p50_ratio_c{result.top}", p50_ratio)
    if (c1_ratio := result.c1_time_ratio()) is not None:
        headline("batching_c1_time_ratio", c1_ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
