"""The examples in docs/client.md run: each Python block, as written, against the devstack (the environment
variables point it there), in a scratch directory holding the `alice.wav` the examples upload."""

from __future__ import annotations

import os
import re
import shutil

from tests.support import REPO_ROOT, run_python
from worker.model_facts import builtin_audio_file

DOCS = REPO_ROOT / "docs" / "client.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_every_python_example_in_the_docs_runs(devstack, tmp_path):
    assert len(BLOCKS) >= 5  # quick start sync and async, streaming, jobs, errors
    shutil.copy(builtin_audio_file(), tmp_path / "alice.wav")
    env = {**os.environ, "RUNPOD_API_KEY": devstack.api_key, "F5TTS_ENDPOINT_URL": devstack.endpoint_url}
    env.pop("F5TTS_ENDPOINT_ID", None)
    for number, block in enumerate(BLOCKS):
        script = tmp_path / f"example_{number}.py"
        script.write_text(block)
        run = run_python(script.name, cwd=tmp_path, env=env, timeout=180)
        assert run.returncode == 0, f"example {number} failed:\n{block}\n{run.stderr}"
    for produced in ("hello.mp3", "alice-hi.wav", "line-2.wav", "video.srt", "story.mp3"):
        assert (tmp_path / produced).stat().st_size > 0, produced
