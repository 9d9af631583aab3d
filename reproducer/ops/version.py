"""Ops on the library versions the scenario runs on."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario


@register
def upgrade(scenario: Scenario, package: str, version: str) -> Scenario:
    """Fix: run on ``package==version`` (recorded in `Scenario.versions` for the versions engine)."""
    return changed(scenario, versions={**scenario.versions, package: version})
