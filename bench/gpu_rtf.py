"""GPU real-time factor: the worker on random weights of the full F5TTS_v1_Base size (the same compute as the
published model), per dtype, attention backend and NFE; plus the first-chunk latency of a streamed job.

    python -m bench.gpu_rtf [--nfe 32 16] [--dtypes float16 bfloat16] [--backends torch flash_attn] [--runs 5]

Runs only where CUDA is present: elsewhere it prints "skipped: no CUDA" and exits 0. (`--device cpu` runs the
same code on the CPU, e.g. `--device cpu --dtypes float32 --backends torch --nfe 4 --runs 1`, as a slow check that
the bench itself works.)

The random checkpoint is built once under .cache/bench/ from f5-tts's own F5TTS_v1_Base.yaml (DiT, dim 1024,
depth 22, 16 heads: ~336 M parameters) and a Vocos of charactr/vocos-mel-24khz's size, saved in the layouts the
real files have, and loaded through the worker's Engine (f5-tts's loaders). Random weights compute exactly what
trained ones do: the durations come from the text and the reference, and every step is the same dense math.

Measured through WorkerService (the handler's job path, no bucket: base64 delivery):
- RTF = inference seconds / seconds of audio, for a one-chunk text (~10 s of speech) at batch 1;
  also the whole job's seconds / seconds of audio (encoding included).
- streaming: a text of several chunks with `stream: true`; seconds until the first chunk's audio is yielded.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
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

RANDOM_BASE_DIR = CACHE_DIR / "f5tts-v1-base-random"
SEED = 7
STREAM_TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet green hills. "
    "Nobody in the village saw where it went, but the children said it had a den beside the old mill. "
    "In the morning the farmer found fresh tracks in the snow, leading all the way down to the river bank."
)
# charactr/vocos-mel-24khz's config.yaml (the vocoder f5-tts uses): 8 ConvNeXt layers, 512 wide.
VOCOS_CONFIG = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 512, "intermediate_dim": 1536, "num_layers": 8},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}


def build_random_base(dest: Path) -> tuple[dict[str, str], int]:
    """F5TTS_* variables selecting a random-weight F5TTS_v1_Base (built once), and its parameter count."""
    from worker.tiny import build_random_checkpoint, checkpoint_parameters

    # f5-tts's own config for it: the published architecture.
    arch = yaml.safe_load(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml").read_text())["model"]["arch"]
    env = build_random_checkpoint(dest, model_name="F5TTS_v1_Base", arch=arch, vocos_config=VOCOS_CONFIG, seed=SEED)
    return env, checkpoint_parameters(dest)


def make_service(env: dict[str, str], device: str, dtype: str, backend: str, data_dir: Path) -> Any:
    from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
    from worker.engine import Engine
    from worker.service import WorkerService

    values: dict[str, Any] = {key.removeprefix("F5TTS_").lower(): value for key, value in env.items()}
    model = ModelSettings(_env_file=None, **values, device=device, dtype=dtype, attn_backend=backend)
    settings = Settings(
        model=model, storage=StorageSettings(_env_file=None), worker=WorkerSettings(_env_file=None, data_dir=data_dir)
    )
    service = WorkerService(settings, lambda: Engine.load(model))
    service.start()  # load + the worker's own warm-up
    if service.engine is None:
        raise SystemExit(f"the engine did not load: {service.startup_error}")
    return service


def one_job(service: Any, job: dict[str, Any]) -> dict[str, Any]:
    items = list(service.run(job))
    if "error" in items[-1]:
        raise SystemExit(f"the job failed: {items[-1]['error']}")
    return items[-1]


def first_chunk_latency(service: Any, nfe_step: int) -> tuple[float, float, int]:
    """Seconds until a streamed job yields its first chunk, the job's total seconds, and its chunk count."""
    started = time.perf_counter()
    first = None
    items = 0
    for item in service.run({"text": STREAM_TEXT, "stream": True, "nfe_step": nfe_step, "seed": SEED, "format": "wav"}):
        if "error" in item:
            raise SystemExit(f"the streamed job failed: {item['error']}")
        if first is None:
            first = time.perf_counter() - started
        items += 1
    return first or 0.0, time.perf_counter() - started, items - 1  # the last item is the summary


def measure(service: Any, nfe_step: int, runs: int) -> dict[str, float]:
    job = {"text": BENCH_TEXT, "nfe_step": nfe_step, "seed": SEED, "format": "wav", "delivery": "base64"}
    one_job(service, job)  # this NFE's first run (shapes, allocator) is not timed
    results = [one_job(service, job) for _ in range(runs)]
    streamed = [first_chunk_latency(service, nfe_step) for _ in range(max(1, runs // 2))]
    return {
        "audio_s": results[0]["duration"],
        "rtf": statistics.median(r["timings"]["rtf"] for r in results),
        "job_rtf": statistics.median(r["timings"]["total_s"] / r["duration"] for r in results),
        "first_chunk_s": statistics.median(s[0] for s in streamed),
        "stream_total_s": statistics.median(s[1] for s in streamed),
        "chunks": streamed[0][2],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu only to check the bench")
    parser.add_argument("--nfe", type=int, nargs="+", default=[32, 16], help="NFE steps (default 32 16)")
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"], help="default float16 bfloat16")
    parser.add_argument("--backends", nargs="+", default=["torch", "flash_attn"], help="default torch flash_attn")
    parser.add_argument("--runs", type=int, default=5, help="timed jobs per configuration (default 5)")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("== GPU RTF ==\nskipped: no CUDA")
        return 0
    backends = [b for b in args.backends if b != "flash_attn" or importlib.util.find_spec("flash_attn")]
    skipped = sorted(set(args.backends) - set(backends))

    print("== GPU RTF: the worker on random F5TTS_v1_Base-size weights ==")
    print(machine_line())
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    if skipped:
        print(f"not importable, skipped: {', '.join(skipped)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; nothing may download
    env, parameters = build_random_base(RANDOM_BASE_DIR)
    print(f"DiT with {parameters / 1e6:.1f} M parameters (F5TTS_v1_Base's architecture), random weights")

    rows = []
    best_rtf_32: float | None = None
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as data_dir:
        for dtype in args.dtypes:
            for backend in backends:
                service = make_service(env, args.device, dtype, backend, Path(data_dir))
                for nfe_step in args.nfe:
                    m = measure(service, nfe_step, args.runs)
                    rows.append(
                        [
                            dtype,
                            backend,
                            nfe_step,
                            f"{m['rtf']:.4f}",
                            f"{m['job_rtf']:.4f}",
                            m["audio_s"],
                            m["first_chunk_s"],
                            m["stream_total_s"],
                            m["chunks"],
                        ]
                    )
                    if nfe_step == 32:
                        best_rtf_32 = m["rtf"] if best_rtf_32 is None else min(best_rtf_32, m["rtf"])
                    print(f"  {dtype} {backend} NFE {nfe_step}: RTF {m['rtf']:.4f}", flush=True)
                del service
                gc.collect()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    print_table(
        ["dtype", "attention", "NFE", "RTF", "job RTF", "audio s", "1st chunk s", "stream s", "chunks"],
        rows,
        title=f"batch 1, median of {args.runs} jobs (RTF: inference / audio; job RTF: whole job / audio)",
    )
    if best_rtf_32 is not None:
        print()
        headline("gpu_rtf_nfe32", best_rtf_32, digits=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
