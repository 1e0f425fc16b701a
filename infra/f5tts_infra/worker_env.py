"""The worker's environment as the infrastructure sees it: the variable names come from `worker/config.py`, the
single place that declares them, so the endpoint can never set a variable the worker does not read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

import worker.config

# Every settings class worker/config.py declares, in declaration order.
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = tuple(
    cls
    for cls in vars(worker.config).values()
    if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls.__module__ == worker.config.__name__
)

# Set by the program from the bucket and its key; a stack may not override them through `workerEnv`.
BUCKET_ENV = (
    "BUCKET_ENDPOINT_URL",
    "BUCKET_NAME",
    "BUCKET_REGION",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
)


# Set by the program from the endpoint type: which serving mode the worker runs, and where the http mode listens.
SERVING_ENV = ("F5TTS_SERVE", "PORT", "PORT_HEALTH")


def serving_env(endpoint_type: str, port: int) -> dict[str, str]:
    """The worker's serving mode for an endpoint type: `queue` for QUEUE, `http` on `port` for LOAD_BALANCER.

    Only variables worker/config.py declares are set. A worker without serving modes knows only the queue, so a
    QUEUE endpoint needs nothing there, and a LOAD_BALANCER endpoint is refused.
    """
    known = worker_env_fields()
    if endpoint_type == "LOAD_BALANCER":
        env = {"F5TTS_SERVE": "http", "PORT": str(port), "PORT_HEALTH": str(port)}
        missing = [name for name in env if name not in known]
        if missing:
            raise ValueError(f"f5tts:endpointType LOAD_BALANCER: this worker has no http mode ({', '.join(missing)})")
        return env
    return {"F5TTS_SERVE": "queue"} if "F5TTS_SERVE" in known else {}


def worker_env_fields() -> dict[str, tuple[type[BaseSettings], str]]:
    """Every environment variable the worker reads -> (settings class, field name)."""
    fields: dict[str, tuple[type[BaseSettings], str]] = {}
    for cls in SETTINGS_CLASSES:
        prefix = cls.model_config["env_prefix"]
        for name in cls.model_fields:
            fields[f"{prefix}{name}".upper()] = (cls, name)
    return fields


def env_value(value: Any) -> str:
    """Stack config objects carry JSON types; the environment only strings (booleans as the worker parses them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def validate_worker_env(env: Mapping[str, Any], *, allow_bucket: bool = False) -> dict[str, str]:
    """Check names and values against the worker's own settings models; return the env as strings.

    Raises ValueError naming every unknown variable or invalid value, so `pulumi preview` fails instead of a
    worker crashing at start.
    """
    known = worker_env_fields()
    as_strings = {name: env_value(value) for name, value in env.items()}
    problems = [
        f"{name}: not a worker setting (see `python -m worker.config`)" for name in as_strings if name not in known
    ]
    if not allow_bucket:
        problems += [f"{name}: set by the program from the bucket" for name in as_strings if name in BUCKET_ENV]
    for cls in SETTINGS_CLASSES:
        values = {known[name][1]: value for name, value in as_strings.items() if known.get(name, (None,))[0] is cls}
        try:
            # model_validate checks only these values; the deploying machine's own environment is not consulted.
            cls.model_validate(values)
        except ValidationError as exc:
            prefix = cls.model_config["env_prefix"]
            for error in exc.errors(include_url=False):
                if error["type"] == "missing":
                    continue
                field = str(error["loc"][0]) if error["loc"] else "?"
                problems.append(f"{prefix}{field}".upper() + f": {error['msg']}")
    if problems:
        raise ValueError("invalid worker environment:\n  " + "\n  ".join(problems))
    return dict(sorted(as_strings.items()))
