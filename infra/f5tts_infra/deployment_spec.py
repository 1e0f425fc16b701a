"""The deployment spec: the service declared once as a typed Python object (which image runs, on which GPU pools,
how it scales, which endpoint type, what environment the worker gets and where its audio goes). The program turns this declaration into resources; a stack
only overrides fields of it through its config (`STACK_SETTINGS` is the whole list, documented in
`Pulumi.example.yaml`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from f5tts_infra.b2_bucket import bucket_name_problem
from f5tts_infra.runpod_endpoint import endpoint_problems
from f5tts_infra.worker_env import SERVING_ENV, validate_worker_env

# RunPod serverless GPU pool ids (`GET /v2/catalog/gpus`, field `pool`): ADA_24, AMPERE_48, HOPPER_141, ...
GpuPool = Annotated[str, StringConstraints(pattern=r"^[A-Z]+_\d+(_PRO)?$")]
CudaVersion = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+$")]
_DOCKER_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_DIGEST = r"^sha256:[0-9a-f]{64}$"
# The port the worker's http mode listens on for a LOAD_BALANCER endpoint: RunPod's default for PORT/PORT_HEALTH.
HTTP_PORT = 80


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Spec):
    """The worker image (`Dockerfile.runpod`), pushed by CI with the git SHA as its tag; or pinned by digest."""

    repository: str | None = Field(None, description="Image repository without tag, e.g. `youruser/f5tts-runpod`.")
    tag: str | None = Field(None, pattern=_DOCKER_TAG, description="Image tag; CI deploys the git SHA.")
    digest: str | None = Field(None, pattern=_DIGEST, description="Image digest (`sha256:...`), instead of a tag.")

    @field_validator("repository")
    @classmethod
    def _no_tag_or_digest(cls, value: str | None) -> str | None:
        if value is not None and ("@" in value or ":" in value.rsplit("/", 1)[-1] or not value.strip()):
            raise ValueError("give the repository without a tag or digest (see imageTag, imageDigest)")
        return value

    @model_validator(mode="after")
    def _tag_xor_digest(self) -> Image:
        if self.tag and self.digest:
            raise ValueError("f5tts:imageTag and f5tts:imageDigest: set one, not both")
        return self

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"


class Gpu(_Spec):
    pools: list[GpuPool] = Field(description="RunPod serverless GPU pools; workers go where there is capacity.")
    count: int = Field(1, ge=1, le=8, description="GPUs per worker.")
    allowed_cuda_versions: list[CudaVersion] = Field(
        default_factory=list, description="Host CUDA versions allowed (exact set); the image needs 12.8 or newer."
    )
    min_cuda_version: CudaVersion | None = Field(None, description="Lowest host CUDA version, instead of a set.")

    @field_validator("pools", "allowed_cuda_versions")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("duplicate entries")
        return values


class Scaling(_Spec):
    workers_min: int = Field(0, ge=0, description="Workers kept warm (billed while idle).")
    workers_max: int = Field(3, ge=0, description="Upper bound on concurrent workers.")
    idle_timeout_s: int | None = Field(
        None, description="Seconds an idle worker stays up; unset: 5 (none for a queue endpoint on REQUEST_COUNT)."
    )
    scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] | None = Field(
        None, description="Unset: QUEUE_DELAY for a QUEUE endpoint, REQUEST_COUNT (required) for a LOAD_BALANCER."
    )
    scaler_value: float | None = Field(
        None, description="Queue delay in seconds, or requests per worker; unset: 4 s, or 1 request per worker."
    )
    flashboot: Literal["OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"] = Field(
        "FLASHBOOT", description="RunPod FlashBoot: snapshot-restored workers start in seconds. Always sent."
    )
    execution_timeout_ms: int = Field(600_000, ge=5_000, le=7 * 24 * 3_600_000, description="Job execution timeout.")

    @field_validator("flashboot", mode="before")
    @classmethod
    def _flashboot_bool(cls, value: Any) -> Any:
        # Stacks deployed before REST v2 set `flashboot: true|false`.
        if isinstance(value, bool) or value in ("true", "false"):
            return "FLASHBOOT" if value in (True, "true") else "OFF"
        return value


class Storage(_Spec):
    bucket_name: str | None = Field(None, description="B2 bucket name (global namespace).")
    region: str | None = Field(
        None, pattern=r"^[a-z]+-[a-z]+-\d{3}$", description="Expected B2 region (the account's); checked at create."
    )
    output_retention_days: int = Field(7, ge=1, le=3650, description="Days before generated audio is deleted.")
    key_rotation: str = Field("1", min_length=1, description="Change to rotate the worker's bucket key.")
    force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a bucket that still holds objects.")

    @field_validator("bucket_name")
    @classmethod
    def _valid_bucket_name(cls, value: str | None) -> str | None:
        problem = bucket_name_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class Service(_Spec):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$", description="Prefix of every cloud resource name.")
    endpoint_type: Literal["QUEUE", "LOAD_BALANCER"] = Field(
        "QUEUE", description="QUEUE: RunPod's job queue; LOAD_BALANCER: HTTP straight to the worker's http mode."
    )
    image: Image = Image()
    gpu: Gpu
    scaling: Scaling = Scaling()
    disk_gb: int = Field(20, ge=5, le=500, description="Worker container disk (image + scratch).")
    data_center_ids: list[str] = Field(default_factory=list, description="Data centers to place workers in; [] any.")
    network_volumes: list[str] = Field(default_factory=list, description="Network volume ids to attach.")
    storage: Storage = Storage()
    env: dict[str, str] = Field(default_factory=dict, description="Worker settings (see worker/config.py).")
    registry_username: str | None = Field(None, description="Private image: registry user (password: a secret).")
    registry_id: str | None = Field(None, description="Private image: an existing RunPod registry credential id.")

    @field_validator("env", mode="before")
    @classmethod
    def _known_worker_settings(cls, env: Any) -> Any:
        # Before type validation: stack config objects carry JSON numbers and booleans, the env only strings.
        if not isinstance(env, dict):
            return env
        chosen = sorted(set(env) & set(SERVING_ENV))
        if chosen:
            raise ValueError(f"{', '.join(chosen)}: set by the program from f5tts:endpointType")
        return validate_worker_env(env)

    @model_validator(mode="after")
    def _runpod_would_accept(self) -> Service:
        # The rules RunPod applies, checked here so `pulumi preview` refuses them before any call.
        problems = endpoint_problems(
            {
                "type": self.endpoint_type,
                "workersMin": self.scaling.workers_min,
                "workersMax": self.scaling.workers_max,
                "idleTimeout": self.scaling.idle_timeout_s,
                "scalerType": self.scaler_type,
                "scalerValue": self.scaler_value,
                "gpuPools": self.gpu.pools,
                "allowedCudaVersions": self.gpu.allowed_cuda_versions,
                "minCudaVersion": self.gpu.min_cuda_version,
            }
        )
        if self.registry_username and self.registry_id:
            problems.append(("registryId", "use an existing credential (registryId) or registryUsername, not both"))
        if problems:
            raise ValueError("; ".join(f"f5tts:{ENDPOINT_INPUT_SETTINGS.get(k, k)}: {m}" for k, m in problems))
        return self

    @property
    def scaler_type(self) -> str:
        default = "REQUEST_COUNT" if self.endpoint_type == "LOAD_BALANCER" else "QUEUE_DELAY"
        return self.scaling.scaler_type or default

    @property
    def scaler_value(self) -> float:
        """Unset: RunPod's documented 4 s queue delay, or one request per worker (F5TTS_CONCURRENCY's default)."""
        if self.scaling.scaler_value is not None:
            return self.scaling.scaler_value
        return 4 if self.scaler_type == "QUEUE_DELAY" else 1

    @property
    def idle_timeout_s(self) -> int | None:
        """The idle timeout sent: the declared one, else RunPod's documented 5 s; none where RunPod takes none."""
        if self.scaling.idle_timeout_s is not None:
            return self.scaling.idle_timeout_s
        return None if (self.endpoint_type, self.scaler_type) == ("QUEUE", "REQUEST_COUNT") else 5

    @property
    def lifecycle_prefix(self) -> str:
        """Where the worker writes synthesized audio (`generated/...`, under BUCKET_PREFIX when one is set)."""
        return self.env.get("BUCKET_PREFIX", "") + "generated/"


# Endpoint inputs whose stack setting has another name (the rest share theirs).
ENDPOINT_INPUT_SETTINGS = {"type": "endpointType"}

# The declaration. Everything a deployment needs except what only a stack can know: the image it runs and the
# bucket's globally unique name.
SERVICE = Service(
    name="f5tts",
    endpoint_type="QUEUE",
    gpu=Gpu(
        # 24 GB Ada (L4, RTX 4090) first, then Ampere; flash-attn needs sm80+, so no Turing pools.
        pools=["ADA_24", "AMPERE_24", "AMPERE_16"],
        count=1,
        # torch 2.8 cu128 wheels: any host driver new enough for CUDA 12.8.
        min_cuda_version="12.8",
    ),
    scaling=Scaling(
        workers_min=0,
        workers_max=3,
        flashboot="FLASHBOOT",
        execution_timeout_ms=600_000,
    ),
    disk_gb=20,
    storage=Storage(output_retention_days=7),
    env={"F5TTS_MODEL": "F5TTS_v1_Base"},
)


@dataclass(frozen=True)
class StackSetting:
    """One stack config key (`f5tts:<key>`) and the field of the declaration it overrides."""

    key: str
    path: tuple[str, ...]
    kind: Literal["str", "int", "float", "bool", "list", "object"]
    description: str
    required: bool = False


STACK_SETTINGS: tuple[StackSetting, ...] = (
    StackSetting("endpointType", ("endpoint_type",), "str", "QUEUE or LOAD_BALANCER (the worker's http mode)."),
    StackSetting("imageRepository", ("image", "repository"), "str", "Worker image repository, without tag.", True),
    StackSetting("imageTag", ("image", "tag"), "str", "Worker image tag (CI sets the git SHA)."),
    StackSetting("imageDigest", ("image", "digest"), "str", "Worker image digest, sha256:..., instead of a tag."),
    StackSetting("registryUsername", ("registry_username",), "str", "Private image: registry user name."),
    StackSetting("registryId", ("registry_id",), "str", "Private image: an existing RunPod registry credential."),
    StackSetting("gpuPools", ("gpu", "pools"), "list", "RunPod serverless GPU pools (GET /v2/catalog/gpus)."),
    StackSetting("gpuCount", ("gpu", "count"), "int", "GPUs per worker."),
    StackSetting("allowedCudaVersions", ("gpu", "allowed_cuda_versions"), "list", "Exact host CUDA versions."),
    StackSetting("minCudaVersion", ("gpu", "min_cuda_version"), "str", "Lowest host CUDA version."),
    StackSetting("workersMin", ("scaling", "workers_min"), "int", "Always-on workers."),
    StackSetting("workersMax", ("scaling", "workers_max"), "int", "Maximum concurrent workers."),
    StackSetting("idleTimeout", ("scaling", "idle_timeout_s"), "int", "Seconds an idle worker is kept (1-3600)."),
    StackSetting("scalerType", ("scaling", "scaler_type"), "str", "QUEUE_DELAY or REQUEST_COUNT."),
    StackSetting("scalerValue", ("scaling", "scaler_value"), "float", "Queue delay (s) or requests per worker."),
    StackSetting("flashboot", ("scaling", "flashboot"), "str", "OFF, FLASHBOOT or PRIORITY_FLASHBOOT."),
    StackSetting("executionTimeoutMs", ("scaling", "execution_timeout_ms"), "int", "Job execution timeout, ms."),
    StackSetting("diskGb", ("disk_gb",), "int", "Worker container disk, GB."),
    StackSetting("dataCenterIds", ("data_center_ids",), "list", "Data centers for workers ([]: any)."),
    StackSetting("networkVolumes", ("network_volumes",), "list", "Network volume ids to attach."),
    StackSetting("bucketName", ("storage", "bucket_name"), "str", "B2 bucket name (globally unique).", True),
    StackSetting("bucketRegion", ("storage", "region"), "str", "Expected B2 region, e.g. us-west-004."),
    StackSetting("outputRetentionDays", ("storage", "output_retention_days"), "int", "Days generated audio is kept."),
    StackSetting("keyRotation", ("storage", "key_rotation"), "str", "Change to rotate the worker's bucket key."),
    StackSetting("bucketForceDestroy", ("storage", "force_destroy"), "bool", "Allow destroying a non-empty bucket."),
    StackSetting("workerEnv", ("env",), "object", "Extra worker settings, merged over the declaration's env."),
)
# Settings of stacks deployed before REST v2, and their new names.
RENAMED_SETTINGS = {
    "containerDiskGb": "diskGb",
    "executionTimeout": "executionTimeoutMs (now in milliseconds)",
    "registryAuthId": "registryId",
}
# Secret stack settings the program reads itself (never part of the declaration, never plain outputs).
REGISTRY_PASSWORD_SETTING = "registryPassword"

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
        "float": config.get_float,
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
    renamed = [f"f5tts:{k} is now f5tts:{RENAMED_SETTINGS[k]}" for k in sorted(values) if k in RENAMED_SETTINGS]
    if renamed:
        raise StackConfigError("settings renamed with RunPod's REST API v2 (docs/deploy.md): " + "; ".join(renamed))
    unknown = sorted(set(values) - set(by_key))
    missing = [s.key for s in STACK_SETTINGS if s.required and values.get(s.key) in (None, "")]
    if not values.get("imageTag") and not values.get("imageDigest"):
        missing.insert(1, "imageTag (or imageDigest)")
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
    # The CUDA set and floor are alternatives: a stack that sets one replaces the declaration's other.
    alternatives: dict[str, tuple[str, list[str] | None]] = {
        "allowedCudaVersions": ("min_cuda_version", None),
        "minCudaVersion": ("allowed_cuda_versions", []),
    }
    for key, (field, cleared) in alternatives.items():
        if key in values and not {"allowedCudaVersions", "minCudaVersion"} <= set(values):
            data["gpu"][field] = cleared
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
