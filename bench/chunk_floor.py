"""The chunk plan's floor: what a short first chunk costs and what F5 does with one.

    python -m bench.chunk_floor [--rounds 5] [--nfe 32]

In process, the tiny model through `Engine._generate` with the built-in voice, one chunk at a time: for first
chunks of growing length, the audio F5 makes of them (its duration estimate, with its forced speed 0.3 under 10
bytes) and the inference time (minimum of `--rounds`). The floor (worker.chunk_plan.MIN_CHUNK_BYTES) is the
length up to which joining the next sentence costs little time to first audio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from bench._common import machine_line, print_table
from devstack.model import tiny_model_env

FIRST_CHUNKS = [
    "Hi.",
    "Hello",
    "Hi. Hello.",
    "Hi. How are you?",
    "Hi. How are you today?",
    "Hi. How are you doing today, my friend?",
    "Hi. How are you doing today, my friend? I hope the trip went well.",
    "The old lighthouse keeper climbed the spiral stairs every evening, long before the sun touched the sea.",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nfe", type=int, default=32)
    args = parser.parse_args(argv)

    os.environ.update(tiny_model_env())
    import soundfile as sf

    from worker import chunk_plan
    from worker.chunk_plan import terminated_transcript
    from worker.config import ModelSettings
    from worker.engine import Engine
    from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

    engine = Engine.load(ModelSettings(_env_file=None))
    samples, rate = sf.read(str(builtin_audio_file()), dtype="float32")
    ref_text = terminated_transcript(BUILTIN_REFERENCE_TEXT)
    print("== chunk floor: one first chunk of each length, tiny model, in process ==")
    print(machine_line())
    rows, base = [], None
    for text in FIRST_CHUNKS:
        times, audio_s = [], 0.0
        for _ in range(args.rounds):
            started = time.perf_counter()
            # The planned request of a one-chunk text, with the chunk set to exactly `text` (the plan might cut it).
            first = engine.plan(samples, rate, ref_text, text, nfe_step=args.nfe)[0]
            frames = chunk_plan.chunk_frames(text, chunk_plan.Voice(ref_text, samples.size / rate), 1.0)
            (wave,) = engine.sample([dataclasses.replace(first, text=text, frames=frames, count=1)])
            audio_s = wave.size / engine.sample_rate
            times.append(time.perf_counter() - started)
        best = min(times)
        base = base or best
        rows.append([repr(text[:40]), len(text.encode()), audio_s, audio_s / len(text), best, best / base])
    print_table(
        ["first chunk", "bytes", "audio s", "audio s/char", "inference s (min)", "÷ 'Hi.'"],
        rows,
        title=f"nfe_step {args.nfe}, {args.rounds} rounds each",
    )


if __name__ == "__main__":
    main()
