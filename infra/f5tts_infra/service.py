"""The service, declared once as a typed Python object: which image runs, on which GPU pools, how it scales, what
environment the worker gets and where its audio goes. The program turns this declaration into resources; a stack
only overrides fields of it through its config (`STACK_SETTINGS` is the whole list, documented in
`Pulumi.example.yaml`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from f5tts_infra.worker_env import validate_worker_env

# RunPod GPU pool ids (AMPERE_16, ADA_24, ADA_48_PRO, HOPPER_141, ...): the endpoint tries them in list order.
GpuPool = Annotated[str, StringConstraints(pattern=r"^[A-Z]+_\d+(_PRO)?$")]
CudaVersion = Annotated[str, StringConstraints(pattern=r"^\d{2}\.\d$")]
# B2 bucket names: 6-50 letters, digits and '-', globally unique; the "b2-" prefix is reserved (checked below).
BUCKET_NAME_PATTERN = r"^[A-Za-z0-9-]{6,50}$"
_DOCKER_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Spec):
    """The worker image (`Dockerfile.runpod`), pushed by CI with the git SHA as its tag."""

    repository: str | None = Field(None, description="Image repository without tag, e.g. `youruser/f5tts-runpod`.")
    tag: str | None = Field(None, pattern=_DOCKER_TAG, description="Image tag; CI deploys the git SHA.")

    @field_validator("repository")
    @classmethod
    def _no_tag_or_digest(cls, value: str | None) -> str | None:
        if value is not None and ("@" in value or ":" in value.rsplit("/", 1)[-1] or not value.strip()):
            raise ValueError("give the repository without a tag or digest (the tag is `imageTag`)")
        return value

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Gpu(_Spec):
    pools: list[GpuPool] = Field(min_length=1, description="RunPod GPU pools in priority order.")
    count: int = Field(1, ge=1, le=8, description="GPUs per worker.")
    cuda_versions: list[CudaVersion] = Field(
        min_length=1, description="Host CUDA versions allowed; the image needs a driver for CUDA 12.8 or newer."
    )

    @field_validator("pools", "cuda_versions")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("duplicate entries")
        return values


class Scaling(_Spec):
    workers_min: int = Field(0, ge=0, description="Workers kept warm (billed while idle).")
    workers_max: int = Field(3, ge=1, description="Upper bound on concurrent workers.")
    idle_timeout_s: int = Field(5, ge=1, le=3600, description="Seconds an idle worker stays up.")
    scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] = "QUEUE_DELAY"
    scaler_value: int = Field(4, ge=1, description="Queue delay in seconds, or requests per worker.")
    flashboot: bool = Field(True, description="RunPod FlashBoot: snapshot-restored workers start in seconds.")
    execution_timeout_s: int = Field(600, ge=5, le=24 * 3600, description="A job running longer is failed by RunPod.")

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.workers_min > self.workers_max:
            raise ValueError("workers_min (f5tts:workersMin) must not exceed workers_max (f5tts:workersMax)")
        return self


class Storage(_Spec):
    bucket_name: str | None = Field(None, pattern=BUCKET_NAME_PATTERN, description="B2 bucket name (global namespace).")
    region: str | None = Field(
        None, pattern=r"^[a-z]+-[a-z]+-\d{3}$", description="Expected B2 region (the account's); checked at create."
    )
    output_retention_days: int = Field(7, ge=1, le=3650, description="Days before generated audio is deleted.")
    key_rotation: str = Field("1", min_length=1, description="Change to rotate the worker's bucket key.")
    force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a bucket that still holds objects.")

    @field_validator("bucket_name")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and value.lower().startswith("b2-"):
            raise ValueError("bucket names starting with 'b2-' are reserved by Backblaze")
        return value


class Service(_Spec):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$", description="Prefix of every cloud resource name.")
    image: Image = Image()
    gpu: Gpu
    scaling: Scaling = Scaling()
    container_disk_gb: int = Field(20, ge=5, le=500, description="Worker container disk (image + scratch).")
    storage: Storage = Storage()
    env: dict[str, str] = Field(default_factory=dict, description="Worker settings (see worker/config.py).")
    registry_auth_id: str | None = Field(None, description="RunPod container registry credential id (private images).")

    @field_validator("env", mode="before")
    @classmethod
    def _known_worker_settings(cls, env: Any) -> Any:
        # Before type validation: stack config objects carry JSON numbers and booleans, the env only strings.
        return validate_worker_env(env) if isinstance(env, dict) else env

    @property
    def lifecycle_prefix(self) -> str:
        """Where the worker writes synthesized audio (`generated/...`, under BUCKET_PREFIX when one is set)."""
        return self.env.get("BUCKET_PREFIX", "") + "generated/"


# The declaration. Everything a deployment needs except what only a stack can know: the image it runs and the
# bucket's globally unique name.
SERVICE = Service(
    name="f5tts",
    gpu=Gpu(
        # 24 GB Ada (L4, RTX 4090) first, then Ampere; flash-attn needs sm80+, so no Turing pools.
        pools=["ADA_24", "AMPERE_24", "AMPERE_16"],
        count=1,
        # torch 2.8 cu128 wheels: any host driver new enough for CUDA 12.8.
        cuda_versions=["12.8", "12.9"],
    ),
    scaling=Scaling(
        workers_min=0,
        workers_max=3,
        idle_timeout_s=5,
        scaler_type="QUEUE_DELAY",
        scaler_value=4,
        flashboot=True,
        execution_timeout_s=600,
    ),
    container_disk_gb=20,
    storage=Storage(output_retention_days=7),
    env={"F5TTS_MODEL": "F5TTS_v1_Base"},
)


@dataclass(frozen=True)
class StackSetting:
    """One stack config key (`f5tts:<key>`) and the field of the declaration it overrides."""

    key: str
    path: tuple[str, ...]
    kind: Literal["str", "int", "bool", "list", "object"]
    description: str
    required: bool = False


STACK_SETTINGS: tuple[StackSetting, ...] = (
    StackSetting("imageRepository", ("image", "repository"), "str", "Worker image repository, without tag.", True),
    StackSetting("imageTag", ("image", "tag"), "str", "Worker image tag (CI sets the git SHA).", True),
    StackSetting("registryAuthId", ("registry_auth_id",), "str", "RunPod registry credential id for a private image."),
    StackSetting("gpuPools", ("gpu", "pools"), "list", "RunPod GPU pools in priority order."),
    StackSetting("gpuCount", ("gpu", "count"), "int", "GPUs per worker."),
    StackSetting("allowedCudaVersions", ("gpu", "cuda_versions"), "list", "Host CUDA versions workers may run on."),
    StackSetting("workersMin", ("scaling", "workers_min"), "int", "Always-on workers."),
    StackSetting("workersMax", ("scaling", "workers_max"), "int", "Maximum concurrent workers."),
    StackSetting("idleTimeout", ("scaling", "idle_timeout_s"), "int", "Seconds an idle worker is kept."),
    StackSetting("scalerType", ("scaling", "scaler_type"), "str", "QUEUE_DELAY or REQUEST_COUNT."),
    StackSetting("scalerValue", ("scaling", "scaler_value"), "int", "Scaler threshold."),
    StackSetting("flashboot", ("scaling", "flashboot"), "bool", "RunPod FlashBoot on/off."),
    StackSetting("executionTimeout", ("scaling", "execution_timeout_s"), "int", "Job execution timeout, seconds."),
    StackSetting("containerDiskGb", ("container_disk_gb",), "int", "Worker container disk, GB."),
    StackSetting("bucketName", ("storage", "bucket_name"), "str", "B2 bucket name (globally unique).", True),
    StackSetting("bucketRegion", ("storage", "region"), "str", "Expected B2 region, e.g. us-west-004."),
    StackSetting("outputRetentionDays", ("storage", "output_retention_days"), "int", "Days generated audio is kept."),
    StackSetting("keyRotation", ("storage", "key_rotation"), "str", "Change to rotate the worker's bucket key."),
    StackSetting("bucketForceDestroy", ("storage", "force_destroy"), "bool", "Allow destroying a non-empty bucket."),
    StackSetting("workerEnv", ("env",), "object", "Extra worker settings, merged over the declaration's env."),
)

# Secrets never go into the declaration; the providers read them from stack config (`pulumi config set --secret`).
SECRET_SETTINGS: tuple[str, ...] = ("runpod:token", "b2:applicationKeyId", "b2:applicationKey")


class StackConfigError(ValueError):
    """The stack's configuration does not describe a deployable service; the message names the config keys."""


def read_stack_config(config: Any) -> dict[str, Any]:
    """Read every setting once, with the getter of its type; absent keys are left out. `config` is a pulumi.Config."""
    getters = {
        "str": config.get,
        "int": config.get_int,
        "bool": config.get_bool,
        "list": config.get_object,
        "object": config.get_object,
    }
    values = {}
    for setting in STACK_SETTINGS:
        value = getters[setting.kind](setting.key)
        if value is not None:
            values[setting.key] = value
    return values


def apply_stack_config(values: dict[str, Any], base: Service = SERVICE) -> Service:
    """The declaration with a stack's overrides applied and validated; errors name the stack config keys."""
    by_key = {s.key: s for s in STACK_SETTINGS}
    unknown = sorted(set(values) - set(by_key))
    missing = [s.key for s in STACK_SETTINGS if s.required and values.get(s.key) in (None, "")]
    if unknown or missing:
        raise StackConfigError(
            "; ".join(
                [f"unknown setting(s) {', '.join(unknown)}"] * bool(unknown)
                + [f"missing required setting(s) {', '.join(missing)} (pulumi config set <key> <value>)"]
                * bool(missing)
            )
        )
    not_maps = [k for k, v in values.items() if by_key[k].kind == "object" and not isinstance(v, dict)]
    if not_maps:
        raise StackConfigError(f"f5tts:{not_maps[0]}: expected a map of NAME: value")
    data = base.model_dump()
    for key, value in values.items():
        path = by_key[key].path
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = {**target[path[-1]], **value} if by_key[key].kind == "object" else value
    try:
        return Service.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise StackConfigError(_explain(exc, by_key)) from None


def _explain(exc: Exception, by_key: dict[str, StackSetting]) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    key_of = {s.path: s.key for s in by_key.values()}
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(p) for p in error["loc"])
        key = next((key_of[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in key_of), None)
        lines.append(f"f5tts:{key}: {error['msg']}" if key else error["msg"])
    return "invalid stack config: " + "; ".join(lines)


def resource_name(service: Service, stack: str) -> str:
    """The name every RunPod/B2 object of a stack carries, so several stacks can share one account."""
    return re.sub(r"[^a-z0-9-]", "-", f"{service.name}-{stack}".lower())
