"""The RunPod serverless endpoint and its container registry credential as Pulumi dynamic resources, on RunPod's
REST API v2 (`runpod_rest.py`).

One endpoint resource carries everything: image, env, registry credential, disk, ports, GPU pools, workers,
scaling, FlashBoot, timeout, type, data centers and network volumes. There is no template resource: in v2 an
endpoint holds its own container settings, and a template is read only once, when an endpoint is created from it,
so a template would add a second object without ever updating the endpoint. An image or env change is a PATCH of
the endpoint itself, which RunPod rolls out as a rolling release; the id, and the URL clients use, never change.
Only a change of `type` (queue <-> load balancer) replaces the endpoint, since v2 cannot update it.

The API key comes from stack config (`runpod:token`, set with `--secret`) through `configure`: it is never an input,
never in the state. The endpoint's env (bucket key) and the registry password are Pulumi secrets, so the state
holds them encrypted and previews show `[secret]`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from f5tts_infra.runpod_rest import RunpodApiError, RunpodRestClient, endpoint_url

RUNPOD_TOKEN_CONFIG = "runpod:token"
ENDPOINT_TYPES = ("QUEUE", "LOAD_BALANCER")
SCALER_TYPES = ("QUEUE_DELAY", "REQUEST_COUNT")
FLASHBOOT_MODES = ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT")

# Resource inputs, grouped by the top-level field of RunPod's request body that carries them. A PATCH sends only the
# groups that changed, so a scaling change does not start a rolling release of the workers.
BODY_GROUPS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "image": ("image",),
    "env": ("env",),
    "registry": ("registry",),
    "disk": ("disk",),
    "ports": ("ports",),
    "gpu": ("gpuPools", "gpuCount", "allowedCudaVersions", "minCudaVersion"),
    "workers": ("workersMin", "workersMax", "idleTimeout"),
    "scaling": ("scalerType", "scalerValue"),
    "flashboot": ("flashboot",),
    "timeout": ("timeoutMs",),
    "dataCenterIds": ("dataCenterIds",),
    "networkVolumes": ("networkVolumes",),
}
ENDPOINT_INPUTS: tuple[str, ...] = ("type", *(k for keys in BODY_GROUPS.values() for k in keys))

# RunPod's body fields -> the stack settings a user changes to fix a refused value (messages name them).
FIELD_SETTINGS: dict[str, tuple[str, ...]] = {
    "type": ("f5tts:endpointType",),
    "image": ("f5tts:imageRepository", "f5tts:imageTag", "f5tts:imageDigest"),
    "env": ("f5tts:workerEnv",),
    "registry": ("f5tts:registryUsername", "f5tts:registryPassword", "f5tts:registryId"),
    "disk": ("f5tts:diskGb",),
    "ports": ("f5tts:endpointType",),
    "gpu.pools": ("f5tts:gpuPools",),
    "gpu.count": ("f5tts:gpuCount",),
    "gpu.allowedCudaVersions": ("f5tts:allowedCudaVersions",),
    "gpu.minCudaVersion": ("f5tts:minCudaVersion",),
    "workers.min": ("f5tts:workersMin",),
    "workers.max": ("f5tts:workersMax",),
    "workers.idleTimeout": ("f5tts:idleTimeout",),
    "scaling": ("f5tts:scalerType", "f5tts:scalerValue"),
    "flashboot": ("f5tts:flashboot",),
    "timeout": ("f5tts:executionTimeoutMs",),
    "dataCenterIds": ("f5tts:dataCenterIds",),
    "networkVolumes": ("f5tts:networkVolumes",),
}


def endpoint_problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """(input, message) for settings RunPod would refuse; checked before any call. Unknown values are skipped."""
    problems: list[tuple[str, str]] = []

    def number(key: str) -> float | None:
        value = props.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    kind, scaler = props.get("type"), props.get("scalerType")
    if kind is not None and kind not in ENDPOINT_TYPES:
        problems.append(("type", f"must be one of {', '.join(ENDPOINT_TYPES)}"))
    if scaler is not None and scaler not in SCALER_TYPES:
        problems.append(("scalerType", f"must be one of {', '.join(SCALER_TYPES)}"))
    if props.get("flashboot") is not None and props["flashboot"] not in FLASHBOOT_MODES:
        problems.append(("flashboot", f"must be one of {', '.join(FLASHBOOT_MODES)}"))
    low, high = number("workersMin"), number("workersMax")
    if low is not None and low < 0:
        problems.append(("workersMin", "must be 0 or more"))
    if low is not None and high is not None and low > high:
        problems.append(("workersMin", f"workers.min ({low:g}) must not exceed workers.max ({high:g})"))
    idle = number("idleTimeout")
    if idle is not None and not 1 <= idle <= 3600:
        problems.append(("idleTimeout", "must be between 1 and 3600 seconds"))
    if idle is not None and kind == "QUEUE" and scaler == "REQUEST_COUNT":
        problems.append(("idleTimeout", "RunPod takes no idle timeout for a queue endpoint scaling on REQUEST_COUNT"))
    if kind == "LOAD_BALANCER" and scaler == "QUEUE_DELAY":
        problems.append(("scalerType", "a LOAD_BALANCER endpoint has no queue: it scales on REQUEST_COUNT"))
    pools = props.get("gpuPools")
    if isinstance(pools, list) and not pools:
        problems.append(("gpuPools", "list at least one GPU pool"))
    if props.get("allowedCudaVersions") and props.get("minCudaVersion"):
        problems.append(("minCudaVersion", "set allowedCudaVersions or minCudaVersion, not both"))
    value = number("scalerValue")
    if value is not None and scaler == "QUEUE_DELAY" and value < 0.5:
        problems.append(("scalerValue", "a queue delay is at least 0.5 seconds"))
    if value is not None and scaler == "REQUEST_COUNT" and (value < 1 or value != int(value)):
        problems.append(("scalerValue", "a request count is a whole number, at least 1"))
    return problems


def _ints(values: Any) -> Any:
    # Pulumi hands numbers to a provider as floats; RunPod's integer fields refuse 4.0.
    return int(values) if isinstance(values, float) and values.is_integer() else values


def body_group(group: str, props: dict[str, Any], *, update: bool = False, olds: dict[str, Any] | None = None) -> Any:
    """The value of one top-level field of a create or PATCH body."""
    if group == "gpu":
        gpu: dict[str, Any] = {"pools": list(props["gpuPools"]), "count": _ints(props.get("gpuCount") or 1)}
        allowed, floor = list(props.get("allowedCudaVersions") or []), props.get("minCudaVersion")
        if update:
            # PATCH keeps what is omitted: state both constraints, clearing the one not used ([] and "").
            gpu["allowedCudaVersions"] = allowed
            if floor or (olds or {}).get("minCudaVersion") or not allowed:
                gpu["minCudaVersion"] = floor or ""
        elif floor:
            gpu["minCudaVersion"] = floor
        elif allowed:
            gpu["allowedCudaVersions"] = allowed
        return gpu
    if group == "workers":
        workers = {"min": _ints(props["workersMin"]), "max": _ints(props["workersMax"])}
        if props.get("idleTimeout") is not None:
            workers["idleTimeout"] = _ints(props["idleTimeout"])
        return workers
    if group == "scaling":
        if props["scalerType"] == "QUEUE_DELAY":
            return {"type": "QUEUE_DELAY", "queueDelay": props["scalerValue"]}
        return {"type": "REQUEST_COUNT", "requestCount": _ints(props["scalerValue"])}
    if group == "timeout":
        return _ints(props["timeoutMs"])
    (key,) = BODY_GROUPS[group]
    value = props.get(key)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return {k: str(v) for k, v in value.items()}
    return _ints(value)


def create_body(props: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"type": props["type"]}
    for group in BODY_GROUPS:
        value = body_group(group, props)
        if value is not None:  # no registry: leave it out (a PATCH sends null to clear one)
            body[group] = value
    return body


def changed_groups(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    return [g for g, keys in BODY_GROUPS.items() if any(_norm(olds.get(k)) != _norm(news.get(k)) for k in keys)]


def _norm(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value in ([], {}, ""):
        return None
    return value


def live_props(live: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as RunPod returns it, in the resource's input names (what `pulumi refresh` compares)."""
    gpu = live.get("gpu") or {}
    workers, scaling = live.get("workers") or {}, live.get("scaling") or {}
    return {
        "name": live.get("name"),
        "type": live.get("type") or "QUEUE",
        "image": live.get("image"),
        "env": live.get("env") or {},
        "registry": live.get("registry"),
        "disk": live.get("disk"),
        "ports": live.get("ports") or [],
        "gpuPools": gpu.get("pools") or [],
        "gpuCount": gpu.get("count"),
        "allowedCudaVersions": gpu.get("allowedCudaVersions") or [],
        "minCudaVersion": gpu.get("minCudaVersion"),
        "workersMin": workers.get("min"),
        "workersMax": workers.get("max"),
        "idleTimeout": workers.get("idleTimeout"),
        "scalerType": scaling.get("type"),
        "scalerValue": scaling.get("queueDelay", scaling.get("requestCount")),
        "flashboot": live.get("flashboot"),
        "timeoutMs": live.get("timeout"),
        "dataCenterIds": live.get("dataCenterIds") or [],
        "networkVolumes": live.get("networkVolumes") or [],
    }


def settings_at_fault(exc: RunpodApiError, body: dict[str, Any]) -> list[str]:
    """The stack settings behind a refused request: those RunPod's `errors` point at (each starts with a body
    path, e.g. `gpu.pools: ...`), else those of every field the request carried."""
    paths = [m.group(1) for e in exc.errors if (m := re.match(r"^\s*([A-Za-z]+(?:\.[A-Za-z]+)*)", e))]
    named = [
        s for p in paths for f, settings in FIELD_SETTINGS.items() if p == f or p.startswith(f + ".") for s in settings
    ]
    if not named:
        fields: list[str] = []
        for key, value in body.items():
            nested = key in ("gpu", "workers") and isinstance(value, dict)
            fields += [f"{key}.{sub}" for sub in value] if nested else [key]
        named = [s for f in fields for s in FIELD_SETTINGS.get(f, ())]
    return list(dict.fromkeys(named))


class _RunpodProvider(ResourceProvider):
    def __init__(self, client_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._token: str | None = None
        # Tests shorten timeouts and backoff here; the program leaves it empty (the provider is pickled to the state).
        self._client_options = client_options

    def configure(self, req: Any) -> None:
        self._token = req.config.get(RUNPOD_TOKEN_CONFIG)

    def _client(self) -> RunpodRestClient:
        if not self._token:
            raise RunpodApiError(f"RunPod API key missing: pulumi config set {RUNPOD_TOKEN_CONFIG} <key> --secret")
        return RunpodRestClient(self._token, **(self._client_options or {}))

    @staticmethod
    def _refused(exc: RunpodApiError, body: dict[str, Any]) -> RunpodApiError:
        if not exc.refused_input:
            return exc
        settings = settings_at_fault(exc, body)
        hint = f" (check {', '.join(settings)})" if settings else ""
        return RunpodApiError(f"{exc}{hint}", status=exc.status, title=exc.title, detail=exc.detail, errors=exc.errors)


class ServerlessEndpointProvider(_RunpodProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(news, [CheckFailure(key, message) for key, message in endpoint_problems(news)])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Endpoints deployed before v2 carry no `type`: they were queue endpoints.
        type_changed = (olds.get("type") or "QUEUE") != news.get("type")
        changed = changed_groups(olds, news)
        return DiffResult(changes=bool(changed) or type_changed, replaces=["type"] if type_changed else [])

    def _outs(self, endpoint_id: str, props: dict[str, Any]) -> dict[str, Any]:
        return {**props, "endpointId": endpoint_id, "url": endpoint_url(endpoint_id, props["type"])}

    def create(self, props: dict[str, Any]) -> CreateResult:
        body = create_body(props)
        with self._client() as client:
            try:
                # Adopt only an endpoint of the same name and type: a type change replaces the endpoint, and the
                # old one (other type) must not be mistaken for the new.
                endpoint, adopted = client.create_endpoint(
                    body, adopt=lambda e: e.get("name") == body["name"] and (e.get("type") or "QUEUE") == body["type"]
                )
                if adopted:  # made by an attempt whose answer was lost: bring it to the declared settings
                    patch = {g: v for g, v in body.items() if g != "type"}
                    patch["gpu"] = body_group("gpu", props, update=True, olds=live_props(endpoint))
                    client.update_endpoint(endpoint["id"], patch)
            except RunpodApiError as exc:
                raise self._refused(exc, body) from None
        pulumi.log.info(f"RunPod endpoint {endpoint['id']} {'adopted' if adopted else 'created'}")
        return CreateResult(endpoint["id"], self._outs(endpoint["id"], props))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        body = {g: body_group(g, news, update=True, olds=olds) for g in changed_groups(olds, news)}
        if body:
            with self._client() as client:
                try:
                    client.update_endpoint(id_, body)
                except RunpodApiError as exc:
                    raise self._refused(exc, body) from None
        return UpdateResult(self._outs(id_, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        with self._client() as client:
            live = client.get_endpoint(id_)
        if live is None:
            return ReadResult("", {})  # deleted by hand: `pulumi refresh` drops it from the state
        return ReadResult(id_, self._outs(id_, live_props(live)))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        with self._client() as client:
            live = client.get_endpoint(id_)
            if live is None:
                return
            # Scale to zero first: no worker keeps running (and billing) while the delete is processed.
            workers = live.get("workers") or {}
            if workers.get("min") or workers.get("max"):
                client.update_endpoint(id_, {"workers": {"min": 0, "max": 0}})
            client.delete_endpoint(id_)


class ContainerRegistryProvider(_RunpodProvider):
    """A registry credential (`/v2/registries`). RunPod cannot update one, so new credentials are a new object under
    a new name: created first, then the endpoint is pointed at it, then the old one is deleted."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(k, "must not be empty") for k in ("username", "password") if news.get(k) == ""]
        same = olds.get("name") and all(olds.get(k) == news.get(k) for k in ("namePrefix", "username", "password"))
        name = olds["name"] if same else f"{news.get('namePrefix')}-{secrets.token_hex(3)}"
        return CheckResult({**news, "name": name}, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("name", "username", "password") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        with self._client() as client:
            registry, _adopted = client.create_registry(props["name"], props["username"], props["password"])
        return CreateResult(registry["id"], {**props, "registryId": registry["id"]})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        with self._client() as client:
            live = client.get_registry(id_)
        if live is None:
            return ReadResult("", {})
        return ReadResult(id_, {**props, "name": live["name"], "registryId": id_})  # username/password are write-only

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        with self._client() as client:
            client.delete_registry(id_)


class ServerlessTemplateProvider(_RunpodProvider):
    """Retires the template resource of stacks deployed before REST v2 (see docs/deploy.md, "Migrating").

    Those stacks' state refers to this class by name, so `pulumi up` calls its `delete` once the program no longer
    declares a template. RunPod refuses to delete a template still bound to an endpoint (400) and deletes it along
    with that endpoint, so a bound template is left to RunPod and only leaves the state.
    """

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        with self._client() as client:
            try:
                client.delete_template(id_)
            except RunpodApiError as exc:
                if exc.not_found:
                    return
                if exc.status == 400:
                    pulumi.log.info(f"template {id_} stays bound to its endpoint; RunPod deletes it with the endpoint")
                    return
                raise


class ServerlessEndpoint(Resource, module="runpod", name="ServerlessEndpoint"):
    endpointId: pulumi.Output[str]
    url: pulumi.Output[str]
    image: pulumi.Output[str]
    env: pulumi.Output[dict]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        """`props` holds every input in ENDPOINT_INPUTS (see `endpoint_inputs` in program.py)."""
        missing = sorted(set(ENDPOINT_INPUTS) - set(props))
        if missing:
            raise ValueError(f"ServerlessEndpoint {name}: missing inputs {', '.join(missing)}")
        secret = pulumi.ResourceOptions(additional_secret_outputs=["env"])
        outputs = {"endpointId": None, "url": None}
        super().__init__(
            ServerlessEndpointProvider(), name, {**props, **outputs}, pulumi.ResourceOptions.merge(secret, opts)
        )


class ContainerRegistry(Resource, module="runpod", name="ContainerRegistry"):
    registryId: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        name_prefix: str,
        username: pulumi.Input[str],
        password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "namePrefix": name_prefix,
            "username": pulumi.Output.secret(username),
            "password": pulumi.Output.secret(password),
            "name": None,
            "registryId": None,
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["username", "password"])
        super().__init__(ContainerRegistryProvider(), name, props, pulumi.ResourceOptions.merge(secret, opts))
