""".runpod/hub.json and .runpod/tests.json agree with the job contract, the worker's settings and the service."""

from __future__ import annotations

import json

import pytest
from f5tts_infra.deployment_spec import SERVICE
from f5tts_infra.worker_env import validate_worker_env, worker_env_fields

from tests.support import REPO_ROOT, run_python, worker_env
from worker.schema import parse_job_input

HUB = json.loads((REPO_ROOT / ".runpod" / "hub.json").read_text())
TESTS = json.loads((REPO_ROOT / ".runpod" / "tests.json").read_text())


def _cuda(version: str | None) -> tuple[int, ...]:
    assert version is not None, "the service declares a lowest CUDA version"
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("case", TESTS["tests"], ids=lambda c: c["name"])
def test_hub_test_inputs_are_valid_jobs(case):
    parse_job_input(case["input"])  # raises ContractError(invalid_input) otherwise
    assert case["timeout"] > 0


def test_hub_tests_cover_health_and_synthesis_with_a_valid_config():
    actions = {parse_job_input(c["input"]).model_dump()["action"] for c in TESTS["tests"]}
    assert {"health", "synthesize"} <= actions
    assert len({c["name"] for c in TESTS["tests"]}) == len(TESTS["tests"])
    validate_worker_env({e["key"]: e["value"] for e in TESTS["config"]["env"]})
    assert TESTS["config"]["gpuCount"] == 1
    assert all(_cuda(v) >= _cuda(SERVICE.gpu.min_cuda_version) for v in TESTS["config"]["allowedCudaVersions"])


def test_hub_env_entries_are_worker_settings_with_valid_defaults():
    fields = worker_env_fields()
    env = HUB["config"]["env"]
    assert len({e["key"] for e in env}) == len(env)
    for entry in env:
        key, spec = entry["key"], entry["input"]
        assert key in fields, f"{key} is not read by the worker (worker/config.py)"
        cls, name = fields[key]
        declared = cls.model_fields[name].default
        if "default" in spec:
            validate_worker_env({key: spec["default"]}, allow_bucket=True)
            assert spec["default"] == declared, f"{key}: hub default {spec['default']!r} != worker default {declared!r}"
        for option in spec.get("options", []):
            validate_worker_env({key: option["value"]}, allow_bucket=True)
        assert spec["type"] in {"string", "number", "boolean"}
    preset_keys = {k for p in HUB["config"].get("presets", []) for k in p["defaults"]}
    assert preset_keys <= {e["key"] for e in env}


def test_hub_hardware_is_the_declared_service():
    config = HUB["config"]
    assert HUB["type"] == "serverless" and config["runsOn"] == "GPU"
    assert config["gpuIds"].split(",") == SERVICE.gpu.pools
    assert config["gpuCount"] == SERVICE.gpu.count
    # The hub takes an exact set; every version in it is one the deployment's floor admits.
    assert config["allowedCudaVersions"] and all(
        _cuda(v) >= _cuda(SERVICE.gpu.min_cuda_version) for v in config["allowedCudaVersions"]
    )
    assert config["containerDiskInGb"] == SERVICE.disk_gb


@pytest.mark.integration  # starts a Python process
@pytest.mark.timeout(300)
def test_hub_handler_runs_the_worker_entry_point(tiny_model_env, tmp_path):
    """`.runpod/handler.py` (what the Hub looks for) is the worker's own main(): its self-check passes."""
    hub_handler = str(REPO_ROOT / ".runpod" / "handler.py")
    done = run_python(hub_handler, "--self-check", cwd=tmp_path, env=worker_env(tmp_path, **tiny_model_env))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("self-check passed")
