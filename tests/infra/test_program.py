"""The Pulumi program under the real Pulumi SDK with mocks. The tests state invariants rather than restate the
config: what the program registers follows from the stack settings, is accepted by RunPod's schema, sets only
variables the worker reads, and never shows a secret in plain text.

Every assertion on an Output runs inside the `@pulumi.runtime.test` function (via apply), as Pulumi requires.
"""

from __future__ import annotations

import json
import runpy
from typing import Any

import pulumi
import pytest
from f5tts_infra.b2_bucket import WORKER_KEY_CAPABILITIES
from f5tts_infra.deployment_spec import HTTP_PORT
from f5tts_infra.program import main
from f5tts_infra.runpod_endpoint import ENDPOINT_INPUTS, ServerlessEndpointProvider, create_body
from f5tts_infra.worker_env import BUCKET_ENV, SERVING_ENV, validate_worker_env, worker_env_fields

from tests.infra.helpers import BASE_CONFIG, RecordingMocks, is_secret, reveal
from tests.infra.runpod_openapi import find_operation, validate_request
from tests.support import REPO_ROOT

REGISTRY = {"f5tts:registryUsername": "acme-bot", "f5tts:registryPassword": "dckr_pat_registry-secret"}
# Stack configs the invariants run over: the declaration, and the settings that change the endpoint's shape.
STACKS: dict[str, dict[str, Any]] = {
    "declared": {},
    "request-count": {"f5tts:scalerType": "REQUEST_COUNT", "f5tts:scalerValue": "2"},
    "pinned": {
        "f5tts:imageTag": None,
        "f5tts:imageDigest": "sha256:" + "0f" * 32,
        "f5tts:gpuPools": ["HOPPER_141", "ADA_48_PRO"],
        "f5tts:allowedCudaVersions": ["12.8", "12.9"],
        "f5tts:flashboot": "PRIORITY_FLASHBOOT",
        "f5tts:dataCenterIds": ["EU-RO-1"],
        "f5tts:workerEnv": {"BUCKET_PREFIX": "prod/", "F5TTS_CONCURRENCY": 2, "F5TTS_WARMUP": False},
    },
    "private-image": REGISTRY,
    "load-balancer": {"f5tts:endpointType": "LOAD_BALANCER"},
}


def _run(pulumi_stack, config: dict[str, Any], verify, stack: str = "dev") -> RecordingMocks:
    mocks = pulumi_stack(config, stack=stack)

    @pulumi.runtime.test
    def check():
        deployment = main()
        component = deployment.component
        outputs = pulumi.Output.all(**component.outputs)
        return pulumi.Output.all(component.endpoint.env, outputs, outputs.is_secret()).apply(
            lambda args: verify(mocks, deployment, *args)
        )

    check()
    return mocks


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("f5tts:")}


def _norm(value: Any) -> Any:
    # Stack config values arrive as strings ("2") where the program has numbers.
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@pytest.mark.parametrize("stack", STACKS)
def test_the_endpoint_is_the_stack_settings_in_runpods_schema(pulumi_stack, stack):
    config = STACKS[stack]

    def verify(mocks, _deployment, _env, _outputs, _outputs_secret):
        kinds = sorted(r.typ.rsplit(":", 1)[-1] for r in mocks.resources)
        expected = ["ApplicationKey", "Bucket", "ServerlessEndpoint", "Service"]
        assert kinds == sorted(expected + (["ContainerRegistry"] if stack == "private-image" else []))
        inputs = {k: reveal(v) for k, v in mocks.by_kind("ServerlessEndpoint").inputs.items()}
        # Every input is there, but for the optional ones left unset (None never reaches the engine).
        assert set(ENDPOINT_INPUTS) - {"registry", "minCudaVersion", "idleTimeout"} <= set(inputs)

        # Every endpoint setting the stack gives reaches the endpoint as given (settings share RunPod's names).
        for key, value in _settings(config).items():
            target = {"endpointType": "type"}.get(key, key)
            if target in ENDPOINT_INPUTS and value is not None:
                assert _norm(inputs.get(target)) == _norm(value), key
        digest = config.get("f5tts:imageDigest")
        assert inputs["image"] == f"acme/f5tts-runpod{'@' + digest if digest else ':3f2c1ab'}"
        assert inputs.get("registry") == ("reg0001" if "f5tts:registryUsername" in config else None)

        # RunPod's schema accepts the create body the provider builds from these inputs, and so does its check.
        props = {k: inputs[k] for k in ENDPOINT_INPUTS if k in inputs}
        assert ServerlessEndpointProvider().check({}, props).failures == []
        create = find_operation("POST", "/v2/serverless")
        assert create is not None
        assert validate_request(create, {}, create_body(props)) == []

    _run(pulumi_stack, config, verify)


@pytest.mark.parametrize("stack", STACKS)
def test_every_worker_env_var_the_program_sets_is_one_the_worker_reads(pulumi_stack, stack):
    config = STACKS[stack]

    def verify(mocks, _deployment, env, _outputs, _outputs_secret):
        known = worker_env_fields()
        assert set(env) <= set(known), set(env) - set(known)
        validate_worker_env(env, allow_bucket=True)  # and every value is one the worker accepts
        assert set(BUCKET_ENV) <= set(env)
        # The serving mode follows the endpoint type.
        serving = {k: env[k] for k in SERVING_ENV if k in env}
        if stack == "load-balancer":
            assert serving == {"F5TTS_SERVE": "http", "PORT": str(HTTP_PORT), "PORT_HEALTH": str(HTTP_PORT)}
            assert mocks.by_kind("ServerlessEndpoint").inputs["ports"] == [f"{HTTP_PORT}/http"]
        else:
            assert serving in ({"F5TTS_SERVE": "queue"}, {}) and "PORT" not in serving
        # The bucket's lifecycle rule expires exactly what the worker writes (generated/ under its prefix).
        bucket = mocks.by_kind("Bucket").inputs
        assert bucket["lifecyclePrefix"] == env.get("BUCKET_PREFIX", "") + "generated/"
        key = mocks.by_kind("ApplicationKey").inputs
        assert key["bucketId"] == "bucket-0001" and key["capabilities"] == list(WORKER_KEY_CAPABILITIES)
        assert env["BUCKET_ACCESS_KEY_ID"] == "key-0001" and env["BUCKET_REGION"] == "us-west-004"

    _run(pulumi_stack, config, verify)


def test_no_secret_is_ever_plain(pulumi_stack):
    """The RunPod key and the B2 account key are no resource's input; the worker's bucket key and the registry
    password are inputs only as secrets (encrypted in the state); no stack output carries any of them."""
    secrets = [BASE_CONFIG[k] for k in ("runpod:token", "b2:applicationKeyId", "b2:applicationKey")]
    carried = ["K004worker-secret-key", REGISTRY["f5tts:registryPassword"]]

    def verify(mocks, _deployment, env, outputs, outputs_secret):
        def plain(value: Any) -> str:
            # Everything outside secret-wrapped values, as the state would hold it unencrypted.
            if is_secret(value):
                return ""
            if isinstance(value, dict):
                return " ".join(f"{k} {plain(v)}" for k, v in value.items())
            if isinstance(value, list):
                return " ".join(plain(v) for v in value)
            return str(value)

        everything = json.dumps([r.inputs for r in mocks.resources], default=str)
        unencrypted = " ".join(plain(r.inputs) for r in mocks.resources)
        for secret in secrets:
            assert secret not in everything
        for secret in carried:
            assert secret in everything and secret not in unencrypted
        assert is_secret(mocks.by_kind("ServerlessEndpoint").inputs["env"])
        assert not outputs_secret and not any(s in json.dumps(outputs) for s in secrets + carried)
        assert env["BUCKET_SECRET_ACCESS_KEY"] == "K004worker-secret-key"  # RunPod still receives it

    _run(pulumi_stack, REGISTRY, verify)


def test_endpoint_keeps_its_resource_identity_across_the_v2_migration(pulumi_stack):
    """A stack deployed before v2 holds `f5tts-dev-endpoint` of this type under the Service component: the same
    URN, so `pulumi up` updates that endpoint (same id, same URL) instead of creating a second one."""

    def verify(mocks, _deployment, _env, outputs, _secret):
        endpoint = mocks.by_kind("ServerlessEndpoint")
        assert (endpoint.typ, endpoint.name) == (
            "pulumi-python:dynamic/runpod:ServerlessEndpoint",
            "f5tts-dev-endpoint",
        )
        assert outputs["endpointUrl"] == "https://api.runpod.ai/v2/ep0001"

    _run(pulumi_stack, {}, verify)


def test_load_balancer_url_is_the_endpoints_own_host(pulumi_stack):
    def verify(_mocks, _deployment, _env, outputs, _secret):
        assert (outputs["endpointType"], outputs["endpointUrl"]) == ("LOAD_BALANCER", "https://ep0001.api.runpod.ai")

    _run(pulumi_stack, STACKS["load-balancer"], verify)


def test_resource_names_are_unique_and_carry_the_stack(pulumi_stack):
    names_by_stack = {}
    for stack in ("dev", "prod"):
        mocks = _run(pulumi_stack, REGISTRY, lambda *_: None, stack=stack)
        urns = [(r.typ, r.name) for r in mocks.resources]
        assert len(urns) == len(set(urns))
        cloud_names = {
            mocks.by_kind("ServerlessEndpoint").inputs["name"],
            mocks.by_kind("ContainerRegistry").inputs["namePrefix"],
            mocks.by_kind("ApplicationKey").inputs["keyName"],
        }
        assert all(stack in name for name in cloud_names)
        names_by_stack[stack] = cloud_names
    # Two stacks in one RunPod/B2 account never collide (the endpoint is adopted by name after a lost create).
    assert not names_by_stack["dev"] & names_by_stack["prod"]


def test_stack_outputs_are_exported(pulumi_stack, monkeypatch):
    exported: dict[str, object] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))
    _run(pulumi_stack, {}, lambda *_: None)
    assert {"endpointId", "endpointUrl", "endpointType", "bucketName", "s3Endpoint", "image"} == set(exported)


def test_main_module_is_the_whole_program(pulumi_stack):
    """`pulumi up` runs infra/__main__.py; run that very file under the mocks."""
    mocks = pulumi_stack()

    @pulumi.runtime.test
    def check():
        runpy.run_path(str(REPO_ROOT / "infra" / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(None)

    check()
    assert sorted(r.typ.rsplit(":", 1)[-1] for r in mocks.resources) == [
        "ApplicationKey",
        "Bucket",
        "ServerlessEndpoint",
        "Service",
    ]


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({"runpod:token": None}, "runpod:token"),
        ({"f5tts:registryUsername": "acme-bot"}, "f5tts:registryPassword"),
    ],
)
def test_missing_secret_fails_before_any_resource(pulumi_stack, config, missing):
    mocks = pulumi_stack(config)

    @pulumi.runtime.test
    def check():
        main()

    with pytest.raises(pulumi.ConfigMissingError, match=missing):
        check()
    assert mocks.resources == []


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (
            {"f5tts:gpuPools": ["ADA_24", "not a pool"], "f5tts:workerEnv": {"F5TTS_NOPE": "1"}},
            ["f5tts:gpuPools", "F5TTS_NOPE"],
        ),
        ({"f5tts:workersMin": "4", "f5tts:workersMax": "2"}, ["f5tts:workersMin"]),
        ({"f5tts:idleTimeout": "0"}, ["f5tts:idleTimeout"]),
        ({"f5tts:gpuPools": []}, ["f5tts:gpuPools"]),
        ({"f5tts:allowedCudaVersions": ["12.8"], "f5tts:minCudaVersion": "12.8"}, ["f5tts:minCudaVersion"]),
        ({"f5tts:scalerType": "REQUEST_COUNT", "f5tts:idleTimeout": "30"}, ["f5tts:idleTimeout"]),
    ],
)
def test_invalid_stack_config_names_the_setting_before_any_resource(pulumi_stack, config, named):
    mocks = pulumi_stack(config)

    @pulumi.runtime.test
    def check():
        main()

    with pytest.raises(pulumi.RunError) as excinfo:
        check()
    assert all(n in str(excinfo.value) for n in named), str(excinfo.value)
    assert mocks.resources == []
