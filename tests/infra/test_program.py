"""The Pulumi program under the real Pulumi SDK with mocks: resources, their inputs, secrets, names, outputs.

Every assertion on an Output runs inside the `@pulumi.runtime.test` function (via apply), as Pulumi requires.
"""

from __future__ import annotations

import json
import runpy

import pulumi
import pytest
from f5tts_infra.b2_bucket import WORKER_KEY_CAPABILITIES
from f5tts_infra.program import main
from f5tts_infra.service import SERVICE

from tests.infra.helpers import BASE_CONFIG, ROOT, is_secret, reveal

BUCKET_ENV = ("BUCKET_ENDPOINT_URL", "BUCKET_NAME", "BUCKET_REGION", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


def test_program_declares_bucket_key_template_endpoint_with_declared_settings(pulumi_stack):
    mocks = pulumi_stack()

    @pulumi.runtime.test
    def check():
        deployment = main()

        def verify(_):
            kinds = sorted(r.typ.rsplit(":", 1)[-1] for r in mocks.resources)
            assert kinds == ["ApplicationKey", "Bucket", "ServerlessEndpoint", "ServerlessTemplate", "Service"]

            bucket = mocks.by_kind("Bucket").inputs
            assert bucket["bucketName"] == "acme-f5tts-audio"
            assert bucket["lifecyclePrefix"] == "generated/"
            assert bucket["lifecycleDays"] == SERVICE.storage.output_retention_days == 7
            assert bucket["forceDestroy"] is False

            key = mocks.by_kind("ApplicationKey").inputs
            assert key["bucketId"] == "bucket-0001"  # restricted to the bucket the program created
            assert key["capabilities"] == list(WORKER_KEY_CAPABILITIES)

            template = mocks.by_kind("ServerlessTemplate").inputs
            assert template["imageName"] == "acme/f5tts-runpod:3f2c1ab"  # the configured tag, nothing else
            assert template["containerDiskInGb"] == 20
            assert template["name"] == "f5tts-dev"

            endpoint = mocks.by_kind("ServerlessEndpoint").inputs
            assert endpoint["templateId"] == "tpl0001"
            assert endpoint["name"] == "f5tts-dev"
            assert endpoint["gpuIds"] == ["ADA_24", "AMPERE_24", "AMPERE_16"]  # priority order kept
            assert endpoint["gpuCount"] == 1
            assert endpoint["allowedCudaVersions"] == ["12.8", "12.9"]
            assert endpoint["flashboot"] is True
            assert (endpoint["workersMin"], endpoint["workersMax"]) == (0, 3)
            assert (endpoint["scalerType"], endpoint["scalerValue"], endpoint["idleTimeout"]) == ("QUEUE_DELAY", 4, 5)
            assert endpoint["executionTimeoutMs"] == 600_000

        return deployment.component.endpoint.endpointId.apply(verify)

    check()


def test_stack_config_overrides_the_declaration(pulumi_stack):
    mocks = pulumi_stack(
        {
            "f5tts:imageTag": "deadbeef",
            "f5tts:gpuPools": ["HOPPER_141", "ADA_48_PRO"],
            "f5tts:gpuCount": "2",
            "f5tts:flashboot": "false",
            "f5tts:workersMin": "1",
            "f5tts:workersMax": "6",
            "f5tts:idleTimeout": "30",
            "f5tts:scalerType": "REQUEST_COUNT",
            "f5tts:scalerValue": "2",
            "f5tts:executionTimeout": "120",
            "f5tts:allowedCudaVersions": ["12.9"],
            "f5tts:outputRetentionDays": "2",
            "f5tts:workerEnv": {"BUCKET_PREFIX": "prod/", "F5TTS_CONCURRENCY": 2, "F5TTS_WARMUP": False},
        }
    )

    @pulumi.runtime.test
    def check():
        deployment = main()

        def verify(args):
            env, _endpoint_id = args
            endpoint = mocks.by_kind("ServerlessEndpoint").inputs
            assert endpoint["gpuIds"] == ["HOPPER_141", "ADA_48_PRO"]
            assert endpoint["gpuCount"] == 2
            assert endpoint["flashboot"] is False
            assert (endpoint["workersMin"], endpoint["workersMax"], endpoint["idleTimeout"]) == (1, 6, 30)
            assert (endpoint["scalerType"], endpoint["scalerValue"]) == ("REQUEST_COUNT", 2)
            assert endpoint["executionTimeoutMs"] == 120_000
            assert endpoint["allowedCudaVersions"] == ["12.9"]
            assert mocks.by_kind("ServerlessTemplate").inputs["imageName"] == "acme/f5tts-runpod:deadbeef"
            bucket = mocks.by_kind("Bucket").inputs
            # Lifecycle follows the worker's key prefix so only its generated audio expires.
            assert (bucket["lifecyclePrefix"], bucket["lifecycleDays"]) == ("prod/generated/", 2)
            # workerEnv merges over the declaration, as strings the worker parses.
            assert env["F5TTS_MODEL"] == "F5TTS_v1_Base"
            assert (env["F5TTS_CONCURRENCY"], env["F5TTS_WARMUP"], env["BUCKET_PREFIX"]) == ("2", "false", "prod/")

        component = deployment.component
        return pulumi.Output.all(component.template.env, component.endpoint.endpointId).apply(verify)

    check()


def test_worker_env_flows_from_bucket_and_key_and_stays_secret(pulumi_stack):
    mocks = pulumi_stack()

    @pulumi.runtime.test
    def check():
        deployment = main()
        template = deployment.component.template

        def verify(args):
            env, env_is_secret, outputs = args
            assert env_is_secret
            assert env["BUCKET_ENDPOINT_URL"] == "https://s3.us-west-004.backblazeb2.com"
            assert env["BUCKET_NAME"] == "acme-f5tts-audio"
            assert env["BUCKET_REGION"] == "us-west-004"
            assert env["BUCKET_ACCESS_KEY_ID"] == "key-0001"
            assert env["BUCKET_SECRET_ACCESS_KEY"] == "K004worker-secret-key"
            assert env["F5TTS_MODEL"] == "F5TTS_v1_Base"

            # On the wire to the engine the template's env is a secret (encrypted in state, masked in previews).
            template_inputs = mocks.by_kind("ServerlessTemplate").inputs
            assert is_secret(template_inputs["env"])
            assert set(BUCKET_ENV) <= set(reveal(template_inputs["env"]))

            # Credentials never become inputs of any resource (the providers read stack config themselves)...
            wire = json.dumps([r.inputs for r in mocks.resources], default=str)
            for key in ("runpod:token", "b2:applicationKeyId", "b2:applicationKey"):
                assert BASE_CONFIG[key] not in wire
            # ...and no stack output is secret or carries one.
            assert outputs == {
                "endpointId": "ep0001",
                "endpointUrl": "https://api.runpod.ai/v2/ep0001",
                "bucketName": "acme-f5tts-audio",
                "s3Endpoint": "https://s3.us-west-004.backblazeb2.com",
                "image": "acme/f5tts-runpod:3f2c1ab",
            }
            assert "K004worker-secret-key" not in json.dumps(outputs)

        outputs = pulumi.Output.all(**deployment.component.outputs)
        return pulumi.Output.all(template.env, template.env.is_secret(), outputs).apply(verify)

    check()


def test_output_secrets_are_marked(pulumi_stack):
    pulumi_stack()

    @pulumi.runtime.test
    def check():
        deployment = main()
        component = deployment.component
        return pulumi.Output.all(
            component.template.env.is_secret(),
            pulumi.Output.all(**component.outputs).is_secret(),
        ).apply(lambda flags: flags == [True, False] or pytest.fail(f"secret flags {flags}"))

    check()


def test_resource_names_are_unique_and_carry_the_stack(pulumi_stack):
    names_by_stack = {}
    for stack in ("dev", "prod"):
        mocks = pulumi_stack(stack=stack)

        @pulumi.runtime.test
        def check():
            deployment = main()
            return deployment.component.endpoint.endpointId.apply(lambda _: None)

        check()
        urns = [(r.typ, r.name) for r in mocks.resources]
        assert len(urns) == len(set(urns))
        cloud_names = {
            mocks.by_kind("ServerlessTemplate").inputs["name"],
            mocks.by_kind("ServerlessEndpoint").inputs["name"],
            mocks.by_kind("ApplicationKey").inputs["keyName"],
        }
        assert all(stack in name for name in cloud_names)
        names_by_stack[stack] = cloud_names
    # Two stacks in one RunPod/B2 account never collide (RunPod template names are unique per account).
    assert not names_by_stack["dev"] & names_by_stack["prod"]


def test_stack_outputs_are_exported(pulumi_stack, monkeypatch):
    pulumi_stack()
    exported = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))

    @pulumi.runtime.test
    def check():
        main()
        return pulumi.Output.all(**exported).apply(
            lambda values: (
                values["endpointId"] == "ep0001"
                and values["bucketName"] == "acme-f5tts-audio"
                or pytest.fail(str(values))
            )
        )

    check()
    assert {"endpointId", "endpointUrl", "bucketName"} <= set(exported)


def test_main_module_is_the_whole_program(pulumi_stack):
    """`pulumi up` runs infra/__main__.py; run that very file under the mocks."""
    mocks = pulumi_stack()

    @pulumi.runtime.test
    def check():
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(None)

    check()
    assert sorted(r.typ.rsplit(":", 1)[-1] for r in mocks.resources) == [
        "ApplicationKey",
        "Bucket",
        "ServerlessEndpoint",
        "ServerlessTemplate",
        "Service",
    ]


def test_missing_secret_fails_before_any_resource(pulumi_stack):
    mocks = pulumi_stack({"runpod:token": None})

    @pulumi.runtime.test
    def check():
        main()

    with pytest.raises(pulumi.ConfigMissingError, match="runpod:token"):
        check()
    assert mocks.resources == []


def test_invalid_stack_config_names_the_key(pulumi_stack):
    mocks = pulumi_stack({"f5tts:gpuPools": ["ADA_24", "not a pool"], "f5tts:workerEnv": {"F5TTS_NOPE": "1"}})

    @pulumi.runtime.test
    def check():
        main()

    with pytest.raises(pulumi.RunError) as excinfo:
        check()
    assert "f5tts:gpuPools" in str(excinfo.value)
    assert "F5TTS_NOPE" in str(excinfo.value)
    assert mocks.resources == []
