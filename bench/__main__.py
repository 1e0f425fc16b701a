"""`python -m bench` (`make bench`): every CPU benchmark, each in a process of its own, then the headline ratios.

Each bench's tables are passed through as it runs; its headline lines (`<name> <x>`) are held back and printed at
the end, so that the lines `worker_overhead_ratio <x>`, `cold_start_ratio <x>`, `client_overhead_ratio <x>`,
`ttfa_ratio <x>`, `stream_total_ratio <x>` and `batching_c1_time_ratio <x>` appear exactly once, together. The GPU bench runs last; without CUDA it only says
that it skipped. Targets are printed for reference; a missed target does not fail the run (timings are not tests).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench._common import CACHE_DIR
from devstack.paths import REPO_ROOT

LOG_DIR = CACHE_DIR / "logs"  # each bench's stderr (library warnings, tracebacks)

# (module, {headline name: target}): a ratio at or below the target meets it.
CPU_BENCHES = [
    ("bench.worker_overhead", {"worker_overhead_ratio": 1.05}),
    ("bench.cold_start", {"cold_start_ratio": 2.0}),
    ("bench.client_overhead", {"client_overhead_ratio": 1.1}),
    ("bench.streaming", {"ttfa_ratio": 0.15, "stream_total_ratio": 1.10}),
    ("bench.ttfb", {"ttfb_ratio": 1.0}),  # http mode's first audio byte vs the queue's first /stream chunk
    ("bench.batching", {"batching_c1_time_ratio": 1.02}),  # batching's cost where there is nobody to batch with
    ("bench.image_size", {"image_size_gb": 9.0}),  # estimated image, GB (not a ratio)
]
GPU_BENCH = ("bench.gpu_rtf", "gpu_rtf_nfe32", 0.03)


def run_bench(module: str, names: list[str]) -> dict[str, float | None]:
    """Run one bench, echoing its output except its headline lines; returns the headlines' values."""
    values: dict[str, float | None] = dict.fromkeys(names)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{module}.log"
    with (
        open(log_path, "wb") as log,
        subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        ) as proc,
    ):
        assert proc.stdout is not None  # a pipe
        for line in proc.stdout:
            name, _, rest = line.partition(" ")
            if name in values and rest.strip():
                values[name] = float(rest.split()[0])
            else:
                print(line, end="", flush=True)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        print(
            f"{module} failed (exit {proc.returncode}); the end of {log_path.relative_to(REPO_ROOT)}:\n{tail}",
            flush=True,
        )
    print(flush=True)
    return values


def main() -> int:
    started = time.perf_counter()
    results: dict[str, tuple[float | None, float]] = {}
    for module, targets in CPU_BENCHES:
        values = run_bench(module, list(targets))
        results.update({name: (values[name], target) for name, target in targets.items()})
    gpu_module, gpu_name, gpu_target = GPU_BENCH
    gpu_value = run_bench(gpu_module, [gpu_name])[gpu_name]

    print(f"== summary ({time.perf_counter() - started:.0f} s) ==")
    for name, (value, target) in [*results.items(), *([(gpu_name, (gpu_value, gpu_target))] if gpu_value else [])]:
        verdict = "n/a" if value is None else ("met" if value <= target else "MISSED")
        print(f"  target {name} <= {target}: {verdict}")
    for name, (value, _) in results.items():
        print(f"{name} {value:.3f}" if value is not None else f"{name} failed")
    if gpu_value is not None:
        print(f"{gpu_name} {gpu_value:.4f}")
    return 0 if all(value is not None for value, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
