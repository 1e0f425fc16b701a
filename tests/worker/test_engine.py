"""worker.engine and worker.tiny: f5-tts's real loaders and inference on the tiny random-weight checkpoint."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tests.support import run_python
from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import Engine
from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file
from worker.model_files import EngineLoadError
from worker.schema import ContractError, ErrorBody, ErrorCode
from worker.service import WorkerService
from worker.tiny import build_tiny_checkpoint

pytestmark = pytest.mark.timeout(300)

REF_TEXT = BUILTIN_REFERENCE_TEXT
LONG_TEXT = (
    "I don't really care what you call me. I've been a silent spectator, watching species evolve, empires rise "
    "and fall. But always remember, I am mighty and enduring. Respect me and I'll nurture you; ignore me and you "
    "shall face the consequences. The rivers carve the valleys, the winds shape the mountains, and the seasons "
    "turn without asking anyone for permission."
)
# Two chunks with the example reference (f5-tts's budget for it is ~159 bytes a chunk): the cheapest multi-chunk job.
TWO_CHUNKS = (
    "The rivers carve the valleys, and the winds shape the mountains over the ages. "
    "The seasons turn without asking anyone for permission, and the tides follow the moon."
)
FAST = {"nfe_step": 4}  # flow-matching steps: few suffice to exercise the path


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, int]:
    """f5-tts's example reference clip (24 kHz mono, ~5.3 s); its transcript is REF_TEXT."""
    samples, rate = sf.read(builtin_audio_file(), dtype="float32")
    return samples, rate


def test_loads_the_tiny_checkpoint_through_f5_loaders(engine: Engine, tiny_model_env: dict[str, str]) -> None:
    from f5_tts.model import CFM, DiT
    from vocos import Vocos

    assert isinstance(engine.model, CFM) and isinstance(engine.model.transformer, DiT)
    assert isinstance(engine.vocoder, Vocos)
    assert (engine.sample_rate, engine.device, engine.dtype) == (24000, "cpu", "float32")
    assert (engine.model_name, engine.attn_backend) == ("F5TTS_tiny", "torch")
    assert len(engine.model.transformer.transformer_blocks) == 2 and engine.model.transformer.dim == 64
    # load_checkpoint took the EMA weights (`ema_model.` prefix stripped) from the safetensors file.
    stored = load_file(tiny_model_env["F5TTS_CKPT_FILE"])
    assert torch.equal(engine.model.transformer.proj_out.weight, stored["ema_model.transformer.proj_out.weight"])


def test_long_text_is_generated_in_several_chunks(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference
    chunks = list(engine.generate(samples, rate, REF_TEXT, LONG_TEXT, seed=1, **FAST))
    assert len(chunks) > 1
    assert " ".join(c.text for c in chunks).split() == LONG_TEXT.split()  # the chunk plan: no word lost
    for chunk in chunks:
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1 and chunk.samples.size > 0
        assert np.isfinite(chunk.samples).all() and chunk.inference_s > 0
    # f5-tts sizes the audio by the reference's speaking rate: more text, more audio.
    per_char = [c.samples.size / len(c.text) for c in (chunks[0], chunks[-1])]
    assert per_char[0] > per_char[1] / 2 and per_char[1] > per_char[0] / 2


def test_generation_is_lazy_one_chunk_per_step(
    engine: Engine, reference: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from f5_tts.model import CFM

    samples, rate = reference
    sample = CFM.sample
    sampled: list[int] = []  # one entry per flow-matching run of the model

    def counted_sample(self: object, *args: object, **kwargs: object) -> object:
        sampled.append(len(sampled))
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(CFM, "sample", counted_sample)
    stream = engine.generate(samples, rate, REF_TEXT, TWO_CHUNKS, seed=1, **FAST)
    assert sampled == []  # the inputs are checked and the text planned, but nothing is generated yet
    first = next(stream)
    assert (first.index, first.count, len(sampled)) == (0, 2, 1) and first.samples.size > 0
    second = next(stream)
    assert (second.index, len(sampled)) == (1, 2)
    assert next(stream, None) is None and len(sampled) == 2


def test_very_short_text_gives_audio(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference
    (chunk,) = engine.generate(samples, rate, REF_TEXT, "Hi.", seed=0)
    assert chunk.text == "Hi." and chunk.samples.size > 0.1 * engine.sample_rate


def test_same_seed_same_audio_other_seed_other_audio(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference

    def waves(seed: int) -> list[np.ndarray]:
        return [c.samples for c in engine.generate(samples, rate, REF_TEXT, TWO_CHUNKS, seed=seed, **FAST)]

    first, again, other = waves(42), waves(42), waves(43)
    assert len(first) == 2
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_seeded_output_survives_interleaved_jobs(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference
    alone = [c.samples for c in engine.generate(samples, rate, REF_TEXT, TWO_CHUNKS, seed=7, **FAST)]
    job = engine.generate(samples, rate, REF_TEXT, TWO_CHUNKS, seed=7, **FAST)
    interleaved = []
    for chunk in job:  # another job runs between every two chunks, as with worker concurrency > 1
        interleaved.append(chunk.samples)
        list(engine.generate(samples, rate, REF_TEXT, "Something else.", seed=99, **FAST))
    assert all(np.array_equal(a, b) for a, b in zip(alone, interleaved, strict=True))


def test_a_resampled_reference_works(engine: Engine, reference: tuple[np.ndarray, int]) -> None:
    samples, rate = reference
    import soxr

    (chunk,) = engine.generate(soxr.resample(samples, rate, 16000), 16000, REF_TEXT, "Hello there.", seed=0, **FAST)
    assert chunk.samples.size > 0


@pytest.mark.parametrize(
    ("ref_text", "cut", "text", "field"),
    [("  ", None, "Hello.", "ref_text"), (REF_TEXT, 0, "Hello.", "ref_audio"), (REF_TEXT, None, "", "text")],
)
def test_empty_inputs_are_refused(engine: Engine, reference, ref_text, cut, text, field) -> None:
    samples, rate = reference
    with pytest.raises(ContractError) as refused:
        engine.generate(samples[:cut], rate, ref_text, text, seed=0)
    assert (refused.value.code, refused.value.body.field) == (ErrorCode.invalid_input, field)


def test_warmup_speaks_the_builtin_reference_voice(engine: Engine, monkeypatch) -> None:
    calls = []
    real_generate = engine.generate

    def spy(samples, sample_rate, ref_text, text, **kwargs):
        calls.append((samples.size / sample_rate, ref_text, text, kwargs))
        return real_generate(samples, sample_rate, ref_text, text, **kwargs)

    monkeypatch.setattr(engine, "generate", spy)
    seconds = engine.warmup()
    assert seconds > 0
    ((ref_seconds, ref_text, text, kwargs),) = calls
    assert ref_text == BUILTIN_REFERENCE_TEXT and text == "Hello." and kwargs["nfe_step"] == 4
    assert 5 < ref_seconds < 6  # f5-tts's example clip, ~5.3 s


def test_transcription_without_the_whisper_extra_is_a_coded_error(engine: Engine, reference, tmp_path) -> None:
    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("the Whisper extra is installed (make setup WITH_WHISPER=1)")
    settings = Settings(
        model=ModelSettings(_env_file=None, warmup=False, auto_transcribe=True),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    wav = io.BytesIO()
    sf.write(wav, reference[0][: 3 * reference[1]], reference[1], format="WAV")
    job = {"text": "Hello.", "ref_audio": {"base64": base64.b64encode(wav.getvalue()).decode()}}
    (item,) = service.run(job)
    error = ErrorBody.model_validate_json(item["error"])
    assert error.code == ErrorCode.invalid_input
    assert "Whisper extra" in error.message and "--build-arg WITH_WHISPER=true" in error.message
    assert "ref_text" in error.message


def test_flash_attn_setting_reaches_the_model(make_model_settings) -> None:
    settings = make_model_settings(attn_backend="flash_attn")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        # f5-tts's attention refuses the backend while building the model: the setting got there.
        with pytest.raises(EngineLoadError, match="flash-attn"):
            Engine.load(settings)
    else:  # a machine with flash-attn: build it, but do not run it on the CPU
        from f5_tts.model import DiT

        loaded = Engine.load(settings)
        assert loaded.attn_backend == "flash_attn"
        transformer = loaded.model.transformer
        assert isinstance(transformer, DiT)
        assert transformer.transformer_blocks[0].attn.processor.attn_backend == "flash_attn"


def test_dtype_setting_is_applied(make_model_settings, reference: tuple[np.ndarray, int]) -> None:
    loaded = Engine.load(make_model_settings(dtype="bfloat16"))
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    samples, rate = reference
    (chunk,) = loaded.generate(samples, rate, REF_TEXT, "Hi.", seed=0, **FAST)
    assert chunk.samples.dtype == np.float32 and chunk.samples.size > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # File resolution's own failures: tests/worker/test_model_files.py.
        ({"ckpt_file": "no/such/model.safetensors"}, "checkpoint not found"),
        ({"device": "tpu"}, "F5TTS_DEVICE"),
    ],
)
def test_load_failures_are_clear(make_model_settings, overrides: dict, message: str) -> None:
    with pytest.raises(EngineLoadError, match=message):
        Engine.load(make_model_settings(**overrides))


LEAN_IMPORT_PROBE = """
import json, sys
from worker.lean_imports import F5_INFER_FUNCTIONS, import_f5_infer
f5 = import_f5_infer()
skipped = ("transformers", "f5_tts.model.trainer", "wandb", "datasets", "accelerate", "gradio", "matplotlib",
           "librosa", "pandas", "einx", "sympy", "scipy.integrate", "torch._dynamo", "pypinyin")
loaded = sorted(m for m in sys.modules if any(m == s or m.startswith(s + ".") for s in skipped))
usable = all(callable(getattr(f5, name)) for name in F5_INFER_FUNCTIONS)
# What was skipped still works when asked for: the stand-ins are gone, the real modules load on first use.
try:
    f5.pipeline("no-such-task")  # F5's Whisper path goes through transformers' real pipeline()
    asr = "no error"
except KeyError as exc:
    asr = "transformers: " + str(exc)[:40]
except ModuleNotFoundError as exc:  # the Whisper extra is not installed (requirements/whisper.in)
    asr = "not installed: " + str(exc.name)
import x_transformers.x_transformers as xt
einx_call = xt.einx.subtract.__module__
print(json.dumps({"loaded": loaded, "usable": usable, "asr": asr, "einx": einx_call}))
"""


@pytest.mark.integration  # starts a Python process
def test_importing_the_engine_skips_training_asr_and_plotting_stacks() -> None:
    # A fresh interpreter: what `import worker.engine` plus loading f5-tts's inference module pulls in.
    result = run_python("-c", LEAN_IMPORT_PROBE, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [] and report["usable"]
    if importlib.util.find_spec("transformers") is None:
        assert report["asr"] == "not installed: transformers"  # the real import was attempted on first use
    else:
        assert report["asr"].startswith("transformers: ") and "Unknown task" in report["asr"]
    assert report["einx"].startswith("einx")


@pytest.mark.integration  # starts a Python process
def test_tiny_checkpoint_is_reused_and_deterministic(tiny_model_env: dict[str, str], tmp_path: Path) -> None:
    ckpt = Path(tiny_model_env["F5TTS_CKPT_FILE"])
    before = ckpt.stat().st_mtime_ns
    assert build_tiny_checkpoint(ckpt.parent) == tiny_model_env
    assert ckpt.stat().st_mtime_ns == before  # reused, not rebuilt

    # The command line builds the same weights elsewhere and prints the environment.
    result = run_python("-m", "worker.tiny", str(tmp_path / "again"), check=True)
    printed = dict(line.split("=", 1) for line in result.stdout.strip().splitlines())
    assert set(printed) == set(tiny_model_env) and printed["F5TTS_DEVICE"] == "cpu"

    def digest(path: str) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    assert digest(printed["F5TTS_CKPT_FILE"]) == digest(tiny_model_env["F5TTS_CKPT_FILE"])
    for name in ("config.yaml", "pytorch_model.bin"):
        fresh, first = Path(printed["F5TTS_VOCODER_DIR"]) / name, Path(tiny_model_env["F5TTS_VOCODER_DIR"]) / name
        if name.endswith(".bin"):
            assert all(torch.equal(v, torch.load(first)[k]) for k, v in torch.load(fresh).items())
        else:
            assert fresh.read_bytes() == first.read_bytes()
