"""Turns the deployment spec into resources: bucket -> worker key -> (registry credential) -> endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from f5tts_infra.b2_bucket import WORKER_KEY_CAPABILITIES, B2Bucket, B2BucketKey
from f5tts_infra.deployment_spec import (
    HTTP_PORT,
    REGISTRY_PASSWORD_SETTING,
    SECRET_SETTINGS,
    Service,
    StackConfigError,
    apply_stack_config,
    read_stack_config,
    resource_name,
)
from f5tts_infra.runpod_endpoint import ContainerRegistry, ServerlessEndpoint
from f5tts_infra.worker_env import serving_env
from worker.storage import region_for


def worker_env(service: Service, bucket: B2Bucket, key: B2BucketKey) -> pulumi.Output[dict]:
    """The endpoint's environment: the declared worker settings, the serving mode of the endpoint type, and the
    bucket's coordinates and key. The whole mapping is a secret because it carries the key; RunPod receives it,
    the state stores it encrypted."""
    serving = serving_env(service.endpoint_type, HTTP_PORT)
    key_id: pulumi.Output[str] = pulumi.Output.secret(key.keyId)
    key_secret: pulumi.Output[str] = pulumi.Output.secret(key.applicationKey)
    return pulumi.Output.all(
        endpoint=bucket.s3Endpoint,
        name=bucket.bucketName,
        key_id=key_id,
        key=key_secret,
    ).apply(
        lambda b: {
            **service.env,
            **serving,
            "BUCKET_ENDPOINT_URL": b["endpoint"],
            "BUCKET_NAME": b["name"],
            # The worker's own reading of the endpoint, so the two can never disagree.
            "BUCKET_REGION": service.storage.region or region_for(b["endpoint"]),
            "BUCKET_ACCESS_KEY_ID": b["key_id"],
            "BUCKET_SECRET_ACCESS_KEY": b["key"],
        }
    )


def endpoint_inputs(
    service: Service, name: str, env: pulumi.Input[dict], registry: pulumi.Input[str] | None
) -> dict[str, Any]:
    """The ServerlessEndpoint's inputs, in RunPod's v2 vocabulary."""
    load_balancer = service.endpoint_type == "LOAD_BALANCER"
    return {
        "name": name,
        "type": service.endpoint_type,
        "image": service.image.ref,
        "env": env,
        "registry": registry,
        "disk": service.disk_gb,
        # A load balancer reaches the worker's http mode on this port (PORT, PORT_HEALTH in the env).
        "ports": [f"{HTTP_PORT}/http"] if load_balancer else [],
        "gpuPools": list(service.gpu.pools),
        "gpuCount": service.gpu.count,
        "allowedCudaVersions": list(service.gpu.allowed_cuda_versions),
        "minCudaVersion": service.gpu.min_cuda_version,
        "workersMin": service.scaling.workers_min,
        "workersMax": service.scaling.workers_max,
        "idleTimeout": service.idle_timeout_s,
        "scalerType": service.scaler_type,
        "scalerValue": service.scaler_value,
        "flashboot": service.scaling.flashboot,  # always sent: RunPod's own default is OFF
        "timeoutMs": service.scaling.execution_timeout_ms,
        "dataCenterIds": list(service.data_center_ids),
        "networkVolumes": list(service.network_volumes),
    }


class F5ttsService(pulumi.ComponentResource):
    """Everything one stack deploys, as one component so `pulumi stack` shows it as a unit."""

    def __init__(
        self,
        name: str,
        service: Service,
        registry_password: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("f5tts:index:Service", name, None, opts)
        # The stack settings require both (read_service); a Service built in code is checked here.
        if service.storage.bucket_name is None:
            raise ValueError("storage.bucket_name is required: the bucket's name is global and has no default")
        if service.registry_username and registry_password is None:
            raise ValueError("registry_username is set without registry_password")
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = B2Bucket(
            f"{name}-bucket",
            bucket_name=service.storage.bucket_name,
            lifecycle_prefix=service.lifecycle_prefix,
            lifecycle_days=service.storage.output_retention_days,
            expected_region=service.storage.region,
            force_destroy=service.storage.force_destroy,
            opts=child,
        )
        self.worker_key = B2BucketKey(
            f"{name}-worker-key",
            key_name=f"{name}-worker",
            bucket_id=self.bucket.bucketId,
            capabilities=WORKER_KEY_CAPABILITIES,
            rotation=service.storage.key_rotation,
            opts=child,
        )
        self.registry: ContainerRegistry | None = None
        registry_id: pulumi.Input[str] | None = service.registry_id
        if service.registry_username and registry_password is not None:
            self.registry = ContainerRegistry(
                f"{name}-registry",
                name_prefix=f"{name}-registry",
                username=service.registry_username,
                password=registry_password,
                opts=child,
            )
            registry_id = self.registry.registryId
        self.endpoint = ServerlessEndpoint(
            f"{name}-endpoint",
            endpoint_inputs(service, name, worker_env(service, self.bucket, self.worker_key), registry_id),
            opts=child,
        )
        self.outputs = {
            "endpointId": self.endpoint.endpointId,
            "endpointUrl": self.endpoint.url,
            "endpointType": service.endpoint_type,
            "bucketName": self.bucket.bucketName,
            "s3Endpoint": self.bucket.s3Endpoint,
            "image": service.image.ref,
        }
        self.register_outputs(self.outputs)


@dataclass(frozen=True)
class Deployment:
    service: Service
    component: F5ttsService


def deploy(service: Service, stack: str, registry_password: pulumi.Input[str] | None = None) -> Deployment:
    return Deployment(service, F5ttsService(resource_name(service, stack), service, registry_password))


def main() -> Deployment:
    """The program: read the stack config once, check the secrets exist, build, export."""
    try:
        service = apply_stack_config(read_stack_config(pulumi.Config()))
    except StackConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    for key in SECRET_SETTINGS:
        namespace, name = key.split(":")
        # Fail at preview, not halfway through `up`; the providers read the values themselves.
        pulumi.Config(namespace).require_secret(name)
    # The registry password is a secret Output from here on: encrypted in the state, `[secret]` in previews.
    password = pulumi.Config().require_secret(REGISTRY_PASSWORD_SETTING) if service.registry_username else None
    deployment = deploy(service, pulumi.get_stack(), password)
    for output, value in deployment.component.outputs.items():
        pulumi.export(output, value)
    return deployment
