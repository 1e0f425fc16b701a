"""`python -m worker.handler` as the image runs it: runpod's own `--test_input` mode in a subprocess, with the
tiny checkpoint selected through the environment exactly as in production."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.support import run_handler, run_python, worker_env


@pytest.mark.integration  # starts a Python process
@pytest.mark.timeout(300)
def test_test_input_runs_one_job_through_the_real_entry_point(tiny_model_env, tmp_path):
    done = run_handler(
        tmp_path, tiny_model_env, {"text": "Hello from the entry point.", "delivery": "base64", "seed": 5}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "completed successfully" in done.stdout
    assert "'seed': 5" in done.stdout and "'audio_base64': 'UklGR" in done.stdout  # RIFF header, base64


@pytest.mark.integration  # starts a Python process
@pytest.mark.timeout(300)
def test_a_model_that_cannot_load_fails_jobs_with_model_unavailable_instead_of_crashing(tiny_model_env, tmp_path):
    broken = {**tiny_model_env, "F5TTS_CKPT_FILE": str(tmp_path / "missing.safetensors")}
    done = run_handler(tmp_path, broken, {"action": "health"})
    assert done.returncode == 1  # runpod's --test_input exit code for a failed job
    assert "model_unavailable" in done.stdout and "missing.safetensors" in done.stdout
    assert "Traceback" not in done.stdout.split("failed with error:")[-1]


RUNPOD_IMPORT_PROBE = """
import json, sys
from worker.lean_imports import import_runpod
runpod = import_runpod()
from runpod.serverless.utils import rp_debugger  # asked py-cpuinfo (a second interpreter) for the CPU name
print(json.dumps({
    "serverless": hasattr(runpod.serverless, "start"),
    "paramiko_loaded": "paramiko" in sys.modules,
    "cpuinfo_left": "cpuinfo" in sys.modules,
    "cpu_name": rp_debugger.PROCESSOR,
}))
"""


@pytest.mark.integration  # starts a Python process
def test_runpod_is_imported_without_its_cpu_probe_subprocess_or_ssh_stack():
    done = run_python("-c", RUNPOD_IMPORT_PROBE, timeout=120, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["serverless"] is True
    assert probe["paramiko_loaded"] is False
    assert probe["cpuinfo_left"] is False
    assert probe["cpu_name"] and probe["cpu_name"] != "Unable to get processor info."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration  # starts a Python process
@pytest.mark.timeout(300)
def test_http_mode_serves_the_health_check_on_its_own_port_too(tiny_model_env, tmp_path):
    port, health_port = _free_port(), _free_port()
    env = worker_env(
        tmp_path,
        F5TTS_DATA_DIR=str(tmp_path / "data"),
        F5TTS_SERVE="http",
        F5TTS_BIND_HOST="127.0.0.1",
        F5TTS_WARMUP="false",
        PORT=str(port),
        PORT_HEALTH=str(health_port),
        **tiny_model_env,
    )
    worker = subprocess.Popen([sys.executable, "-m", "worker.handler"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        health = f"http://127.0.0.1:{health_port}/ping"
        statuses = []
        for _ in range(600):  # until the model has loaded (204 while it loads)
            with contextlib.suppress(httpx.TransportError):
                statuses.append(httpx.get(health, timeout=2).status_code)
                if statuses[-1] == 200:
                    break
            time.sleep(0.1)
        assert statuses[-1:] == [200], statuses[-5:]
        assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{health_port}/v1/models", timeout=5).status_code == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    # A graceful stop: uvicorn shuts both servers down, then re-raises SIGTERM (so the exit status says why).
    assert worker.returncode in (0, -signal.SIGTERM), stderr.decode()[-2000:]
    assert stderr.decode().count("Finished server process") == 2
