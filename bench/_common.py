"""What every bench shares: the tiny model, interleaved timing, medians, tables and the machine's description.

Timings on a shared machine are noisy, so every bench measures the two things it compares side by side in one
run, alternating their order each round (A B, B A, ...), and compares medians.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devstack.paths import REPO_ROOT

# Git-ignored (.cache/), kept between runs: the full-size random weights, the logs.
CACHE_DIR = REPO_ROOT / ".cache" / "bench"

# With the built-in voice (a 5.3 s clip) this text is one f5-tts chunk, so the worker (which generates
# chunks one after another) and a bare infer_process (which runs chunks in parallel threads) do the same work.
BENCH_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet green hills."


def quiet_aws_env() -> None:
    """boto3 must never look for a developer's credentials, profiles or an instance metadata service."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(contenders: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each contender, `rounds` times, order reversed every other round (drift hits all alike)."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(timed(contenders[name]))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios: each round's two runs saw about the same machine load."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if title:
        print(f"\n{title}")
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# The columns of a timing_row, in seconds (a caller that scales its rows names its own unit).
TIMING_HEADERS = ("contender", "median s", "min s", "max s", "runs")


def timing_row(name: str, values: Sequence[float], scale: float = 1.0) -> list[object]:
    """name, median, min, max (seconds times `scale`) and the number of runs: the columns of TIMING_HEADERS."""
    return [name, median(values) * scale, min(values) * scale, max(values) * scale, len(values)]


def machine_line() -> str:
    """One line saying where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


def headline(name: str, value: float, digits: int = 3) -> str:
    """The line `make bench` (and anyone grepping its output) looks for: `<name> <x>`."""
    line = f"{name} {value:.{digits}f}"
    print(line, flush=True)
    return line
