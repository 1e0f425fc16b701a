"""What the routers share, kept on `app.state` (FastAPI's "Bigger Applications"): one object, read through
`http_state(request)`, so a router names what it uses and nothing is a module global."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from worker.config import Settings
from worker.http_server.slots import SynthesisSlots
from worker.service import WorkerService


@dataclass
class HttpState:
    service: WorkerService
    settings: Settings
    slots: SynthesisSlots
    loading: bool  # True while the model loads in the background (/ping answers 204)


def http_state(request: Request) -> HttpState:
    state: HttpState = request.app.state.http
    return state


# A route's parameter `state: State` is the app's HttpState (FastAPI's Annotated dependency style).
State = Annotated[HttpState, Depends(http_state)]
