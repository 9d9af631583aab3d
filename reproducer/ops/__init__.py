"""Named operations on a `Scenario`: the faults that inject a failure and the fixes that cure it.

Each op is one short function ``op(scenario, **args) -> Scenario`` registered by name in
`OPS`; knowledge entries name them (``knowledge.schema.Op``). An op returns a new,
validated scenario and never changes the one it is given.

>>> from reproducer.scenario import Scenario
>>> from knowledge.schema import Op
>>> apply_ops(Scenario(), [Op(op="labels_from_input_ids")]).labels_mode
'input_ids'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reproducer.scenario import Scenario

OPS: dict[str, Callable[..., Scenario]] = {}


class UnknownOpError(KeyError):
    """A knowledge entry names an operation that `reproducer.ops` does not define."""

    def __str__(self) -> str:
        return f"unknown reproducer operation {self.args[0]!r}; known: {', '.join(sorted(OPS))}"


def register(fn: Callable[..., Scenario]) -> Callable[..., Scenario]:
    """Register ``fn`` in `OPS` under its own name."""
    if fn.__name__ in OPS:
        raise ValueError(f"reproducer operation {fn.__name__!r} is defined twice")
    OPS[fn.__name__] = fn
    return fn


def changed(scenario: Scenario, **changes: Any) -> Scenario:
    """A copy of ``scenario`` with ``changes``, validated like a new scenario."""
    return Scenario.model_validate({**scenario.model_dump(), **changes})


def apply_op(scenario: Scenario, name: str, args: dict[str, Any] | None = None) -> Scenario:
    if name not in OPS:
        raise UnknownOpError(name)
    return OPS[name](scenario, **(args or {}))


def apply_ops(scenario: Scenario, ops: list) -> Scenario:
    """Apply each op in order. ``ops`` holds `knowledge.schema.Op` objects (or plain names)."""
    for op in ops:
        if isinstance(op, str):
            scenario = apply_op(scenario, op)
        else:
            scenario = apply_op(scenario, op.op, op.args)
    return scenario


from reproducer.ops import collator, data, labels, model, training, version  # noqa: E402,F401  (they register)

__all__ = ["OPS", "UnknownOpError", "apply_op", "apply_ops", "changed", "register"]
