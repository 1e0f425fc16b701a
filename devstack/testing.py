"""`running_stack()`: the local stack for tests (the devstack's own, the client SDK's, anyone's).

    with running_stack(workers=1) as stack:
        httpx.post(f"{stack.endpoint_url}/runsync", json={"input": {"text": "Hi"}},
                   headers={"Authorization": f"Bearer {stack.api_key}"})

By default the workers run the real `python -m worker.handler` on the tiny random-weight model (built once into
`.devstack/cache/`), against a local S3 server with the stack's bucket created; reference URLs on 127.0.0.1 are
allowed. Keyword options are `devstack.jobs.QueueOptions` fields (e.g. `sync_retention_s=2`), `EmulatorConfig`
fields (e.g. `runsync_wait_ms=5000`) or `QueueStack` arguments (e.g. `respawn=False`, `model="real"`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

from devstack.emulator import EmulatorConfig
from devstack.jobs import QueueOptions
from devstack.stack import QueueStack, StackError

# What `running_stack` yields: a started QueueStack (endpoint_url, api_key, bucket, s3_endpoint, s3_credentials,
# s3_client(), worker_pids, workers, inject_fault(), health(), counters(), stop()).
StackHandle = QueueStack

__all__ = ["StackError", "StackHandle", "running_stack"]


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    queue_names = QueueOptions.names()
    config_names = {f.name for f in dataclasses.fields(EmulatorConfig)}
    stack_names = set(inspect.signature(QueueStack).parameters) - {"workers", "worker_cmd", "worker_env", "port"}
    unknown = set(options) - queue_names - config_names - stack_names
    if unknown:
        raise TypeError(f"running_stack() got unknown options: {', '.join(sorted(unknown))}")

    def pick(names: set[str]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k in names}

    return pick(queue_names), pick(config_names), pick(stack_names)


@contextlib.contextmanager
def running_stack(
    workers: int = 1,
    *,
    worker_cmd: list[str] | None = None,
    worker_env: dict[str, str] | None = None,
    port: int = 0,
    endpoint_type: str = "queue",
    **options: Any,
) -> Iterator[StackHandle]:
    if endpoint_type == "load_balancer":  # RunPod load-balancing endpoint: workers in http mode behind its emulator
        from devstack.load_balancer import LoadBalancerStack

        options.setdefault("model", "tiny" if worker_cmd is None else None)
        with LoadBalancerStack(workers, port=port, worker_cmd=worker_cmd, worker_env=worker_env, **options) as lb_stack:
            yield lb_stack  # type: ignore[misc]  # base_url, endpoint_url, api_key, bucket, s3_endpoint, workers
        return
    queue_options, config_options, stack_options = _split_options(options)
    # The real worker gets the tiny model unless told otherwise; another worker command loads no model.
    stack_options.setdefault("model", "tiny" if worker_cmd is None else None)
    stack = QueueStack(
        workers,
        port=port,
        worker_cmd=worker_cmd,
        worker_env=worker_env,
        queue_options=QueueOptions(**queue_options),
        config=EmulatorConfig(**config_options),
        **stack_options,
    )
    with stack:
        yield stack
