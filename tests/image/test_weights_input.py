"""Dockerfile.runpod's weights step, built for real with WEIGHTS=<a Hugging Face home in the build context> and the
default WEIGHTS_DTYPE=float16: `worker.prefetch --float16` in the image, the settings it writes, `--check`.

The Hugging Face home holds the tiny model's files where the published ones would be (F5TTS_v1_Base's checkpoint
and vocabulary, Vocos, the word aligner): the published weights cannot be downloaded here, and the step does not
load the model (the build's self-check checks the files; the tiny aligner is loaded). The build reuses the layers
of the session's image (tests/image/conftest.py) up to the weights.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.image.conftest import BUILD_TIMEOUT_S, BuiltImage, make_image
from tests.support import REPO_ROOT, hf_cache_file
from worker.model_facts import ALIGNER_BUNDLE, PUBLISHED_MODELS, VOCOS_FILES

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 900)  # the first test waits for the session's build
BAKED = "/opt/hf/f5tts-float16/model_1250000.float16.safetensors"
# Run in the image: the settings the worker reads, what the baked checkpoint holds, and what is left of the
# float32 one in the Hugging Face cache.
INSPECT = """
import json
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from worker.prefetch import settings_env
env = settings_env()
with safe_open(env["F5TTS_CKPT_FILE"], "np") as f:
    dtypes = sorted({str(f.get_tensor(name).dtype) for name in f.keys()})
left = try_to_load_from_cache("SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors")
print(json.dumps({"env": env, "dtypes": dtypes, "float32_left": isinstance(left, str)}))
"""


def _hf_home(dest: Path, tiny: dict[str, str]) -> None:
    """A Hugging Face home as `HF_HOME=... python -m worker.prefetch` leaves it, with the tiny model's files."""
    published = PUBLISHED_MODELS["F5TTS_v1_Base"]
    sources = {
        published.checkpoint: Path(tiny["F5TTS_CKPT_FILE"]),
        published.vocab: Path(tiny["F5TTS_VOCAB_FILE"]),
        **{hub_file: Path(tiny["F5TTS_VOCODER_DIR"]) / hub_file.filename for hub_file in VOCOS_FILES},
    }
    for hub_file, source in sources.items():
        shutil.copyfile(source, hf_cache_file(dest / "hub", hub_file.repo_id, hub_file.filename))
    shutil.copytree(tiny["F5TTS_ALIGNER_DIR"], dest / "f5tts-aligner" / ALIGNER_BUNDLE.lower())
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user, as a real download is


def test_local_weights_are_baked_in_float16_and_checked(
    built_image: BuiltImage, tiny_model_env: dict[str, str], tmp_path: Path
) -> None:
    if built_image.build_s == 0.0:
        pytest.skip("F5TTS_TEST_IMAGE names a prebuilt image: this build needs the session's layers")
    inputs = REPO_ROOT / "image-inputs" / f"test-{uuid.uuid4().hex[:8]}"
    _hf_home(inputs / "hf", tiny_model_env)
    tag = f"localhost/f5tts-runpod:test-weights-{uuid.uuid4().hex[:8]}"
    common = {"BASE_IMAGE": built_image.base, "FLASH_ATTN": "none", "WEIGHTS": f"{inputs.relative_to(REPO_ROOT)}/hf"}
    if built_image.containers.builder != "docker":
        common["IMAGE_BUILD_FLAGS"] = "--force-rm"
    try:
        log = tmp_path / "bad-dtype.log"
        assert make_image(log, tag, WEIGHTS_DTYPE="bfloat16", **common).returncode != 0
        assert "WEIGHTS_DTYPE: float16 or float32, not bfloat16" in log.read_text()

        log = tmp_path / "float16.log"
        built = make_image(log, tag, **common)
        assert built.returncode == 0, log.read_text()[-6000:]
        assert "prefetch: weights for F5TTS_v1_Base, the vocoder and the aligner are cached" in log.read_text()

        containers = built_image.containers
        ran = containers.run(tag, f"f5tts-test-{uuid.uuid4().hex[:8]}", ["python", "-c", INSPECT])
        assert ran.returncode == 0, ran.stderr
        seen = json.loads(ran.stdout)
        assert seen["env"]["F5TTS_CKPT_FILE"] == BAKED
        assert seen["env"]["F5TTS_VOCAB_FILE"] == "/opt/hf/f5tts-float16/vocab.txt"
        assert "float16" in seen["dtypes"] and "float32" not in seen["dtypes"]
        assert seen["float32_left"] is False  # the float32 checkpoint is not in the image
        healthcheck = containers.config(tag)["Healthcheck"]["Test"][1:]  # after "CMD"
        checked = containers.run(tag, f"f5tts-test-{uuid.uuid4().hex[:8]}", healthcheck)
        assert checked.returncode == 0, checked.stderr
    finally:
        shutil.rmtree(inputs)
        built_image.containers.remove_image(tag, prune=False)  # the session's layers stay for the other tests
