"""Turns the service declaration into resources: bucket -> worker key -> template (env from both) -> endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from f5tts_infra.b2_bucket import WORKER_KEY_CAPABILITIES, B2Bucket, B2BucketKey
from f5tts_infra.runpod_endpoint import ServerlessEndpoint, ServerlessTemplate
from f5tts_infra.service import (
    SECRET_SETTINGS,
    Service,
    StackConfigError,
    apply_stack_config,
    read_stack_config,
    resource_name,
)


def worker_env(service: Service, bucket: B2Bucket, key: B2BucketKey) -> pulumi.Output[dict]:
    """The template's environment: the declared worker settings plus the bucket coordinates and its key.

    The whole mapping is a secret because it carries the key; RunPod receives it, the state stores it encrypted.
    """
    return pulumi.Output.all(
        endpoint=bucket.s3Endpoint,
        name=bucket.bucketName,
        region=bucket.region,
        key_id=pulumi.Output.secret(key.keyId),
        key=pulumi.Output.secret(key.applicationKey),
    ).apply(
        lambda b: {
            **service.env,
            "BUCKET_ENDPOINT_URL": b["endpoint"],
            "BUCKET_NAME": b["name"],
            "BUCKET_REGION": b["region"],
            "BUCKET_ACCESS_KEY_ID": b["key_id"],
            "BUCKET_SECRET_ACCESS_KEY": b["key"],
        }
    )


class F5ttsService(pulumi.ComponentResource):
    """Everything one stack deploys, as one component so `pulumi stack` shows it as a unit."""

    def __init__(self, name: str, service: Service, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("f5tts:index:Service", name, None, opts)
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
        self.template = ServerlessTemplate(
            f"{name}-template",
            template_name=name,
            image=service.image.ref,
            env=worker_env(service, self.bucket, self.worker_key),
            container_disk_gb=service.container_disk_gb,
            registry_auth_id=service.registry_auth_id,
            opts=child,
        )
        self.endpoint = ServerlessEndpoint(
            f"{name}-endpoint",
            endpoint_name=name,
            template_id=self.template.templateId,
            gpu_ids=service.gpu.pools,
            gpu_count=service.gpu.count,
            allowed_cuda_versions=service.gpu.cuda_versions,
            workers_min=service.scaling.workers_min,
            workers_max=service.scaling.workers_max,
            idle_timeout_s=service.scaling.idle_timeout_s,
            scaler_type=service.scaling.scaler_type,
            scaler_value=service.scaling.scaler_value,
            flashboot=service.scaling.flashboot,
            execution_timeout_s=service.scaling.execution_timeout_s,
            opts=child,
        )
        self.outputs = {
            "endpointId": self.endpoint.endpointId,
            "endpointUrl": self.endpoint.url,
            "bucketName": self.bucket.bucketName,
            "s3Endpoint": self.bucket.s3Endpoint,
            "image": self.template.imageName,
        }
        self.register_outputs(self.outputs)


@dataclass(frozen=True)
class Deployment:
    service: Service
    component: F5ttsService


def deploy(service: Service, stack: str) -> Deployment:
    return Deployment(service, F5ttsService(resource_name(service, stack), service))


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
    deployment = deploy(service, pulumi.get_stack())
    for output, value in deployment.component.outputs.items():
        pulumi.export(output, value)
    return deployment
