"""GPU bench: the worker on random weights of the full F5TTS_v1_Base size (the same compute as the published model),
torch SDPA with attention masks vs flash-attn varlen, side by side in one run: real-time factor at batch 1, then
throughput and latency of 1, 2, 4 and 8 concurrent jobs, batched vs one chunk at a time.

    python -m bench.gpu_rtf [--backends torch flash_attn] [--concurrency 1 2 4 8] [--nfe 32] [--rounds 3]
    python -m bench.gpu_rtf --device cpu --tiny     # a smoke check of this script, on the tiny model (seconds)

The one prepared script for a GPU machine: bounded (`--max-seconds`, default 480: what is not measured by then
is skipped and said so), results printed and written as JSON to `--json`, or to `$OUT/gpu_rtf.json` when $OUT is
set. Without CUDA (and without `--device cpu`) it prints "skipped: no CUDA" and exits 0. flash-attn is measured
where it imports (the image bakes a wheel), else named as skipped.

The random checkpoint is built once under .cache/bench/ from f5-tts's own F5TTS_v1_Base.yaml (DiT, dim 1024,
depth 22, 16 heads: ~336 M parameters) and a Vocos of charactr/vocos-mel-24khz's size, saved in the layouts the
real files have, and loaded through the worker's Engine (f5-tts's loaders) in float16 on a GPU. Random weights
compute exactly what trained ones do: the durations come from the text and the reference, and every step is the
same dense math.

Per attention backend, through WorkerService (the handler's job path, no bucket: base64 delivery):
- RTF = inference seconds / seconds of audio for a one-chunk text (~10 s of speech) alone; the whole job's
  seconds per second of audio; the seconds until a streamed job's first chunk;
- bench/batching.py's sweep: c jobs started together, sequential (F5TTS_MAX_BATCH=1) vs batched (a GPU worker's
  defaults: 8 chunks, 5 ms wait; `--max-batch`, `--wait-ms`), seconds of audio per wall second and p50/p95
  latency; peak GPU memory.
Headlines: `gpu_rtf_nfe32` (the best backend's RTF, target <= 0.03), per backend `gpu_batching_throughput_ratio_c8_
<backend>` (target >= 3) and `gpu_batching_p50_ratio_c8_<backend>` (target <= 2), and `gpu_flash_attn_vs_torch_
throughput_c8` (flash-attn ÷ torch, batched).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from bench._common import BENCH_TEXT, CACHE_DIR, headline, machine_line, print_table
from worker.batcher import GPU_BATCH_WAIT_MS, GPU_MAX_BATCH

RANDOM_BASE_DIR = CACHE_DIR / "f5tts-v1-base-random"
SEED = 7
STREAM_TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet green hills. "
    "Nobody in the village saw where it went, but the children said it had a den beside the old mill. "
    "In the morning the farmer found fresh tracks in the snow, leading all the way down to the river bank."
)
# charactr/vocos-mel-24khz's backbone (the vocoder f5-tts uses): 8 ConvNeXt layers, 512 wide.
VOCOS_SIZE = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}
# --tiny: the smallest run that still goes through every step (a smoke check of the script); its batched jobs
# wait long enough for each other that a loaded CPU cannot keep them apart.
TINY_DEFAULTS = {"concurrency": [1, 2], "nfe": 4, "rounds": 1, "runs": 1, "wait_ms": 100.0}
FULL_DEFAULTS = {"concurrency": [1, 2, 4, 8], "nfe": 32, "rounds": 3, "runs": 5, "wait_ms": GPU_BATCH_WAIT_MS}


def build_random_base(dest: Path) -> tuple[dict[str, str], int]:
    """F5TTS_* variables selecting a random-weight F5TTS_v1_Base (built once), and its parameter count."""
    from worker.tiny import build_random_checkpoint, checkpoint_parameters, vocos_config

    # f5-tts's own config for it: the published architecture.
    arch = yaml.safe_load(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml").read_text())["model"]["arch"]
    env = build_random_checkpoint(
        dest, model_name="F5TTS_v1_Base", arch=arch, vocos_config=vocos_config(**VOCOS_SIZE), seed=SEED
    )
    return env, checkpoint_parameters(dest)


def model_env(tiny: bool) -> tuple[dict[str, str], int]:
    if tiny:
        from devstack.model import tiny_model_env
        from worker.tiny import checkpoint_parameters

        env = tiny_model_env()
        return env, checkpoint_parameters(Path(env["F5TTS_CKPT_FILE"]).parent)
    return build_random_base(RANDOM_BASE_DIR)


def load_engine(env: dict[str, str], device: str, dtype: str, backend: str) -> Any:
    from worker.config import ModelSettings
    from worker.engine import Engine

    values: dict[str, Any] = {key.removeprefix("F5TTS_").lower(): value for key, value in env.items()}
    values.update(device=device, dtype=dtype, attn_backend=backend)
    return Engine.load(ModelSettings(_env_file=None, **values))


def make_service(engine: Any, data_dir: Path) -> Any:
    """A worker's service on `engine`, with the defaults of its device, warmed up as a worker warms up."""
    from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
    from worker.service import WorkerService

    settings = Settings(
        model=ModelSettings(_env_file=None),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=data_dir),
    )
    service = WorkerService(settings, lambda: engine)
    service.start()
    if service.engine is None:
        raise SystemExit(f"the engine did not start: {service.startup_error}")
    return service


def one_job(service: Any, job: dict[str, Any]) -> dict[str, Any]:
    items = list(service.run(job))
    if "error" in items[-1]:
        raise SystemExit(f"the job failed: {items[-1]['error']}")
    return items[-1]


def first_chunk_latency(service: Any, nfe_step: int) -> tuple[float, int]:
    """Seconds until a streamed job yields its first chunk, and its chunk count."""
    started = time.perf_counter()
    first = None
    items = 0
    for item in service.run({"text": STREAM_TEXT, "stream": True, "nfe_step": nfe_step, "seed": SEED, "format": "wav"}):
        if "error" in item:
            raise SystemExit(f"the streamed job failed: {item['error']}")
        if first is None:
            first = time.perf_counter() - started
        items += 1
    return first or 0.0, items - 1  # the last item is the summary


def alone(service: Any, nfe_step: int, runs: int) -> dict[str, float]:
    """Batch 1: RTF of a one-chunk job, the whole job's seconds per second of audio, a stream's first chunk."""
    job = {"text": BENCH_TEXT, "nfe_step": nfe_step, "seed": SEED, "format": "wav", "delivery": "base64"}
    one_job(service, job)  # this NFE's first run (shapes, allocator) is not timed
    results = [one_job(service, job) for _ in range(runs)]
    streamed = [first_chunk_latency(service, nfe_step) for _ in range(max(1, runs // 2))]
    return {
        "audio_s": results[0]["duration"],
        "rtf": statistics.median(r["timings"]["rtf"] for r in results),
        "job_rtf": statistics.median(r["timings"]["total_s"] / r["duration"] for r in results),
        "first_chunk_s": statistics.median(s[0] for s in streamed),
        "stream_chunks": streamed[0][1],
    }


def measure_backend(
    env: dict[str, str], backend: str, args: argparse.Namespace, deadline: float
) -> dict[str, Any] | None:
    """One attention backend: load, batch 1, the concurrency sweep; None when out of time before it began."""
    import torch

    from bench.batching import sweep

    if time.monotonic() > deadline:
        print(f"  out of time: {backend} not measured", flush=True)
        return None
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(args.device)
    started = time.perf_counter()
    engine = load_engine(env, args.device, args.dtype, backend)
    load_s = time.perf_counter() - started
    result: dict[str, Any] = {"backend": backend, "dtype": engine.dtype, "load_s": load_s}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as data_dir:
        result["alone"] = alone(make_service(engine, Path(data_dir)), args.nfe, args.runs)
    print(f"  {backend}: RTF {result['alone']['rtf']:.4f} at batch 1", flush=True)
    measured = sweep(
        engine,
        args.concurrency,
        rounds=args.rounds,
        nfe=args.nfe,
        max_batch=args.max_batch,
        wait_ms=args.wait_ms,
        deadline=deadline,
    )
    measured.print(
        f"{backend}: each round all jobs started together (batched: {args.max_batch} chunks, {args.wait_ms:g} ms wait)"
    )
    result["sweep"] = {f"c{c}_{mode}": m.summary() for (c, mode), m in measured.measured.items()}
    result["top_concurrency"] = measured.top
    result["throughput_ratio"] = measured.throughput_ratio()
    result["p50_ratio"] = measured.p50_ratio()
    if cuda:
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(args.device) / 2**30
    del engine, measured
    gc.collect()
    return result


def versions() -> dict[str, str]:
    import torch

    found = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for package in ("f5-tts", "flash-attn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu only to check the bench")
    parser.add_argument("--tiny", action="store_true", help="the tiny model, smallest sizes: a smoke check")
    parser.add_argument("--dtype", default="auto", help="auto (default: float16 on CUDA, float32 on the CPU)")
    parser.add_argument("--backends", nargs="+", default=["torch", "flash_attn"], help="default torch flash_attn")
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrent jobs (default 1 2 4 8)")
    parser.add_argument("--nfe", type=int, help="flow-matching steps (default 32)")
    parser.add_argument("--rounds", type=int, help="rounds per concurrency and mode (default 3)")
    parser.add_argument("--runs", type=int, help="timed jobs alone per backend (default 5)")
    parser.add_argument("--max-batch", type=int, default=GPU_MAX_BATCH, help="batched F5TTS_MAX_BATCH (8)")
    parser.add_argument("--wait-ms", type=float, help="batched F5TTS_BATCH_WAIT_MS (default 5)")
    parser.add_argument("--max-seconds", type=float, default=480, help="stop measuring after this long (480)")
    parser.add_argument("--json", type=Path, help="write the results here (default: $OUT/gpu_rtf.json if $OUT is set)")
    args = parser.parse_args(argv)
    for name, value in (TINY_DEFAULTS if args.tiny else FULL_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    deadline = time.monotonic() + args.max_seconds

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("== GPU RTF ==\nskipped: no CUDA")
        return 0
    on_gpu = args.device.startswith("cuda")
    # flash-attn's varlen kernels are CUDA only; f5-tts imports the package when the backend is chosen.
    backends = [b for b in args.backends if b != "flash_attn" or (on_gpu and importlib.util.find_spec("flash_attn"))]
    skipped = sorted(set(args.backends) - set(backends))

    model = "the tiny model" if args.tiny else "random F5TTS_v1_Base-size weights"
    print(f"== GPU RTF and batching: the worker on {model}, NFE {args.nfe} ==")
    print(machine_line())
    report: dict[str, Any] = {"machine": machine_line(), "versions": versions(), "device": args.device}
    if on_gpu:
        report["gpu"] = torch.cuda.get_device_name(args.device)
        print(f"GPU: {report['gpu']}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    if skipped:
        print(f"not measured (flash-attn does not import, or no GPU): {', '.join(skipped)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; nothing may download
    env, parameters = model_env(args.tiny)
    print(f"DiT with {parameters / 1e6:.1f} M parameters, random weights")
    report.update(
        parameters=parameters,
        nfe=args.nfe,
        rounds=args.rounds,
        max_batch=args.max_batch,
        wait_ms=args.wait_ms,
        skipped_backends=skipped,
    )

    results = [r for b in backends if (r := measure_backend(env, b, args, deadline)) is not None]
    report["backends"] = {r["backend"]: r for r in results}
    print_table(
        ["attention", "dtype", "RTF", "job RTF", "audio s", "1st chunk s", "batched ÷ sequential"],
        [
            [
                r["backend"],
                r["dtype"],
                f"{r['alone']['rtf']:.4f}",
                f"{r['alone']['job_rtf']:.4f}",
                r["alone"]["audio_s"],
                r["alone"]["first_chunk_s"],
                r["throughput_ratio"],
            ]
            for r in results
        ],
        title=f"batch 1, median of {args.runs} jobs (RTF: inference / audio); audio s/s batched ÷ sequential at the "
        "top concurrency",
    )
    side_by_side(report, results)
    print()
    if results and args.nfe == 32:
        headline("gpu_rtf_nfe32", min(r["alone"]["rtf"] for r in results), digits=4)
    for r in results:
        headline(f"gpu_batching_throughput_ratio_c{r['top_concurrency']}_{r['backend']}", r["throughput_ratio"])
        if r["p50_ratio"] is not None:
            headline(f"gpu_batching_p50_ratio_c{r['top_concurrency']}_{r['backend']}", r["p50_ratio"])
    if "flash_over_torch" in report:
        top = report["flash_over_torch"]["concurrency"]
        headline(f"gpu_flash_attn_vs_torch_throughput_c{top}", report["flash_over_torch"]["throughput"])

    destination = args.json or (Path(os.environ["OUT"]) / "gpu_rtf.json" if os.environ.get("OUT") else None)
    if destination is not None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {destination}")
    return 0


def side_by_side(report: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """flash-attn against torch, batched, at each concurrency both measured (into `report` too)."""
    by_backend = {r["backend"]: r for r in results}
    if not {"torch", "flash_attn"} <= set(by_backend):
        return
    torch_sweep, flash_sweep = by_backend["torch"]["sweep"], by_backend["flash_attn"]["sweep"]
    rows = []
    for key in torch_sweep:
        if key.endswith("_batched") and key in flash_sweep:
            concurrency = int(key[1:].split("_")[0])
            throughput = flash_sweep[key]["audio_s_per_s"] / torch_sweep[key]["audio_s_per_s"]
            p50 = flash_sweep[key]["p50_s"] / torch_sweep[key]["p50_s"]
            rows.append([concurrency, throughput, p50])
            # Ascending concurrency: what is left here is the top one's.
            report["flash_over_torch"] = {"concurrency": concurrency, "throughput": throughput, "p50": p50}
    rtf = by_backend["flash_attn"]["alone"]["rtf"] / by_backend["torch"]["alone"]["rtf"]
    print_table(
        ["concurrent", "audio s/s: flash ÷ torch", "p50: flash ÷ torch"],
        rows,
        title=f"flash-attn varlen vs torch SDPA with masks, batched (batch 1 RTF: flash ÷ torch = {rtf:.3f})",
    )


if __name__ == "__main__":
    sys.exit(main())
