"""Start-up faults: `python -m worker.handler --self-check` (what the image build runs), StandIn failures that
say what changed, a runpod import failure and a missing GPU kept as model_unavailable instead of a crash loop."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.support import REPO_ROOT, run_handler, run_python, worker_env
from worker.config import Settings
from worker.engine import cuda_unusable_reason
from worker.self_check import main as self_check_main
from worker.self_check import run_checks

pytestmark = pytest.mark.timeout(300)

NO_GPU = not torch.cuda.is_available()


@pytest.mark.integration  # starts a Python process
def test_self_check_passes_through_the_real_entry_point(tiny_model_env, tmp_path):
    done = run_python("-m", "worker.handler", "--self-check", cwd=tmp_path, env=worker_env(tmp_path, **tiny_model_env))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("self-check ok")]
    names = [line.removeprefix("self-check ok").strip().partition(":")[0] for line in lines]
    assert names == ["runpod", "f5-tts", "flash-attn", "model files", "aligner", "device"]
    assert "runpod 1." in lines[0] and "f5-tts 1." in lines[1]
    assert "skipped (F5TTS_ATTN_BACKEND=torch: the DiT runs on torch's attention)" in lines[2]
    assert "model.safetensors, vocabulary and Vocos present and complete" in lines[3]
    assert "M parameters loaded, 29 labels" in lines[4]
    assert "F5TTS_DEVICE=cpu -> cpu (CPU), dtype float32" in lines[5]
    assert done.stdout.splitlines()[-1].startswith("self-check passed")


def test_self_check_names_a_truncated_checkpoint_and_a_missing_gpu(make_model_settings, tiny_model_env, tmp_path):
    broken = tmp_path / "model.safetensors"
    data = Path(tiny_model_env["F5TTS_CKPT_FILE"]).read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # an interrupted download
    settings = Settings(model=make_model_settings(ckpt_file=str(broken), device="cuda"))

    results = {r.name: r for r in run_checks(settings)}
    assert not results["model files"].ok
    assert f"{broken}: truncated or corrupt safetensors" in results["model files"].detail
    assert results["runpod"].ok and results["f5-tts"].ok
    # The device check asks CUDA itself: it passes on a usable GPU and names CUDA's reason where there is none.
    reason = cuda_unusable_reason()
    if reason is None:
        assert results["device"].ok and f"-> cuda ({torch.cuda.get_device_name()})" in results["device"].detail
    else:
        assert not results["device"].ok
        assert f"F5TTS_DEVICE='cuda' but no usable GPU: {reason}" in results["device"].detail

    # A truncated aligner (or none) fails its own check, naming the file.
    aligner = tmp_path / "aligner"
    shutil.copytree(tiny_model_env["F5TTS_ALIGNER_DIR"], aligner)
    weights = aligner / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    aligner_settings = Settings(model=make_model_settings(aligner_dir=aligner))
    aligner_results = {r.name: r for r in run_checks(aligner_settings, device=False)}
    assert aligner_results["model files"].ok and not aligner_results["aligner"].ok
    assert f"{weights}: truncated or corrupt safetensors" in aligner_results["aligner"].detail
    shutil.rmtree(aligner)
    missing = {r.name: r for r in run_checks(aligner_settings, device=False)}["aligner"]
    assert not missing.ok and f"{weights}: missing" in missing.detail

    # At image build there is no GPU: the device check is skipped, the other checks still run.
    skipped = {r.name: r for r in run_checks(settings, device=False)}
    assert skipped["device"].ok and skipped["device"].detail == "skipped (--skip-device)"
    assert not skipped["model files"].ok


def test_self_check_exit_status_and_flash_attn_check(make_model_settings, monkeypatch):
    from worker import self_check

    settings = Settings(model=make_model_settings(attn_backend="flash_attn"))
    monkeypatch.setattr(self_check, "get_settings", lambda: settings)
    out = io.StringIO()
    status = self_check_main(["--self-check", "--skip-device"], out=out)
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        assert status == 1
        assert "self-check FAIL flash-attn: ModuleNotFoundError: No module named 'flash_attn'" in out.getvalue()
        assert out.getvalue().splitlines()[-1].startswith("self-check failed: flash-attn")
    else:
        from importlib.metadata import version

        assert status == 0, out.getvalue()
        lines = out.getvalue().splitlines()
        imported = f"flash-attn: flash-attn {version('flash-attn')} imported"
        assert any(line.startswith("self-check ok") and line.endswith(imported) for line in lines), lines
        assert lines[-1].startswith("self-check passed")


STAND_IN_PROBE = """
from worker.lean_imports import f5_stand_ins
from worker.stand_ins import StandInError, import_with_stand_ins
stand_ins = f5_stand_ins()
del stand_ins["transformers"].pipeline  # as if f5-tts now imported a name the stand-in does not provide
try:
    import_with_stand_ins("f5_tts.infer.utils_infer", stand_ins)
except StandInError as exc:
    print(exc)
"""


@pytest.mark.integration  # starts a Python process
def test_a_broken_stand_in_names_the_module_attribute_and_versions():
    done = run_python("-c", STAND_IN_PROBE, timeout=120, check=True)
    from importlib.metadata import version

    message = done.stdout.strip()
    assert message.startswith("importing f5_tts.infer.utils_infer (f5-tts ")
    assert f"f5-tts {version('f5-tts')}" in message
    assert "it needs transformers.pipeline, which the stand-in for transformers (transformers" in message


def test_a_missing_real_module_is_named_as_a_missing_dependency(tmp_path, monkeypatch):
    from worker.stand_ins import StandIn, StandInError, import_with_stand_ins

    (tmp_path / "needs_missing_dep.py").write_text("import surely_not_installed_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StandInError, match="it imports surely_not_installed_dep, which is not installed"):
        import_with_stand_ins("needs_missing_dep", {"unrelated": StandIn("unrelated")})


RUNPOD_BROKEN_MAIN = """
import sys
from worker import handler, lean_imports
from worker.stand_ins import StandInError

def broken():
    raise StandInError("importing runpod (runpod 9.9) with stand-ins failed: it needs cpuinfo.new_probe")

lean_imports.import_runpod = broken
sys.argv = ["worker.handler", "--test_input", '{"input": {"action": "health"}}']
handler.main()
"""


@pytest.mark.integration  # starts a Python process
def test_a_runpod_import_failure_is_kept_and_every_job_gets_model_unavailable(tiny_model_env, tmp_path):
    env = worker_env(tmp_path, **tiny_model_env, F5TTS_DATA_DIR=str(tmp_path / "data"), RUNPOD_SKIP_GPU_CHECK="true")
    done = run_python("-c", RUNPOD_BROKEN_MAIN, cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]  # runpod's --test_input code for a failed job
    error = json.loads(done.stdout.split("failed with error: ")[1].splitlines()[0])
    assert error["code"] == "model_unavailable"
    assert "runpod's import failed: StandInError" in error["message"] and "cpuinfo.new_probe" in error["message"]


@pytest.mark.integration  # starts a Python process
@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a usable GPU")
@pytest.mark.parametrize(("device", "extra"), [("cuda", {}), ("auto", {"RUNPOD_POD_ID": "pod-123"})])
def test_no_gpu_means_model_unavailable_with_the_reason_never_a_cpu_worker(tiny_model_env, tmp_path, device, extra):
    done = run_handler(tmp_path, {**tiny_model_env, "F5TTS_DEVICE": device, **extra}, {"action": "health"})
    assert done.returncode == 1
    error = json.loads(done.stdout.split("failed with error: ")[1].splitlines()[0])
    assert error["code"] == "model_unavailable"
    assert f"F5TTS_DEVICE='{device}'" in error["message"] and "no usable GPU" in error["message"]


def test_tests_run_on_the_runtime_set_without_whisper():
    """The test environment is requirements/worker.txt + dev.txt (`make setup` syncs it): what excludes.txt and
    whisper.in keep out of the image is not installed here either, so a test needing it fails here."""
    from importlib.metadata import PackageNotFoundError, distribution

    kept_out = [
        line.split("#")[0].strip()
        for name in ("excludes.txt", "whisper.in")
        for line in (REPO_ROOT / "requirements" / name).read_text().splitlines()
    ]
    installed = []
    for name in filter(None, kept_out):
        with contextlib.suppress(PackageNotFoundError):
            installed.append(distribution(name).metadata["Name"])
    # transformers is there only after `make setup WITH_WHISPER=1` (the image's WITH_WHISPER=true).
    assert set(installed) <= {"transformers"}, f"run `make setup`: the venv has {installed}, which the image lacks"
    assert shutil.which("ffmpeg"), "scripts/install-system-deps.sh installs FFmpeg"
