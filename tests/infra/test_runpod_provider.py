"""The RunPod dynamic providers against a local fake of RunPod's GraphQL API that validates every request."""

from __future__ import annotations

import pytest
from f5tts_infra.runpod_api import SAVE_ENDPOINT, RunpodApiError, RunpodClient
from f5tts_infra.runpod_endpoint import ServerlessEndpointProvider, ServerlessTemplateProvider

from tests.infra.helpers import BASE_CONFIG, configure, engine_props

TOKEN = {"runpod:token": BASE_CONFIG["runpod:token"]}
ENV = {
    "F5TTS_MODEL": "F5TTS_v1_Base",
    "BUCKET_NAME": "acme-f5tts-audio",
    "BUCKET_SECRET_ACCESS_KEY": 'K004"quoted\\secret\nline',  # survives because values travel as variables
}
TEMPLATE = {
    "name": "f5tts-dev",
    "imageName": "acme/f5tts-runpod:aaa111",
    "containerDiskInGb": 20,
    "env": ENV,
    "dockerArgs": "",
}
ENDPOINT = {
    "name": "f5tts-dev",
    "gpuIds": ["ADA_24", "AMPERE_24"],
    "gpuCount": 1,
    "allowedCudaVersions": ["12.8", "12.9"],
    "workersMin": 0,
    "workersMax": 3,
    "idleTimeout": 5,
    "scalerType": "QUEUE_DELAY",
    "scalerValue": 4,
    "flashboot": True,
    "executionTimeoutMs": 600_000,
}


@pytest.fixture
def providers(runpod_api):
    template = configure(ServerlessTemplateProvider(delete_timeout_s=5, delete_poll_s=0.01), TOKEN)
    endpoint = configure(ServerlessEndpointProvider(), TOKEN)
    return template, endpoint


def _deploy(providers):
    template_provider, endpoint_provider = providers
    template = template_provider.create(engine_props(TEMPLATE))
    endpoint = endpoint_provider.create(engine_props({**ENDPOINT, "templateId": template.outs["templateId"]}))
    return template, endpoint


def test_create_sends_every_setting_to_runpod(runpod_api, providers):
    template, endpoint = _deploy(providers)

    assert runpod_api.operations() == ["saveTemplate", "saveEndpoint"]
    assert all(not r.errors for r in runpod_api.requests)
    sent_template = runpod_api.requests[0].variables["input"]
    assert sent_template["isServerless"] is True and sent_template["volumeInGb"] == 0
    assert sent_template["imageName"] == "acme/f5tts-runpod:aaa111"
    assert {e["key"]: e["value"] for e in sent_template["env"]} == ENV
    assert "id" not in sent_template

    sent_endpoint = runpod_api.requests[1].variables["input"]
    assert sent_endpoint == {
        "name": "f5tts-dev",
        "templateId": template.id,
        "gpuIds": "ADA_24,AMPERE_24",
        "gpuCount": 1,
        "workersMin": 0,
        "workersMax": 3,
        "idleTimeout": 5,
        "scalerType": "QUEUE_DELAY",
        "scalerValue": 4,
        "flashBootType": "FLASHBOOT",
        "executionTimeoutMs": 600_000,
        "allowedCudaVersions": "12.8,12.9",
        "locations": "",
    }
    assert runpod_api.endpoints[endpoint.id]["templateId"] == template.id
    assert {e["key"]: e["value"] for e in runpod_api.templates[template.id]["env"]} == ENV
    assert endpoint.outs["url"] == f"https://api.runpod.ai/v2/{endpoint.id}"
    assert endpoint.outs["endpointId"] == endpoint.id


def test_new_image_updates_the_template_and_keeps_the_endpoint(runpod_api, providers):
    template_provider, endpoint_provider = providers
    template, endpoint = _deploy(providers)
    before = len(runpod_api.requests)

    olds = engine_props(template.outs)
    news = engine_props({**TEMPLATE, "imageName": "acme/f5tts-runpod:bbb222", "env": {**ENV, "F5TTS_WARMUP": "false"}})
    diff = template_provider.diff(template.id, olds, news)
    assert diff.changes and diff.replaces == []  # in place: no new template, no new endpoint
    updated = template_provider.update(template.id, olds, news)

    assert updated.outs["templateId"] == template.id
    new_requests = runpod_api.requests[before:]
    assert [r.operation for r in new_requests] == ["saveTemplate"]
    assert new_requests[0].variables["input"]["id"] == template.id
    assert runpod_api.templates[template.id]["imageName"] == "acme/f5tts-runpod:bbb222"
    # The endpoint's inputs (templateId included) are unchanged, so Pulumi has nothing to do to it: same id, same URL.
    endpoint_news = engine_props({**ENDPOINT, "templateId": updated.outs["templateId"]})
    assert endpoint_provider.diff(endpoint.id, engine_props(endpoint.outs), endpoint_news).changes is False
    assert list(runpod_api.endpoints) == [endpoint.id]
    assert runpod_api.endpoints[endpoint.id]["templateId"] == template.id


def test_scaling_change_updates_the_endpoint_in_place(runpod_api, providers):
    _, endpoint_provider = providers
    template, endpoint = _deploy(providers)
    olds = engine_props(endpoint.outs)
    news = engine_props(
        {**ENDPOINT, "templateId": template.id, "workersMax": 6, "flashboot": False, "gpuIds": ["HOPPER_141"]}
    )

    diff = endpoint_provider.diff(endpoint.id, olds, news)
    assert diff.changes and diff.replaces == []
    updated = endpoint_provider.update(endpoint.id, olds, news)

    assert updated.outs["endpointId"] == endpoint.id
    assert runpod_api.requests[-1].variables["input"]["id"] == endpoint.id
    live = runpod_api.endpoints[endpoint.id]
    assert (live["workersMax"], live["flashBootType"], live["gpuIds"]) == (6, "OFF", "HOPPER_141")
    assert list(runpod_api.endpoints) == [endpoint.id]

    read = endpoint_provider.read(endpoint.id, engine_props(updated.outs))
    assert (read.outs["workersMax"], read.outs["flashboot"], read.outs["gpuIds"]) == (6, False, ["HOPPER_141"])


def test_delete_scales_to_zero_then_deletes_and_waits_for_the_template(runpod_api, providers):
    template_provider, endpoint_provider = providers
    template, endpoint = _deploy(providers)
    before = len(runpod_api.requests)

    endpoint_provider.delete(endpoint.id, engine_props(endpoint.outs))
    template_provider.delete(template.id, engine_props(template.outs))

    ops = [(r.operation, bool(r.errors)) for r in runpod_api.requests[before:]]
    scale_down = runpod_api.requests[before + 1].variables["input"]
    assert (scale_down["id"], scale_down["workersMin"], scale_down["workersMax"]) == (endpoint.id, 0, 0)
    # RunPod keeps a template "in use" for a while after its endpoint goes: the provider retries until it can.
    assert ops == [
        ("myself", False),  # does the endpoint still exist?
        ("saveEndpoint", False),
        ("deleteEndpoint", False),
        ("podTemplate", False),  # does the template still exist?
        ("deleteTemplate", True),
        ("deleteTemplate", True),
        ("deleteTemplate", False),
    ]
    assert runpod_api.endpoints == {} and runpod_api.templates == {}

    # Already gone (deleted by hand, or a retried destroy): nothing to do, no error.
    endpoint_provider.delete(endpoint.id, engine_props(endpoint.outs))
    template_provider.delete(template.id, engine_props(template.outs))
    assert endpoint_provider.read(endpoint.id, engine_props(endpoint.outs)).id == ""
    assert template_provider.read(template.id, engine_props(template.outs)).id == ""


def test_template_in_use_too_long_fails_the_delete(runpod_api, providers):
    template, _endpoint = _deploy(providers)
    impatient = configure(ServerlessTemplateProvider(delete_timeout_s=0, delete_poll_s=0), TOKEN)
    with pytest.raises(RunpodApiError, match="in use"):
        impatient.delete(template.id, engine_props(template.outs))
    assert template.id in runpod_api.templates


def test_wrong_or_missing_api_key(runpod_api):
    wrong = configure(ServerlessTemplateProvider(), {"runpod:token": "not-the-key"})
    with pytest.raises(RunpodApiError, match="rejected the API key") as excinfo:
        wrong.create(engine_props(TEMPLATE))
    assert "not-the-key" not in str(excinfo.value)
    assert runpod_api.templates == {}

    missing = configure(ServerlessEndpointProvider(), {})
    with pytest.raises(RunpodApiError, match=r"runpod:token .*--secret"):
        missing.create(engine_props({**ENDPOINT, "templateId": "t1"}))


def test_runpod_rules_surface_as_errors(runpod_api, providers):
    template_provider, endpoint_provider = providers
    template = template_provider.create(engine_props(TEMPLATE))
    with pytest.raises(RunpodApiError, match="unique"):
        template_provider.create(engine_props({**TEMPLATE, "imageName": "other:1"}))
    with pytest.raises(RunpodApiError, match="Unknown GPU pool"):
        endpoint_provider.create(engine_props({**ENDPOINT, "templateId": template.id, "gpuIds": ["TURING_8"]}))
    with pytest.raises(RunpodApiError, match="serverless template"):
        endpoint_provider.create(engine_props({**ENDPOINT, "templateId": "t-missing"}))
    assert runpod_api.endpoints == {}


def test_the_fake_rejects_requests_runpod_would_reject(runpod_api):
    """The fake is strict: schema-invalid fields and non-integer numbers fail, as they would against RunPod."""
    client = RunpodClient(BASE_CONFIG["runpod:token"])
    template = client.save_template(ServerlessTemplateProvider.template_input(TEMPLATE))
    good = ServerlessEndpointProvider.endpoint_input({**ENDPOINT, "templateId": template["id"]})

    with pytest.raises(RunpodApiError, match="flashboot"):
        client.execute(SAVE_ENDPOINT, {"input": {**good, "flashboot": True}})  # REST's name, not GraphQL's
    with pytest.raises(RunpodApiError, match="not an integer"):
        client.execute(SAVE_ENDPOINT, {"input": {**good, "gpuCount": 1.0}})
    with pytest.raises(RunpodApiError, match="FlashBootType"):
        client.execute(SAVE_ENDPOINT, {"input": {**good, "flashBootType": "ON"}})
    assert runpod_api.endpoints == {}
    assert client.save_endpoint(good)["flashBootType"] == "FLASHBOOT"
