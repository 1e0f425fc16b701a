"""`make playground`: the devstack with one worker, and `f5tts playground` in front of it, until Ctrl-C.

The playground is the client package's own (`f5tts_client.playground`), given a client of this stack; the stack's
key stays in this process, as a deployed endpoint's does with `f5tts playground`.
"""

from __future__ import annotations

import signal
import sys
from typing import IO, TYPE_CHECKING

from devstack.model import ModelMode, announce_model, choose_model
from devstack.stack import QueueStack

if TYPE_CHECKING:
    from devstack.load_balancer import LoadBalancerStack


def run_playground(
    endpoint_type: str = "queue",
    model: ModelMode = "auto",
    port: int = 8765,
    open_browser: bool = True,
    log: IO[str] = sys.stderr,
) -> None:
    from f5tts_client import Client, playground

    def interrupt(signum: int, frame: object) -> None:  # SIGTERM stops it as Ctrl-C does: the stack is cleaned up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    choice = choose_model(model, out=log)
    announce_model(choice, log)
    stack_class: type[QueueStack | LoadBalancerStack] = QueueStack
    if endpoint_type == "load_balancer":
        from devstack.load_balancer import LoadBalancerStack

        stack_class = LoadBalancerStack
    print(f"starting the local stack ({endpoint_type}, 1 worker)...", file=log, flush=True)
    with (
        stack_class(workers=1, model=choice) as stack,
        Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url) as client,
    ):
        print(f"endpoint {stack.endpoint_url} ready; Ctrl-C stops the playground and the stack", file=log, flush=True)
        try:
            playground.run(client, "127.0.0.1", port, open_browser)
        except KeyboardInterrupt:
            print("stopping...", file=log, flush=True)
