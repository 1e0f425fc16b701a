"""Batching: throughput and latency of concurrent jobs, batched vs one chunk at a time, side by side in one run.

    python -m bench.batching [--model tiny|base] [--device cpu] [--concurrency 1 2 4 8] [--rounds 3] [--nfe 8]

Through WorkerService (the handler's job path, base64 WAV, no bucket) on one loaded engine: for each
concurrency c, c jobs start together (one thread each, as RunPod's concurrency_modifier or the http slots run
them), each a one-chunk sentence of its own with its own seed; a round ends when all are done. Two services
share the engine and differ only in batching:
- sequential: F5TTS_MAX_BATCH=1, chunks one at a time (what a CPU worker does, and every worker did before);
- batched: F5TTS_MAX_BATCH=c, the inference thread gathers the c jobs' chunks into one model call (waiting up
  to `--wait-ms` for them).
Rounds alternate the two (A B, B A, ...). Prints per c: jobs per wall second, seconds of audio per wall second,
p50/p95 job latency and the mean batch size of the model calls; then the headline ratios:
- `batching_throughput_ratio_c<max>`: batched ÷ sequential audio seconds per wall second at the top concurrency
  (target on a GPU: >= 3 at 8);
- `batching_p50_ratio_c<max>`: batched p50 latency at the top concurrency ÷ a job alone (c = 1, sequential)
  (target on a GPU: <= 2);
- `batching_c1_time_ratio`: batched ÷ sequential wall time at c = 1 (batching's overhead when there is nobody to
  batch with; target <= 1.02).

`--model base` builds random weights of the full F5TTS_v1_Base (bench/gpu_rtf.py's builder, ~336 M parameters);
with `--device cuda --dtype float16` and `--attn-backend torch|flash_attn` it is the GPU measurement.
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
from pathlib import Path
from typing import Any

from bench._common import headline, machine_line, paired_ratio, print_table

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


def load_engine(model: str, device: str, dtype: str, attn_backend: str) -> Any:
    from worker.config import ModelSettings
    from worker.engine import Engine

    if model == "tiny":
        from devstack.model import tiny_model_env

        env = tiny_model_env()
    else:
        from bench.gpu_rtf import RANDOM_BASE_DIR, build_random_base

        env, _ = build_random_base(RANDOM_BASE_DIR)
    values: dict[str, Any] = {key.removeprefix("F5TTS_").lower(): value for key, value in env.items()}
    values.update(device=device, dtype=dtype, attn_backend=attn_backend)
    return Engine.load(ModelSettings(_env_file=None, **values))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny", help="tiny (default) or base (full size)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (default: float16 on CUDA), float16, float32 ...")
    parser.add_argument("--attn-backend", default="torch", choices=["torch", "flash_attn"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8], help="default 1 2 4 8")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency and mode (default 3)")
    parser.add_argument("--nfe", type=int, default=8, help="flow-matching steps (default 8)")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="batched mode's wait for company (default 5)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; nothing may download

    print(f"== batching: {args.model} model on {args.device}, NFE {args.nfe}, {args.rounds} rounds ==")
    print(machine_line())
    engine = load_engine(args.model, args.device, args.dtype, args.attn_backend)
    batch_sizes: list[int] = []
    real_sample = engine.sample

    def counted(requests: Sequence[Any]) -> Any:
        batch_sizes.append(len(requests))
        return real_sample(requests)

    engine.sample = counted
    rows: list[list[object]] = []
    summary: dict[tuple[int, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as data_dir:
        for c in args.concurrency:
            services = {
                "sequential": make_service(engine, Path(data_dir), 1, c, 0.0),
                "batched": make_service(engine, Path(data_dir), c, c, args.wait_ms),
            }
            jobs = [
                {"text": SENTENCES[i % len(SENTENCES)], "seed": i, "nfe_step": args.nfe, "delivery": "base64"}
                for i in range(c)
            ]
            run_round(services["sequential"], jobs)  # untimed: shapes and allocator for this size
            walls: dict[str, list[float]] = {name: [] for name in services}
            latencies: dict[str, list[float]] = {name: [] for name in services}
            audio: dict[str, float] = dict.fromkeys(services, 0.0)
            sizes: dict[str, list[int]] = {name: [] for name in services}
            for round_index in range(args.rounds):
                for name in list(services) if round_index % 2 == 0 else reversed(list(services)):
                    batch_sizes.clear()
                    wall, job_latencies, seconds = run_round(services[name], jobs)
                    walls[name].append(wall)
                    latencies[name] += job_latencies
                    audio[name] += seconds
                    sizes[name] += batch_sizes
            for name in services:
                total_wall = sum(walls[name])
                summary[c, name] = {
                    "audio_per_s": audio[name] / total_wall,
                    "p50": statistics.median(latencies[name]),
                    "wall": statistics.median(walls[name]),
                }
                rows.append(
                    [
                        c,
                        name,
                        len(latencies[name]) / total_wall,
                        summary[c, name]["audio_per_s"],
                        summary[c, name]["p50"],
                        percentile(latencies[name], 95),
                        statistics.mean(sizes[name]),
                    ]
                )
            summary[c, "batched"]["time_ratio"] = paired_ratio(walls["batched"], walls["sequential"])
            print(f"  concurrency {c} done", flush=True)
    print_table(
        ["concurrent", "mode", "jobs/s", "audio s/s", "p50 s", "p95 s", "mean batch"],
        rows,
        title="each round: all jobs started together; throughput over all rounds",
    )
    top = max(args.concurrency)
    print()
    headline(
        f"batching_throughput_ratio_c{top}",
        summary[top, "batched"]["audio_per_s"] / summary[top, "sequential"]["audio_per_s"],
    )
    if 1 in args.concurrency:
        headline(f"batching_p50_ratio_c{top}", summary[top, "batched"]["p50"] / summary[1, "sequential"]["p50"])
        headline("batching_c1_time_ratio", summary[1, "batched"]["time_ratio"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
