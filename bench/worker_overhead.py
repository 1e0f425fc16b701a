"""Worker overhead: the handler's whole synthesize job vs a bare f5-tts `infer_process` on the same model.

    python -m bench.worker_overhead [--rounds 15] [--nfe 32]

- worker: a process that builds the service as `python -m worker.handler` does (`build_service()` from the
  environment: tiny model, warm-up, a bucket) and runs each job through the RunPod handler function on one
  long-lived event loop, as runpod's worker loop does: contract validation, lookup of the built-in `default`
  voice, chunking, generation, cross-fade, WAV encoding, upload to an S3 server (moto on 127.0.0.1, over HTTP)
  and a presigned URL.
- bare: a process that loads the same checkpoint and vocoder with f5-tts's own `load_model` / `load_vocoder` and
  calls `infer_process` with the same reference clip (read from its file each call, as infer_process does) and
  transcript, the same text (one chunk), nfe_step, cfg strength, sway sampling, speed, cross-fade and seed. Its
  progress prints go to a buffer.

Each contender has a process of its own, as it would in use: on the CPU, torch's OpenMP threads behave
differently when another thread of the same process has run torch work (libgomp stops spinning between ops), so
sharing one process would slow whichever side runs second. The parent alternates the two, one job at a time;
each process times its own job. Before timing, one job of each is compared sample for sample: the two must
produce the same audio, or the bench stops. The tiny random-weight model makes inference cheap, so any per-job
overhead shows up magnified.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    BENCH_TEXT,
    TIMING_HEADERS,
    headline,
    interleaved,
    machine_line,
    median,
    paired_ratio,
    print_table,
    quiet_aws_env,
    timed,
    timing_row,
)
from devstack.paths import REPO_ROOT

SEED = 7
PCM16_STEP = 1 / 32768


CONTENDERS = {
    "worker": "worker: handler job",
    "bare": "bare: infer_process",
    "lean": "bare: infer_batch_process, same thread",
}


def job_input(nfe_step: int) -> dict[str, Any]:
    return {"text": BENCH_TEXT, "seed": SEED, "nfe_step": nfe_step}


# ------------------------------------------------------------------------------------------------ child processes
def _worker_child(nfe_step: int) -> tuple[Callable[[], Any], Callable[[int], list], Callable[[str], None]]:
    import asyncio

    from worker import audio
    from worker.handler import build_service, handler
    from worker.schema import parse_job_input

    service = build_service()
    if service.engine is None:
        raise SystemExit(f"the worker did not start: {service.startup_error}")
    loop = asyncio.new_event_loop()  # one loop for every job, as runpod's worker loop keeps one
    job = {"id": "bench", "input": job_input(nfe_step)}

    async def collect() -> list:
        return [item async for item in handler(job)]

    def run() -> Any:
        items = loop.run_until_complete(collect())
        if len(items) != 1 or "error" in items[0]:
            raise SystemExit(f"the worker failed: {items}")
        return items[0]

    def steps(runs: int) -> list:
        """The worker's own steps around inference, each timed alone."""
        voice = service.voices.get("default")
        engine = service.engine
        assert engine is not None  # loaded when the service started
        outputs = [run() for _ in range(3)]
        data = service.store.get(outputs[0]["key"])  # a job's real output, to encode and upload again
        wave = audio.decode_audio(data)[0]
        key = "generated/bench/steps.wav"
        timings = [output["timings"] for output in outputs]
        named = {
            "validate input (pydantic)": lambda: parse_job_input(job["input"]),
            "voice lookup (built-in, cached)": lambda: service.voices.get("default"),
            "text chunking": lambda: engine.split_text(
                BENCH_TEXT, voice.info.text, voice.samples.size / voice.sample_rate
            ),
            "encode WAV": lambda: audio.encode_audio(wave, engine.sample_rate, "wav"),
            "upload to S3 (moto, loopback)": lambda: service.store.put(key, data, "audio/wav"),
            "presign URL": lambda: service.store.presign(key, 3600),
        }
        rows = [["job total - inference (its own timings)", [t["total_s"] - t["inference_s"] for t in timings]]]
        for name, step in named.items():
            step()
            rows.append([name, [timed(step) for _ in range(runs)]])
        return rows

    def save(path: str) -> None:
        raise SystemExit("the worker's audio is in the bucket (audio_url); only the bare process saves")

    return run, steps, save


def _bare_child(
    nfe_step: int, lean: bool = False
) -> tuple[Callable[[], Any], Callable[[int], list], Callable[[str], None]]:
    import numpy as np
    import torchaudio
    import yaml

    from worker.engine import seed_everything
    from worker.lean_imports import import_f5_infer
    from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file
    from worker.schema import SynthesizeInput, parse_job_input

    f5 = import_f5_infer()  # f5_tts.infer.utils_infer, minus the training and ASR stacks (import time only)
    from f5_tts.model import DiT

    env = os.environ
    arch = yaml.safe_load(Path(env["F5TTS_MODEL_CFG"]).read_text())["model"]["arch"]
    with contextlib.redirect_stdout(io.StringIO()):
        model = f5.load_model(
            DiT, arch, env["F5TTS_CKPT_FILE"], mel_spec_type="vocos", vocab_file=env["F5TTS_VOCAB_FILE"], device="cpu"
        )
        vocoder = f5.load_vocoder("vocos", is_local=True, local_path=env["F5TTS_VOCODER_DIR"], device="cpu")
    defaults = parse_job_input(job_input(nfe_step))  # cfg, sway, speed, cross-fade: the contract's defaults
    assert isinstance(defaults, SynthesizeInput)
    ref_file = str(builtin_audio_file())

    def run_lean() -> Any:
        # The call the worker's engine makes: infer_batch_process's streaming path, in the calling thread.
        seed_everything(SEED)
        pieces = f5.infer_batch_process(
            torchaudio.load(ref_file),
            BUILTIN_REFERENCE_TEXT + " ",
            [BENCH_TEXT],
            model,
            vocoder,
            mel_spec_type="vocos",
            progress=None,
            target_rms=0.1,
            nfe_step=defaults.nfe_step,
            cfg_strength=defaults.cfg_strength,
            sway_sampling_coef=defaults.sway_sampling_coef,
            speed=defaults.speed,
            device="cpu",
            streaming=True,
            chunk_size=sys.maxsize,
        )
        wave, _ = next(pieces)
        pieces.close()
        return wave

    def run() -> Any:
        if lean:
            return run_lean()
        seed_everything(SEED)  # what the worker does before its (only) chunk
        with contextlib.redirect_stdout(io.StringIO()):
            wave, _, _ = f5.infer_process(
                ref_file,
                BUILTIN_REFERENCE_TEXT + " ",  # the transcript as f5-tts's own preprocessing leaves it
                BENCH_TEXT,
                model,
                vocoder,
                mel_spec_type="vocos",
                show_info=lambda *args: None,
                progress=None,
                target_rms=0.1,
                cross_fade_duration=defaults.cross_fade_duration,
                nfe_step=defaults.nfe_step,
                cfg_strength=defaults.cfg_strength,
                sway_sampling_coef=defaults.sway_sampling_coef,
                speed=defaults.speed,
                device="cpu",
            )
        return wave

    def steps(runs: int) -> list:
        def load() -> object:
            return torchaudio.load(ref_file)

        load()
        return [["bare: torchaudio.load(reference)", [timed(load) for _ in range(runs)]]]

    def save(path: str) -> None:
        np.save(path, run())

    return run, steps, save


def child_main(kind: str, nfe_step: int) -> None:
    """Serve the parent's commands, one JSON line each way, on the stdout this process started with."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (warnings, progress) goes to the log, not into the protocol
    if kind == "worker":
        run, steps, save = _worker_child(nfe_step)
    else:
        run, steps, save = _bare_child(nfe_step, lean=kind == "lean")

    def reply(value: Any) -> None:
        protocol.write(json.dumps(value) + "\n")
        protocol.flush()

    reply({"ready": True})
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "run":
            started = time.perf_counter()
            output = run()
            elapsed = time.perf_counter() - started
            reply({"s": elapsed, "output": output if kind == "worker" else None})
        elif command == "steps":
            reply({"rows": steps(int(argument))})
        elif command == "save":
            save(argument)
            reply({"saved": argument})
        elif command == "quit":
            return


class Child:
    """One contender's process, driven over its stdin/stdout."""

    def __init__(self, kind: str, nfe_step: int, env: dict[str, str], log_path: Path) -> None:
        self.kind = kind
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker_overhead", "--child", kind, "--nfe", str(nfe_step)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        self.ask(None)

    def ask(self, command: str | None) -> dict[str, Any]:
        if command is not None:
            self._stdin.write(command + "\n")
            self._stdin.flush()
        line = self._stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise SystemExit(f"the {self.kind} process ended; its log:\n{self.log_path.read_text()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self._stdin.write("quit\n")
                self._stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def check_same_audio(worker: Child, bares: list[Child], workdir: Path) -> float:
    """One job of each produces the same samples (up to the worker's 16-bit WAV); returns the audio's seconds."""
    import httpx
    import numpy as np
    import soundfile as sf

    output = worker.ask("run")["output"]
    if output["chunks"] != 1:
        raise SystemExit(f"the bench text became {output['chunks']} chunks; it must be one")
    worker_wave, rate = sf.read(io.BytesIO(httpx.get(output["audio_url"]).content), dtype="float32")
    for bare in bares:
        path = workdir / f"{bare.kind}.npy"
        bare.ask(f"save {path}")
        bare_wave = np.clip(np.load(path), -1.0, 1.0)
        if worker_wave.shape != bare_wave.shape:
            raise SystemExit(f"different audio: {worker_wave.shape} vs {bare.kind} {bare_wave.shape} samples")
        difference = float(np.max(np.abs(worker_wave - bare_wave)))
        if difference > 2 * PCM16_STEP:
            raise SystemExit(f"different audio: worker and {bare.kind} samples differ by up to {difference:.2e}")
    return worker_wave.size / rate


def child_env(workdir: Path, s3: Any) -> dict[str, str]:
    from devstack.model import tiny_model_env

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "F5TTS_"))}
    env.update(tiny_model_env())
    env.update(s3.worker_env())
    env["F5TTS_DATA_DIR"] = str(workdir / "data")
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved jobs of each contender (default 15)")
    parser.add_argument("--nfe", type=int, default=32, help="nfe_step of both (default 32, the contract's default)")
    parser.add_argument("--child", choices=["worker", "bare", "lean"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.nfe)
        return 0.0

    from devstack.s3 import LocalS3

    quiet_aws_env()
    print("== worker overhead: the handler's synthesize job (url delivery) vs bare f5-tts infer_process ==")
    print(machine_line())
    s3 = LocalS3()
    s3.start()
    children: dict[str, Child] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
            workdir = Path(tmp)
            env = child_env(workdir, s3)
            for kind in CONTENDERS:
                children[kind] = Child(kind, args.nfe, env, workdir / f"{kind}.log")
            seconds = check_same_audio(children["worker"], [children["bare"], children["lean"]], workdir)
            print(
                f"tiny F5 model on the CPU, nfe_step {args.nfe}, {len(BENCH_TEXT)} characters -> {seconds:.2f} s of "
                "audio; all three produce the same samples"
            )
            for _ in range(2):  # warm all: allocator, kernels, the HTTP connection pool
                for child in children.values():
                    child.ask("run")
            times = interleaved_remote(children, args.rounds)
            runs = max(args.rounds, 10)
            step_rows = [
                timing_row(name, values, scale=1000)
                for kind in ("worker", "bare")
                for name, values in children[kind].ask(f"steps {runs}")["rows"]
            ]
    finally:
        for child in children.values():
            child.close()
        s3.stop()

    ratio = median(times["worker"]) / median(times["bare"])
    print_table(
        [*TIMING_HEADERS, "worker / it"],
        [
            [
                *timing_row(CONTENDERS[kind], times[kind]),
                "" if kind == "worker" else median(times["worker"]) / median(times[kind]),
            ]
            for kind in CONTENDERS
        ],
        title="one job end to end, alternating (each process times its own job)",
    )
    print_table(["step", "median ms", "min ms", "max ms", "runs"], step_rows, title="steps outside inference")
    print(
        f"\nworker / infer_process: ratio of medians {ratio:.3f}, median of per-round ratios "
        f"{paired_ratio(times['worker'], times['bare']):.3f}; worker / lean call: ratio of medians "
        f"{median(times['worker']) / median(times['lean']):.3f}"
    )
    headline("worker_overhead_ratio", ratio)
    return ratio


def interleaved_remote(children: dict[str, Child], rounds: int) -> dict[str, list[float]]:
    """`interleaved`, with each job's time as its own process measured it (no pipe latency)."""
    measured: dict[str, list[float]] = {name: [] for name in children}

    def runner(name: str) -> Callable[[], None]:
        return lambda: measured[name].append(children[name].ask("run")["s"])

    interleaved({name: runner(name) for name in children}, rounds)
    return measured


if __name__ == "__main__":
    main()
