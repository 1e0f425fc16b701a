"""RunPod serverless template and endpoint as Pulumi dynamic resources.

Why not the official provider (`runpodinfra`): it cannot set FlashBoot, the execution timeout, the GPU count or the
allowed CUDA versions, and it replaces the endpoint (new id, new URL for every client) when the template changes.
Here the template is updated in place with `saveTemplate(id)`, so a new image tag or env is a template update that
RunPod rolls out to the same endpoint; the endpoint itself is updated in place with `saveEndpoint(id)` and keeps
its id for its whole life.

The API key comes from stack config (`runpod:token`, set with `--secret`) through `configure`; it is never an input
and never in the state.
"""

from __future__ import annotations

import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from f5tts_infra.runpod_api import RunpodApiError, RunpodClient, endpoint_url, is_not_found

RUNPOD_TOKEN_CONFIG = "runpod:token"
# How RunPod words "this template is still attached / was just detached": worth waiting for, not failing on.
TEMPLATE_BUSY_MARKERS = ("in use", "is used", "assigned", "try again")


class _RunpodProvider(ResourceProvider):
    INPUTS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._token: str | None = None

    def configure(self, req: Any) -> None:
        self._token = req.config.get(RUNPOD_TOKEN_CONFIG)

    def _client(self) -> RunpodClient:
        if not self._token:
            raise RunpodApiError(f"RunPod API key missing: pulumi config set {RUNPOD_TOKEN_CONFIG} <key> --secret")
        return RunpodClient(self._token)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in self.INPUTS if olds.get(k) != news.get(k)]
        # Everything is updatable in place: the id (and the endpoint URL clients use) never changes.
        return DiffResult(changes=bool(changed), replaces=[])


class ServerlessTemplateProvider(_RunpodProvider):
    INPUTS = ("name", "imageName", "containerDiskInGb", "env", "dockerArgs", "registryAuthId")

    def __init__(self, delete_timeout_s: float = 180.0, delete_poll_s: float = 10.0) -> None:
        super().__init__()
        # RunPod refuses to delete a template for up to ~2 minutes after its endpoint is gone.
        self._delete_timeout_s = delete_timeout_s
        self._delete_poll_s = delete_poll_s

    @staticmethod
    def template_input(props: dict[str, Any], template_id: str | None = None) -> dict[str, Any]:
        template: dict[str, Any] = {
            "name": props["name"],
            "imageName": props["imageName"],
            "containerDiskInGb": int(props["containerDiskInGb"]),
            "volumeInGb": 0,  # serverless workers have no pod volume
            "dockerArgs": props.get("dockerArgs") or "",  # empty: the image's CMD
            "env": [{"key": k, "value": str(v)} for k, v in sorted((props.get("env") or {}).items())],
            "isServerless": True,
            "readme": "",
        }
        if props.get("registryAuthId"):
            template["containerRegistryAuthId"] = props["registryAuthId"]
        if template_id:
            template["id"] = template_id
        return template

    def create(self, props: dict[str, Any]) -> CreateResult:
        saved = self._client().save_template(self.template_input(props))
        return CreateResult(saved["id"], {**props, "templateId": saved["id"]})

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        saved = self._client().save_template(self.template_input(news, id_))
        if saved["id"] != id_:
            raise RunpodApiError(f"RunPod saved template {id_} as {saved['id']}")
        return UpdateResult({**news, "templateId": id_})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        live = self._client().get_template(id_)
        if live is None:
            return ReadResult("", {})
        # Env values are not read back (RunPod may mask them); the state's are kept.
        return ReadResult(
            id_,
            {
                **props,
                "name": live["name"],
                "imageName": live["imageName"],
                "containerDiskInGb": live["containerDiskInGb"],
                "templateId": id_,
            },
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = self._client()
        if client.get_template(id_) is None:
            return
        deadline = time.monotonic() + self._delete_timeout_s
        while True:
            try:
                client.delete_template(props["name"])
                return
            except RunpodApiError as exc:
                if is_not_found(exc):
                    return
                busy = any(marker in str(exc).lower() for marker in TEMPLATE_BUSY_MARKERS)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(self._delete_poll_s)


class ServerlessEndpointProvider(_RunpodProvider):
    INPUTS = (
        "name",
        "templateId",
        "gpuIds",
        "gpuCount",
        "workersMin",
        "workersMax",
        "idleTimeout",
        "scalerType",
        "scalerValue",
        "flashboot",
        "executionTimeoutMs",
        "allowedCudaVersions",
        "locations",
        "networkVolumeId",
    )

    @staticmethod
    def endpoint_input(props: dict[str, Any], endpoint_id: str | None = None) -> dict[str, Any]:
        # Pulumi hands numbers over as floats; RunPod's Int fields want integers.
        endpoint: dict[str, Any] = {
            "name": props["name"],
            "templateId": props["templateId"],
            "gpuIds": ",".join(props["gpuIds"]),  # priority order
            "gpuCount": int(props["gpuCount"]),
            "workersMin": int(props["workersMin"]),
            "workersMax": int(props["workersMax"]),
            "idleTimeout": int(props["idleTimeout"]),
            "scalerType": props["scalerType"],
            "scalerValue": int(props["scalerValue"]),
            "flashBootType": "FLASHBOOT" if props["flashboot"] else "OFF",
            "executionTimeoutMs": int(props["executionTimeoutMs"]),
            "allowedCudaVersions": ",".join(props["allowedCudaVersions"]),
            "locations": props.get("locations") or "",
        }
        if props.get("networkVolumeId"):
            endpoint["networkVolumeId"] = props["networkVolumeId"]
        if endpoint_id:
            endpoint["id"] = endpoint_id
        return endpoint

    def create(self, props: dict[str, Any]) -> CreateResult:
        saved = self._client().save_endpoint(self.endpoint_input(props))
        return CreateResult(saved["id"], {**props, "endpointId": saved["id"], "url": endpoint_url(saved["id"])})

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        saved = self._client().save_endpoint(self.endpoint_input(news, id_))
        if saved["id"] != id_:
            raise RunpodApiError(f"RunPod saved endpoint {id_} as {saved['id']}")
        return UpdateResult({**news, "endpointId": id_, "url": endpoint_url(id_)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        live = self._client().get_endpoint(id_)
        if live is None:
            return ReadResult("", {})
        outs = {
            **props,
            "name": live["name"],
            "templateId": live["templateId"],
            "gpuIds": [g for g in (live.get("gpuIds") or "").split(",") if g],
            "gpuCount": live["gpuCount"],
            "workersMin": live["workersMin"],
            "workersMax": live["workersMax"],
            "idleTimeout": live["idleTimeout"],
            "scalerType": live["scalerType"],
            "scalerValue": live["scalerValue"],
            "flashboot": live.get("flashBootType") == "FLASHBOOT",
            "executionTimeoutMs": live["executionTimeoutMs"],
            "allowedCudaVersions": [v for v in (live.get("allowedCudaVersions") or "").split(",") if v],
            "endpointId": id_,
            "url": endpoint_url(id_),
        }
        return ReadResult(id_, outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = self._client()
        if client.get_endpoint(id_) is None:
            return
        # RunPod deletes only an endpoint scaled to zero workers.
        client.save_endpoint({**self.endpoint_input(props, id_), "workersMin": 0, "workersMax": 0})
        client.delete_endpoint(id_)


class ServerlessTemplate(Resource, module="runpod", name="ServerlessTemplate"):
    templateId: pulumi.Output[str]
    imageName: pulumi.Output[str]
    env: pulumi.Output[dict]

    def __init__(
        self,
        name: str,
        *,
        template_name: pulumi.Input[str],
        image: pulumi.Input[str],
        env: pulumi.Input[dict],
        container_disk_gb: pulumi.Input[int],
        registry_auth_id: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": template_name,
            "imageName": image,
            "env": env,
            "containerDiskInGb": container_disk_gb,
            "dockerArgs": "",
            "registryAuthId": registry_auth_id,
            "templateId": None,
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["env"])
        super().__init__(ServerlessTemplateProvider(), name, props, pulumi.ResourceOptions.merge(secret, opts))


class ServerlessEndpoint(Resource, module="runpod", name="ServerlessEndpoint"):
    endpointId: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        endpoint_name: pulumi.Input[str],
        template_id: pulumi.Input[str],
        gpu_ids: list[str],
        gpu_count: int,
        allowed_cuda_versions: list[str],
        workers_min: int,
        workers_max: int,
        idle_timeout_s: int,
        scaler_type: str,
        scaler_value: int,
        flashboot: bool,
        execution_timeout_s: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": endpoint_name,
            "templateId": template_id,
            "gpuIds": list(gpu_ids),
            "gpuCount": gpu_count,
            "allowedCudaVersions": list(allowed_cuda_versions),
            "workersMin": workers_min,
            "workersMax": workers_max,
            "idleTimeout": idle_timeout_s,
            "scalerType": scaler_type,
            "scalerValue": scaler_value,
            "flashboot": flashboot,
            "executionTimeoutMs": execution_timeout_s * 1000,
            "endpointId": None,
            "url": None,
        }
        super().__init__(ServerlessEndpointProvider(), name, props, opts)
