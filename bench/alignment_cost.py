"""What word timings cost: seconds of forced alignment divided by seconds of synthesis, for the same speech.

    python -m bench.alignment_cost [--sizes tiny full] [--nfe 32] [--runs 3] [--device auto]

For each size, one text chunk (bench/_common.py's BENCH_TEXT with the built-in voice, ~10 s of speech) is
synthesized by the worker's Engine and then aligned by the worker's Aligner on the same device, as a job with
`word_timestamps` does (worker/service.py: both on the inference thread, one after the other):
- `tiny`: the tests' tiny random F5 and tiny random aligner (worker/tiny.py);
- `full`: random weights of the production sizes: F5TTS_v1_Base (~336 M parameters, bench/gpu_rtf.py builds
  it) and torchaudio's wav2vec2_base with the 29-letter head of WAV2VEC2_ASR_BASE_960H (~94 M parameters).
  Random weights compute what trained ones do: the cost depends on the sizes, not on the values.
The synthesis runs at `--nfe` steps (the contract's default is 32). On a CPU the full-size F5 takes minutes per
step count of 32; `--nfe 4` measures it faster, and the printed ratio then says so (synthesis time grows about
linearly with NFE, alignment not at all, so the ratio at 32 is about an eighth of the ratio at 4).

Prints a table per size and a headline `alignment_ratio_<size>_<device> <x>` each (target on a GPU: <= 0.1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench._common import BENCH_TEXT, CACHE_DIR, headline, machine_line, print_table
from devstack.model import tiny_model_env

FULL_ALIGNER_DIR = CACHE_DIR / "aligner-base-random"
ALIGNER_LABELS = 29  # WAV2VEC2_ASR_BASE_960H's: blank, separator, 26 letters, apostrophe


def full_size_env() -> dict[str, str]:
    """F5TTS_* variables selecting random full-size F5 and aligner weights (built once under .cache/bench/)."""
    from bench.gpu_rtf import RANDOM_BASE_DIR, build_random_base
    from worker.model_facts import ALIGNER_WEIGHTS
    from worker.tiny import build_random_aligner

    env, _ = build_random_base(RANDOM_BASE_DIR)
    if not (FULL_ALIGNER_DIR / ALIGNER_WEIGHTS).is_file():
        build_random_aligner(FULL_ALIGNER_DIR, builder="wav2vec2_base", kwargs={"aux_num_out": ALIGNER_LABELS})
    return {**env, "F5TTS_ALIGNER_DIR": str(FULL_ALIGNER_DIR)}


def measure(env: dict[str, str], device: str, nfe: int, runs: int) -> tuple[list[float], list[float], float]:
    """Synthesis and alignment seconds per run, and the seconds of audio."""
    import soundfile as sf
    import torch

    from worker.aligner import Aligner
    from worker.config import ModelSettings
    from worker.engine import Engine
    from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

    values: dict[str, Any] = {key.removeprefix("F5TTS_").lower(): value for key, value in env.items()}
    values["device"] = device
    engine = Engine.load(ModelSettings(_env_file=None, **values))
    aligner = Aligner.load(Path(env["F5TTS_ALIGNER_DIR"]), engine.device)
    reference, rate = sf.read(str(builtin_audio_file()), dtype="float32")

    def synchronise() -> None:
        if engine.device.startswith("cuda"):
            torch.cuda.synchronize()

    synthesis, alignment, seconds = [], [], 0.0
    for run in range(runs + 1):  # the first run warms both up and is not counted
        started = time.perf_counter()
        [chunk] = list(engine.generate(reference, rate, BUILTIN_REFERENCE_TEXT, BENCH_TEXT, nfe_step=nfe, seed=run))
        synchronise()
        synthesised = time.perf_counter()
        words = aligner.align(chunk.samples, engine.sample_rate, chunk.text)
        synchronise()
        aligned = time.perf_counter()
        assert len(words) == len(BENCH_TEXT.split())
        if run:
            synthesis.append(synthesised - started)
            alignment.append(aligned - synthesised)
            seconds = chunk.samples.size / engine.sample_rate
    return synthesis, alignment, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=("tiny", "full"), default=["tiny", "full"])
    parser.add_argument("--nfe", type=int, default=32, help="flow-matching steps of the synthesis (default 32)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto: cuda when usable, else cpu")
    args = parser.parse_args(argv)

    from worker.engine import resolve_device

    device = resolve_device(args.device)
    print(machine_line())
    for size in args.sizes:
        env = tiny_model_env() if size == "tiny" else full_size_env()
        synthesis, alignment, seconds = measure(env, device, args.nfe, args.runs)
        ratio = statistics.median(a / s for a, s in zip(alignment, synthesis, strict=True))
        print_table(
            ["", "median s", "min s", "max s"],
            [
                [f"synthesis (nfe {args.nfe})", statistics.median(synthesis), min(synthesis), max(synthesis)],
                ["alignment", statistics.median(alignment), min(alignment), max(alignment)],
            ],
            title=f"{size} models on {device}: {seconds:.1f} s of audio, {args.runs} runs",
        )
        headline(f"alignment_ratio_{size}_{device.split(':')[0]}_nfe{args.nfe}", ratio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
