"""`python -m devstack up` and `python -m devstack demo` as a developer runs them: child processes, real signals."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys

import httpx
import pytest
import soundfile

from tests.devstack.helpers import ECHO_WORKER, assert_stack_gone, devstack_up
from tests.support import REPO_ROOT


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_up_prints_ready_serves_jobs_and_stops_cleanly_on_a_signal(tmp_path, stop_signal):
    log_path = tmp_path / "up.log"
    args = ["--workers", "2", "--port", "0", "--model", "none", "--worker-cmd", shlex.join(ECHO_WORKER)]
    with devstack_up(args, log_path) as (proc, ready):
        match = re.fullmatch(r"ready (http://127\.0\.0\.1:\d+/v2/local) (\S+)\n", ready)
        assert match, f"unexpected first line {ready!r}"
        endpoint_url, api_key = match.groups()
        answer = httpx.post(
            f"{endpoint_url}/runsync",
            json={"input": {"echo": "up"}},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        ).json()
        assert answer["status"] == "COMPLETED" and answer["output"][0]["echo"] == "up"
        pids = [int(pid) for pid in re.findall(r"started local-worker-\d \(pid (\d+)\)", log_path.read_text())]
        assert len(pids) == 2
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0
    assert_stack_gone(pids, f"{endpoint_url}/health")


def test_demo_writes_a_decodable_wav_and_announces_the_noise_model(tmp_path):
    out = tmp_path / "out" / "hello.wav"
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "demo", "--out", str(out), "--model", "tiny"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = soundfile.info(str(out))
    assert info.samplerate == 24000 and info.frames > 0
    assert "ITS AUDIO IS NOISE" in done.stderr
    assert f"wrote {out}" in done.stderr
