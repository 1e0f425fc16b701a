"""The deployment spec (the typed declaration), its stack-config overrides, and the files that document them."""

from __future__ import annotations

import re

import pytest
import yaml
from f5tts_infra.deployment_spec import (
    REGISTRY_PASSWORD_SETTING,
    RENAMED_SETTINGS,
    SECRET_SETTINGS,
    SERVICE,
    STACK_SETTINGS,
    StackConfigError,
    apply_stack_config,
)
from f5tts_infra.worker_env import BUCKET_ENV, validate_worker_env, worker_env_fields

from tests.infra.helpers import PROJECT
from tests.support import REPO_ROOT

REQUIRED = {"imageRepository": "acme/f5tts", "imageTag": "v1", "bucketName": "acme-audio-1"}


def _default_at(path: tuple[str, ...]):
    value = SERVICE.model_dump()
    for part in path:
        value = value[part]
    return value


def test_required_settings_are_named_when_missing():
    with pytest.raises(StackConfigError) as excinfo:
        apply_stack_config({})
    assert all(key in str(excinfo.value) for key in ("imageRepository", "imageTag", "imageDigest", "bucketName"))


def test_overrides_apply_and_the_declaration_stays_untouched():
    declared = SERVICE.model_dump()
    service = apply_stack_config({**REQUIRED, "gpuPools": ["AMPERE_80"], "workersMax": 9, "flashboot": "OFF"})
    assert service.gpu.pools == ["AMPERE_80"]
    assert service.scaling.workers_max == 9
    assert service.scaling.flashboot == "OFF"
    assert service.image.ref == "acme/f5tts:v1"
    digest = "sha256:" + "ab" * 32
    pinned = apply_stack_config({**REQUIRED, "imageTag": None, "imageDigest": digest})
    assert pinned.image.ref == f"acme/f5tts@{digest}"
    assert SERVICE.model_dump() == declared


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"workersMin": 5, "workersMax": 2}, "f5tts:workersMin"),
        ({"gpuPools": []}, "f5tts:gpuPools"),
        ({"idleTimeout": 3601}, "f5tts:idleTimeout"),
        ({"allowedCudaVersions": ["12.8"], "minCudaVersion": "12.8"}, "f5tts:minCudaVersion"),
        ({"scalerType": "REQUEST_COUNT", "idleTimeout": 30}, "f5tts:idleTimeout"),
        ({"endpointType": "LOAD_BALANCER", "scalerType": "QUEUE_DELAY"}, "f5tts:scalerType"),
        ({"endpointType": "SERVERLESS"}, "f5tts:endpointType"),
        ({"flashboot": "ON"}, "f5tts:flashboot"),
        ({"scalerValue": 0.2}, "f5tts:scalerValue"),
        ({"imageDigest": "sha256:" + "ab" * 32}, "f5tts:imageDigest"),  # with imageTag: one or the other
        ({"registryUsername": "u", "registryId": "r1"}, "f5tts:registryId"),
        ({"containerDiskGb": 30}, "f5tts:diskGb"),  # renamed: the message gives the new name
        ({"workerEnv": {"F5TTS_SERVE": "http"}}, "f5tts:endpointType"),
        ({"gpuPools": ["ADA_24", "ADA_24"]}, "f5tts:gpuPools"),
        ({"allowedCudaVersions": ["12"]}, "f5tts:allowedCudaVersions"),
        ({"idleTimeout": 0}, "f5tts:idleTimeout"),
        ({"scalerType": "CPU"}, "f5tts:scalerType"),
        ({"executionTimeoutMs": 1}, "f5tts:executionTimeoutMs"),
        ({"bucketName": "b2-reserved"}, "f5tts:bucketName"),
        ({"bucketName": "has_underscore"}, "f5tts:bucketName"),
        ({"imageRepository": "acme/f5tts:latest"}, "f5tts:imageRepository"),
        ({"imageTag": "bad tag"}, "f5tts:imageTag"),
        ({"outputRetentionDays": 0}, "f5tts:outputRetentionDays"),
        ({"workerEnv": {"F5TTS_DTYPE": "int4"}}, "F5TTS_DTYPE"),
        ({"workerEnv": {"BUCKET_NAME": "other"}}, "BUCKET_NAME"),
        ({"workerEnv": {"HF_TOKEN": "x"}}, "HF_TOKEN"),
        ({"noSuchSetting": 1}, "noSuchSetting"),
        ({"workerEnv": "F5TTS_DTYPE=float16"}, "f5tts:workerEnv"),
    ],
)
def test_invalid_overrides_are_refused_with_their_key(override, key):
    with pytest.raises(StackConfigError, match=re.escape(key)):
        apply_stack_config({**REQUIRED, **override})


def test_worker_env_names_are_the_workers_own():
    names = worker_env_fields()
    assert {"F5TTS_MODEL", "F5TTS_ATTN_BACKEND", "BUCKET_URL_EXPIRY_S", *BUCKET_ENV} <= set(names)
    assert validate_worker_env({"F5TTS_WARMUP": True, "BUCKET_URL_EXPIRY_S": 600}) == {
        "BUCKET_URL_EXPIRY_S": "600",
        "F5TTS_WARMUP": "true",
    }
    with pytest.raises(ValueError, match="BUCKET_URL_EXPIRY_S"):
        validate_worker_env({"BUCKET_URL_EXPIRY_S": 5})  # below the worker's own minimum


def test_example_stack_file_documents_every_setting_with_the_declared_defaults():
    text = (REPO_ROOT / "Pulumi.example.yaml").read_text()
    active = yaml.safe_load(text)["config"]
    documented = set(re.findall(r"f5tts:(\w+)", text)) - {REGISTRY_PASSWORD_SETTING}
    keys = {s.key for s in STACK_SETTINGS}
    assert documented == keys, f"undocumented: {keys - documented}, unknown: {documented - keys}"
    assert set(active) <= {f"f5tts:{k}" for k in keys}
    for setting in STACK_SETTINGS:
        value = active.get(f"f5tts:{setting.key}")
        if setting.required or setting.key == "imageTag":
            assert value, f"{setting.key} is required and must have an example value"
        elif value is not None and setting.kind != "object":
            assert value == _default_at(setting.path), f"{setting.key}: example {value!r} != declared default"
    # Secrets are documented as `pulumi config set ... --secret` commands, never given values.
    for secret in (*SECRET_SETTINGS, f"f5tts:{REGISTRY_PASSWORD_SETTING}"):
        assert re.search(rf"pulumi config set {re.escape(secret)} .*--secret", text)
        assert secret not in active
    # The example with its placeholders is itself a valid stack configuration.
    values = {k.split(":", 1)[1]: v for k, v in active.items()}
    assert apply_stack_config(values).image.tag == "replace-with-a-pushed-tag"


def test_pulumi_project_file():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT  # the namespace the program reads its `f5tts:` settings from
    assert (REPO_ROOT / project["main"] / "__main__.py").is_file()  # the program the tests run under mocks


def test_renamed_settings_point_at_settings_that_exist():
    keys = {s.key for s in STACK_SETTINGS}
    assert {new.split()[0] for new in RENAMED_SETTINGS.values()} <= keys
    assert not set(RENAMED_SETTINGS) & keys


def test_load_balancer_defaults_to_request_count_scaling_without_idle_rules_broken():
    lb = apply_stack_config({**REQUIRED, "endpointType": "LOAD_BALANCER"})
    assert (lb.scaler_type, lb.scaler_value, lb.idle_timeout_s) == ("REQUEST_COUNT", 1, 5)
    queue_rc = apply_stack_config({**REQUIRED, "scalerType": "REQUEST_COUNT"})
    assert (queue_rc.scaler_value, queue_rc.idle_timeout_s) == (1, None)  # RunPod takes no idle timeout there
    declared = apply_stack_config(REQUIRED)
    assert (declared.scaler_type, declared.scaler_value, declared.idle_timeout_s) == (
        SERVICE.scaler_type,
        SERVICE.scaler_value,
        SERVICE.idle_timeout_s,
    )
