"""The RunPod providers against the local fake of RunPod's REST API v2, which validates every request and response
against the committed extract of RunPod's OpenAPI document (the `runpod_api` fixture fails a test otherwise).

Props go through the protobuf round trip of the Pulumi engine (`engine_props`: numbers become floats), so the
providers see what they see under `pulumi up`.
"""

from __future__ import annotations

import base64
from typing import Any

import dill
import pytest
from f5tts_infra.runpod_endpoint import (
    FIELD_SETTINGS,
    ContainerRegistryProvider,
    ServerlessEndpointProvider,
    ServerlessTemplateProvider,
)
from f5tts_infra.runpod_rest import RunpodApiError, RunpodRestClient
from pulumi.dynamic.dynamic import serialize_provider

from tests.infra.helpers import BASE_CONFIG, configure, engine_props

TOKEN = {"runpod:token": BASE_CONFIG["runpod:token"]}
BUCKET_SECRET = 'K004"quoted\\secret\nline'
ENV = {"F5TTS_MODEL": "F5TTS_v1_Base", "BUCKET_NAME": "acme-f5tts-audio", "BUCKET_SECRET_ACCESS_KEY": BUCKET_SECRET}
PROPS = {
    "name": "f5tts-dev",
    "type": "QUEUE",
    "image": "acme/f5tts-runpod:aaa111",
    "env": ENV,
    "registry": None,
    "disk": 20,
    "ports": [],
    "gpuPools": ["ADA_24", "AMPERE_24"],
    "gpuCount": 1,
    "allowedCudaVersions": [],
    "minCudaVersion": "12.8",
    "workersMin": 0,
    "workersMax": 3,
    "idleTimeout": 5,
    "scalerType": "QUEUE_DELAY",
    "scalerValue": 4,
    "flashboot": "FLASHBOOT",
    "timeoutMs": 600_000,
    "dataCenterIds": [],
    "networkVolumes": [],
}
LB_PROPS = {
    **PROPS,
    "type": "LOAD_BALANCER",
    "scalerType": "REQUEST_COUNT",
    "scalerValue": 1,
    "ports": ["80/http"],
    "env": {**ENV, "F5TTS_SERVE": "http", "PORT": "80", "PORT_HEALTH": "80"},
}


class Waits(list):
    """Records the seconds tenacity would have slept, instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def endpoints(runpod_api, waits) -> ServerlessEndpointProvider:
    return configure(ServerlessEndpointProvider({"timeout_s": 0.5, "sleep": waits}), TOKEN)


def _create(provider, props=PROPS):
    return provider.create(engine_props(props))


def test_create_sends_every_setting_in_one_schema_valid_body(runpod_api, endpoints):
    created = _create(endpoints)

    assert runpod_api.operations() == ["GET listEndpoints", "POST createEndpoint"]  # lookup first: idempotent
    body = runpod_api.requests[1].body
    assert body == {
        "type": "QUEUE",
        "name": "f5tts-dev",
        "image": "acme/f5tts-runpod:aaa111",
        "env": ENV,
        "disk": 20,
        "ports": [],
        "gpu": {"pools": ["ADA_24", "AMPERE_24"], "count": 1, "minCudaVersion": "12.8"},
        "workers": {"min": 0, "max": 3, "idleTimeout": 5},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
        "flashboot": "FLASHBOOT",  # always sent: the API's own default is OFF
        "timeout": 600_000,
        "dataCenterIds": [],
        "networkVolumes": [],
    }
    assert list(runpod_api.endpoints) == [created.id]
    assert created.outs["url"] == f"https://api.runpod.ai/v2/{created.id}"
    assert runpod_api.endpoints[created.id]["env"]["BUCKET_SECRET_ACCESS_KEY"] == BUCKET_SECRET


def test_an_unchanged_up_is_a_no_op(runpod_api, endpoints):
    created = _create(endpoints)
    before = len(runpod_api.requests)
    diff = endpoints.diff(created.id, engine_props(created.outs), engine_props(PROPS))
    assert diff.changes is False and diff.replaces == []
    # What `pulumi refresh` reads back is what was declared: no drift right after an up.
    read = endpoints.read(created.id, engine_props(created.outs))
    assert endpoints.diff(created.id, engine_props(read.outs), engine_props(PROPS)).changes is False
    assert runpod_api.operations(before) == ["GET getEndpoint"]


def test_a_new_image_tag_is_a_patch_of_the_same_endpoint(runpod_api, endpoints):
    created = _create(endpoints)
    before = len(runpod_api.requests)
    olds, news = engine_props(created.outs), engine_props({**PROPS, "image": "acme/f5tts-runpod:bbb222"})

    diff = endpoints.diff(created.id, olds, news)
    assert diff.changes and diff.replaces == []  # in place: same id, same URL for every client
    updated = endpoints.update(created.id, olds, news)

    assert runpod_api.operations(before) == ["PATCH updateEndpoint"]
    patch = runpod_api.requests[before]
    assert patch.path == f"/v2/serverless/{created.id}"
    assert patch.body == {"image": "acme/f5tts-runpod:bbb222"}  # only what changed: one rolling release
    assert updated.outs["endpointId"] == created.id and updated.outs["url"] == created.outs["url"]
    assert list(runpod_api.endpoints) == [created.id]
    assert runpod_api.endpoints[created.id]["image"] == "acme/f5tts-runpod:bbb222"


def test_scaling_flashboot_and_gpu_changes_update_in_place(runpod_api, endpoints):
    created = _create(endpoints)
    before = len(runpod_api.requests)
    news = {
        **PROPS,
        "workersMax": 6,
        "scalerType": "REQUEST_COUNT",
        "scalerValue": 2,
        "idleTimeout": None,  # a queue endpoint on REQUEST_COUNT takes none
        "flashboot": "PRIORITY_FLASHBOOT",
        "gpuPools": ["HOPPER_141"],
        "minCudaVersion": None,
        "allowedCudaVersions": ["12.8", "12.9"],
    }
    olds = engine_props(created.outs)
    assert endpoints.check(olds, engine_props(news)).failures == []
    updated = endpoints.update(created.id, olds, engine_props(news))

    assert runpod_api.operations(before) == ["PATCH updateEndpoint"]
    assert runpod_api.requests[before].body == {
        "gpu": {"pools": ["HOPPER_141"], "count": 1, "allowedCudaVersions": ["12.8", "12.9"], "minCudaVersion": ""},
        "workers": {"min": 0, "max": 6},
        "scaling": {"type": "REQUEST_COUNT", "requestCount": 2},
        "flashboot": "PRIORITY_FLASHBOOT",
    }
    read = endpoints.read(created.id, engine_props(updated.outs))
    live = {k: read.outs[k] for k in ("workersMax", "scalerType", "scalerValue", "flashboot", "gpuPools")}
    assert live == {
        "workersMax": 6,
        "scalerType": "REQUEST_COUNT",
        "scalerValue": 2,
        "flashboot": "PRIORITY_FLASHBOOT",
        "gpuPools": ["HOPPER_141"],
    }
    assert (read.outs["allowedCudaVersions"], read.outs["minCudaVersion"]) == (["12.8", "12.9"], None)
    assert list(runpod_api.endpoints) == [created.id]


def test_a_console_change_shows_as_drift_on_refresh(runpod_api, endpoints):
    created = _create(endpoints)
    runpod_api.endpoints[created.id]["workers"]["max"] = 9  # someone raised max workers in the console
    read = endpoints.read(created.id, engine_props(created.outs))
    assert read.outs["workersMax"] == 9
    diff = endpoints.diff(created.id, engine_props(read.outs), engine_props(PROPS))
    assert diff.changes and diff.replaces == []  # the next `up` sets it back


def test_registry_credential_create_rotate_and_point_the_endpoint_at_it(runpod_api, endpoints):
    registries = configure(ContainerRegistryProvider(), TOKEN)
    inputs = {"namePrefix": "f5tts-dev-registry", "username": "acme", "password": "tok-1"}
    checked = registries.check({}, engine_props(inputs)).inputs
    first = registries.create(checked)
    assert runpod_api.registries[first.id] == {"name": checked["name"], "username": "acme", "password": "tok-1"}
    created = _create(endpoints, {**PROPS, "registry": first.id})
    assert runpod_api.endpoints[created.id]["registry"] == first.id

    # Unchanged credentials keep their name: nothing to do.
    assert registries.check(first.outs, engine_props(inputs)).inputs["name"] == checked["name"]
    assert (
        registries.diff(first.id, first.outs, registries.check(first.outs, engine_props(inputs)).inputs).changes
        is False
    )

    # Rotation: a new token is a new credential (RunPod cannot update one), made before the old one goes.
    rotated = registries.check(first.outs, engine_props({**inputs, "password": "tok-2"})).inputs
    diff = registries.diff(first.id, first.outs, rotated)
    assert "password" in diff.replaces and diff.delete_before_replace is False
    second = registries.create(rotated)
    assert second.id != first.id and rotated["name"] != checked["name"]
    endpoints.update(created.id, engine_props(created.outs), engine_props({**PROPS, "registry": second.id}))
    registries.delete(first.id, first.outs)

    assert runpod_api.endpoints[created.id]["registry"] == second.id
    assert list(runpod_api.registries) == [second.id]
    assert registries.read(first.id, first.outs).id == ""
    registries.delete(first.id, first.outs)  # already gone: a no-op


def test_delete_scales_to_zero_then_deletes(runpod_api, endpoints):
    created = _create(endpoints, {**PROPS, "workersMin": 1})
    before = len(runpod_api.requests)
    endpoints.delete(created.id, engine_props(created.outs))

    assert runpod_api.operations(before) == ["GET getEndpoint", "PATCH updateEndpoint", "DELETE deleteEndpoint"]
    assert runpod_api.requests[before + 1].body == {"workers": {"min": 0, "max": 0}}
    assert runpod_api.endpoints == {}


def test_an_endpoint_deleted_by_hand_is_gone_on_refresh_and_delete_succeeds(runpod_api, endpoints):
    created = _create(endpoints)
    runpod_api.endpoints.clear()  # deleted in the console
    assert endpoints.read(created.id, engine_props(created.outs)).id == ""  # refresh drops it from the state
    before = len(runpod_api.requests)
    endpoints.delete(created.id, engine_props(created.outs))
    assert runpod_api.operations(before) == ["GET getEndpoint"]  # 404: already gone, nothing else to do


@pytest.mark.parametrize(("status", "retry_after"), [(429, 7), (503, 2), (503, None)])
def test_rate_limits_and_outages_are_retried_honouring_retry_after(runpod_api, endpoints, waits, status, retry_after):
    created = _create(endpoints)
    runpod_api.inject("updateEndpoint", status, retry_after=retry_after, times=2)
    olds, news = engine_props(created.outs), engine_props({**PROPS, "workersMax": 5})
    endpoints.update(created.id, olds, news)

    assert [r.status for r in runpod_api.requests[-3:]] == [status, status, 200]
    if retry_after is not None:
        assert waits == [retry_after, retry_after]
    else:
        assert len(waits) == 2 and all(0 < w <= 30 for w in waits)  # exponential backoff
    assert runpod_api.endpoints[created.id]["workers"]["max"] == 5


def test_a_create_is_retried_after_429_without_a_second_endpoint(runpod_api, endpoints, waits):
    runpod_api.inject("createEndpoint", 429, retry_after=3)
    created = _create(endpoints)
    assert waits == [3]
    assert list(runpod_api.endpoints) == [created.id]


def test_a_create_answered_too_late_is_adopted_not_repeated(runpod_api, endpoints):
    # RunPod makes the endpoint but the answer arrives after the client's timeout (0.5 s here).
    runpod_api.inject("createEndpoint", None, delay_s=1.5)
    created = _create(endpoints)

    assert list(runpod_api.endpoints) == [created.id]  # one endpoint, the one made by the lost attempt
    ops = runpod_api.operations()
    assert ops[:2] == ["GET listEndpoints", "POST createEndpoint"]
    assert ops.count("POST createEndpoint") == 1 and "PATCH updateEndpoint" in ops  # adopted, then converged


def test_a_stack_whose_state_was_lost_adopts_its_endpoint(runpod_api, endpoints):
    first = _create(endpoints)
    again = _create(endpoints, {**PROPS, "workersMax": 4})  # `pulumi up` with an empty state
    assert again.id == first.id and list(runpod_api.endpoints) == [first.id]
    assert runpod_api.endpoints[first.id]["workers"]["max"] == 4


@pytest.mark.parametrize(
    ("props", "status", "setting"),
    [
        ({"gpuPools": ["TURING_8"]}, 400, "f5tts:gpuPools"),
        ({"scalerType": "REQUEST_COUNT", "scalerValue": 1}, 422, "f5tts:idleTimeout"),
    ],
)
def test_refusals_surface_runpods_detail_and_name_the_setting(runpod_api, endpoints, props, status, setting):
    with pytest.raises(RunpodApiError) as excinfo:
        _create(endpoints, {**PROPS, **props})
    error = excinfo.value
    assert error.status == status and error.detail and error.detail in str(error)
    assert setting in str(error)
    assert BUCKET_SECRET not in str(error) and BASE_CONFIG["runpod:token"] not in str(error)
    assert runpod_api.endpoints == {}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"workersMin": 5, "workersMax": 2}, "workersMin"),
        ({"idleTimeout": 0}, "idleTimeout"),
        ({"idleTimeout": 3601}, "idleTimeout"),
        ({"gpuPools": []}, "gpuPools"),
        ({"allowedCudaVersions": ["12.8"], "minCudaVersion": "12.8"}, "minCudaVersion"),
        ({"scalerType": "REQUEST_COUNT", "scalerValue": 2}, "idleTimeout"),  # queue + request count + idle
        ({"type": "LOAD_BALANCER"}, "scalerType"),  # a load balancer has no queue delay
        ({"scalerValue": 0.1}, "scalerValue"),
    ],
)
def test_check_refuses_bad_settings_before_any_call(runpod_api, endpoints, override, field):
    failures = endpoints.check({}, engine_props({**PROPS, **override})).failures
    assert [f.property for f in failures] == [field]
    assert runpod_api.requests == []


def test_load_balancer_endpoint(runpod_api, endpoints):
    created = _create(endpoints, LB_PROPS)
    body = runpod_api.requests[-1].body
    assert (body["type"], body["scaling"], body["ports"]) == (
        "LOAD_BALANCER",
        {"type": "REQUEST_COUNT", "requestCount": 1},
        ["80/http"],
    )
    assert {k: body["env"][k] for k in ("F5TTS_SERVE", "PORT", "PORT_HEALTH")} == {
        "F5TTS_SERVE": "http",
        "PORT": "80",
        "PORT_HEALTH": "80",
    }
    assert created.outs["url"] == f"https://{created.id}.api.runpod.ai"
    # v2 cannot change an endpoint's type: queue <-> load balancer is a replacement (new id, new URL).
    diff = endpoints.diff(created.id, engine_props(created.outs), engine_props(PROPS))
    assert diff.replaces == ["type"]
    # The replacement is created while the old one still exists; the old (other type) is never adopted.
    replacement = _create(endpoints, PROPS)
    assert replacement.id != created.id and len(runpod_api.endpoints) == 2


def test_wrong_or_missing_api_key(runpod_api):
    wrong = configure(ServerlessEndpointProvider(), {"runpod:token": "not-the-key"})
    with pytest.raises(RunpodApiError, match="rejected the API key") as excinfo:
        wrong.create(engine_props(PROPS))
    assert "not-the-key" not in str(excinfo.value) and excinfo.value.status == 401
    assert runpod_api.endpoints == {}
    missing = configure(ServerlessEndpointProvider(), {})
    with pytest.raises(RunpodApiError, match=r"runpod:token .*--secret"):
        missing.create(engine_props(PROPS))


def test_the_fake_rejects_what_runpods_schema_rejects(runpod_api):
    """The fake is strict: a body outside RunPod's schema is refused (and would fail any provider test)."""
    client = RunpodRestClient(BASE_CONFIG["runpod:token"], max_attempts=1)
    good: dict[str, Any] = {
        "name": "x",
        "type": "QUEUE",
        "image": "a:b",
        "gpu": {"pools": ["ADA_24"]},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
    }
    bad = [
        {**good, "flashboot": True},  # the v1/GraphQL boolean, not v2's enum
        {**good, "workersMin": 0},  # v1's flat field: v2 nests workers
        {**good, "type": "LOAD_BALANCER"},  # a load balancer needs REQUEST_COUNT scaling
        {**good, "gpu": {"pools": []}},
        {**good, "gpu": {"pools": ["ADA_24"], "allowedCudaVersions": ["12"]}},
        {k: v for k, v in good.items() if k != "scaling"},
    ]
    for body in bad:
        with pytest.raises(RunpodApiError) as excinfo:
            client.request("POST", "/serverless", body)
        assert excinfo.value.status == 400 and excinfo.value.errors
    # Method, path and query are checked as well as the body.
    for method, path in [("GET", "/serverless?fields=all"), ("PUT", "/serverless/x1"), ("GET", "/endpoints")]:
        with pytest.raises(RunpodApiError) as excinfo:
            client.request(method, path)
        assert excinfo.value.status in (400, 404)
    assert len(runpod_api.request_problems) >= len(bad) + 3
    assert runpod_api.endpoints == {}
    runpod_api.requests.clear()  # sent on purpose
    client.request("POST", "/serverless", good)
    assert len(runpod_api.endpoints) == 1


def test_every_field_setting_names_a_stack_setting():
    from f5tts_infra.deployment_spec import STACK_SETTINGS

    keys = {f"f5tts:{s.key}" for s in STACK_SETTINGS} | {"f5tts:registryPassword"}
    named = {s for settings in FIELD_SETTINGS.values() for s in settings}
    assert named <= keys, named - keys


# --- migration from a stack deployed with the providers of before REST v2 ----------------------------------------
OLD_ENDPOINT_OUTS = {  # the endpoint's state as the earlier providers wrote it
    "name": "f5tts-dev",
    "templateId": "TEMPLATE",
    "gpuIds": ["ADA_24", "AMPERE_24"],
    "gpuCount": 1,
    "workersMin": 0,
    "workersMax": 3,
    "idleTimeout": 5,
    "scalerType": "QUEUE_DELAY",
    "scalerValue": 4,
    "flashboot": True,
    "executionTimeoutMs": 600_000,
    "allowedCudaVersions": ["12.8", "12.9"],
    "endpointId": "ENDPOINT",
    "url": "https://api.runpod.ai/v2/ENDPOINT",
}


def test_migration_adopts_the_endpoint_and_retires_its_template(runpod_api, endpoints):
    endpoint_id, template_id = runpod_api.seed_template_endpoint(
        {
            "name": "f5tts-dev",
            "type": "QUEUE",
            "args": "",
            "ports": [],
            "registry": None,
            "gpu": {
                "pools": ["ADA_24", "AMPERE_24"],
                "count": 1,
                "allowedCudaVersions": ["12.8", "12.9"],
                "minCudaVersion": None,
            },
            "workers": {"min": 0, "max": 3, "idleTimeout": 5},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": 600_000,
            "flashboot": "FLASHBOOT",
            "createdAt": "2026-06-01T12:00:00Z",
        },
        {"image": "acme/f5tts-runpod:old", "env": {"F5TTS_MODEL": "F5TTS_v1_Base"}, "disk": 20},
    )
    olds = engine_props({**OLD_ENDPOINT_OUTS, "templateId": template_id, "endpointId": endpoint_id})

    # Same resource (same URN): `pulumi up` diffs the old state against the new inputs and updates in place.
    diff = endpoints.diff(endpoint_id, olds, engine_props(PROPS))
    assert diff.changes and diff.replaces == []
    updated = endpoints.update(endpoint_id, olds, engine_props(PROPS))
    assert updated.outs["url"] == f"https://api.runpod.ai/v2/{endpoint_id}"  # the URL clients use is unchanged
    patch = runpod_api.requests[-1].body
    assert patch["image"] == PROPS["image"] and patch["env"] == ENV  # the endpoint now carries its own container
    assert list(runpod_api.endpoints) == [endpoint_id]

    # The template resource, no longer declared, is deleted through the class its state names.
    # (The state holds the provider pickled by reference, with the fields the earlier class had.)
    old_template_provider = ServerlessTemplateProvider()
    vars(old_template_provider).update(_delete_timeout_s=180.0, _delete_poll_s=10.0)
    blob = serialize_provider(old_template_provider)
    retired = configure(dill.loads(base64.b64decode(blob)), TOKEN)
    assert type(retired) is ServerlessTemplateProvider
    retired.delete(template_id, {})  # bound to the endpoint: RunPod keeps it (400) and deletes it with the endpoint
    assert runpod_api.requests[-1].status == 400
    retired.delete("gone-already", {})  # 404 is success

    read = endpoints.read(endpoint_id, engine_props(updated.outs))
    assert endpoints.diff(endpoint_id, engine_props(read.outs), engine_props(PROPS)).changes is False
    endpoints.delete(endpoint_id, engine_props(updated.outs))
    assert runpod_api.endpoints == {} and runpod_api.templates == {}


def test_a_registry_create_answered_too_late_is_adopted_and_refusals_never_echo_the_password(runpod_api):
    registries = configure(ContainerRegistryProvider({"timeout_s": 0.5, "sleep": Waits()}), TOKEN)
    checked = registries.check(
        {}, engine_props({"namePrefix": "f5tts-dev-registry", "username": "acme", "password": "tok-9"})
    )
    runpod_api.inject("createRegistry", None, delay_s=1.5)
    created = registries.create(checked.inputs)
    assert list(runpod_api.registries) == [created.id]
    assert runpod_api.operations().count("POST createRegistry") == 1

    # A refused create surfaces RunPod's detail, never the password.
    runpod_api.inject("createRegistry", 422)
    with pytest.raises(RunpodApiError) as excinfo:
        registries.create({**checked.inputs, "name": "f5tts-dev-registry-other"})
    assert excinfo.value.status == 422 and "injected fault" in str(excinfo.value)
    assert "tok-9" not in str(excinfo.value) and "acme" not in str(excinfo.value)


def test_a_fake_response_outside_the_schema_is_caught(runpod_api, endpoints):
    """The fake's own answers are validated too: a response RunPod's schema rejects is recorded (and the fixture
    fails the test that caused it)."""
    created = _create(endpoints)
    del runpod_api.endpoints[created.id]["createdAt"]  # a required field of `Endpoint`
    endpoints.read(created.id, engine_props(created.outs))
    assert any("createdAt" in p for p in runpod_api.response_problems), runpod_api.response_problems
    runpod_api.response_problems.clear()  # caused on purpose
