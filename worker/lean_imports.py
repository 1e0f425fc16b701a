"""Lean imports: f5-tts's inference module and the runpod SDK, imported without the start-up costs they pay
for features a worker never uses (training, ASR, plotting; a CPU probe in a second interpreter, SSH helpers).

Each import puts stand-ins (worker.stand_ins) in sys.modules for the modules it skips, only while it runs;
anything imported later loads the real module on first use.
"""

from __future__ import annotations

import importlib
import logging
import platform
import types
from pathlib import Path

from worker.stand_ins import DeferredAttribute, StandIn, deferred, import_with_stand_ins

log = logging.getLogger("worker.lean_imports")

# What worker.engine calls in f5_tts.infer.utils_infer: the self-check proves an install has them all.
F5_INFER_FUNCTIONS = ("load_model", "load_vocoder", "infer_batch_process")


def f5_stand_ins() -> dict[str, types.ModuleType]:
    # f5_tts/model/__init__ imports the Trainer: accelerate, wandb, datasets, pandas (~2 s). Never used here.
    trainer = StandIn("f5_tts.model.trainer")
    trainer.Trainer = deferred("f5_tts.model.trainer", "Trainer")
    # utils_infer does `from transformers import pipeline` for its Whisper path (~3.5 s of transformers
    # modules). Whisper runs only when a caller asks for transcription; the deferred call imports it then.
    transformers = StandIn("transformers")
    transformers.pipeline = deferred("transformers", "pipeline")
    # utils_infer imports matplotlib.pylab (~0.5 s) for its spectrogram plots. `use("Agg")` is dropped: the
    # real matplotlib picks Agg by itself on a headless worker, if a plot is ever drawn.
    matplotlib = StandIn("matplotlib")
    matplotlib.use = lambda *args, **kwargs: None
    matplotlib.pylab = StandIn("matplotlib.pylab")
    # f5_tts.model.modules takes librosa's mel filterbank for the BigVGAN mel only (~1.5 s: librosa pulls in
    # scipy.signal, numba and pooch). The Vocos mel the worker uses is computed by torchaudio.
    librosa_filters = StandIn("librosa.filters")
    librosa_filters.mel = deferred("librosa.filters", "mel")
    # x_transformers imports einx (~2 s: sympy and torch._dynamo) for relative-position biases; f5-tts takes
    # only its rotary embedding, which does not use einx. Any einx call still reaches the real module.
    einx = StandIn("einx")
    # torchdiffeq imports scipy.integrate (~0.7 s) for its `scipy_solver` method; f5-tts integrates with euler.
    scipy_integrate = StandIn("scipy.integrate")
    scipy_integrate.solve_ivp = deferred("scipy.integrate", "solve_ivp")
    # f5_tts.model.utils imports pypinyin (~0.3 s: its phrase dictionary) to romanise Chinese characters; it is
    # first needed, and then imported, when a text contains one (`lazy_pinyin(seg, style=Style.TONE3)`).
    pypinyin = StandIn("pypinyin")
    pypinyin.lazy_pinyin = deferred("pypinyin", "lazy_pinyin")
    pypinyin.Style = DeferredAttribute("pypinyin", "Style")
    modules = (trainer, transformers, matplotlib, matplotlib.pylab, librosa_filters, einx, scipy_integrate, pypinyin)
    return {m.__name__: m for m in modules}


def import_f5_infer() -> types.ModuleType:
    """`f5_tts.infer.utils_infer`, imported without the training, ASR and plotting stacks it drags in.

    Importing it as-is costs ~11 s on a cold process, most of it for code inference never runs. For the
    import, modules that were not imported yet get a stand-in (`f5_stand_ins`); they are removed right after,
    so anything imported later (Whisper for transcription, a plot) loads the real module on first use.
    A module that is already imported is used as it is.
    """
    return import_with_stand_ins("f5_tts.infer.utils_infer", f5_stand_ins())


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "Unable to get processor info."


def import_runpod() -> types.ModuleType:
    """`runpod`, imported without two start-up costs it pays for features a worker never uses.

    At import, runpod's debugger module asks py-cpuinfo for the processor's name, which starts a second Python
    interpreter (~1.1 s of a ~4.7 s cold start on the tiny model), and its CLI's SSH helpers import paramiko
    (~0.2 s). While runpod is imported, `cpuinfo` is a stand-in that reads the name from /proc/cpuinfo and
    `paramiko` one that imports the real module on first use; both are removed right after. Modules already
    imported are used as they are.
    """
    cpuinfo = StandIn("cpuinfo")
    cpuinfo.get_cpu_info = lambda: {"brand_raw": _processor_name()}
    return import_with_stand_ins("runpod", {"cpuinfo": cpuinfo, "paramiko": StandIn("paramiko")})


def load_runpod() -> tuple[types.ModuleType, str | None]:
    """`runpod`, and why its lean import failed (None when it did not).

    A failed lean import (a runpod upgrade that breaks a stand-in) falls back to the plain import, so the worker
    can still answer: every job then gets model_unavailable with the reason, as for a failed model load, instead
    of a crash loop that RunPod bills and that shows nobody the cause.
    """
    try:
        return import_runpod(), None
    except Exception as exc:
        log.exception("runpod's lean import failed; every job will get model_unavailable")
        return importlib.import_module("runpod"), f"runpod's import failed: {type(exc).__name__}: {exc}"
