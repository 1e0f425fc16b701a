"""`NOT_GIVEN`: the default of every optional API parameter, so that the client sends only what the caller set.

A parameter left out is left out of the job input too, and the worker applies its own default: a caller who
passes `nfe_step=32` sends `32` even if a later worker's default changes, and a caller who passes nothing gets
whatever the deployed worker considers best. `None` stays a value a caller can send (`seed=None`: "pick one").
The same idea as openai-python's `NOT_GIVEN`.
"""

from __future__ import annotations

from typing import Any, Literal


class NotGiven:
    """The type of `NOT_GIVEN`; falsy, so `if value:` treats it like an absent value."""

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


def given(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the arguments the caller left out."""
    return {name: value for name, value in values.items() if not isinstance(value, NotGiven)}
