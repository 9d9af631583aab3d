"""The knowledge entries' affected / fixed version ranges, checked against real runs.

For every reproducible entry that states version ranges, its default scenario runs on each
probe stack whose versions the ranges speak about: inside `versions.affected` the baseline must
fail the expected way, inside `versions.fixed` it must not. Slow: the legacy stack is a cached
environment (built on first use, about 2 minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bot.models import Report
from bot.settings import Settings
from knowledge.kb import default_kb
from reproducer.checks import baseline_reproduces
from reproducer.engine import plan_for
from reproducer.envs import EnvManager
from reproducer.runner import run_batch
from reproducer.versions import installed_versions

pytestmark = pytest.mark.slow

TEST_HOME = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))
LEGACY = {"transformers": "4.55.4", "trl": "0.19.1"}
ENTRIES = [e for e in default_kb().entries if e.reproduce.reproducible and (e.versions.affected or e.versions.fixed)]


def _inside(versions: dict[str, str], ranges: dict[str, str]) -> bool:
    return bool(ranges) and all(
        p in versions and Version(versions[p].split("+")[0]) in SpecifierSet(spec, prereleases=True) for p, spec in ranges.items()
    )


@pytest.fixture(scope="module")
def stacks():
    legacy = EnvManager(Settings(home=TEST_HOME, env_disk_budget_gb=8.0)).ensure(LEGACY)
    return {"installed": (None, installed_versions()), "legacy": (str(legacy.python), legacy.versions)}


STATED = {"installed": installed_versions(), "legacy": LEGACY}
"""What each stack is known to hold before it is built: enough to pick the entries whose ranges speak about it."""
CASES = [
    (entry, stack) for entry in ENTRIES for stack in STATED
    if _inside(STATED[stack], entry.versions.affected) or _inside(STATED[stack], entry.versions.fixed)
]


def test_there_are_ranges_to_check():
    assert len(ENTRIES) >= 4 and len(CASES) >= 6


@pytest.mark.parametrize(("entry", "stack"), CASES, ids=[f"{e.id}-{s}" for e, s in CASES])
def test_version_ranges_hold(stacks, stack, entry):
    python, versions = stacks[stack]
    inside_affected = _inside(versions, entry.versions.affected)
    assert inside_affected or _inside(versions, entry.versions.fixed), versions
    scenario = plan_for(Report(), entry).scenario
    record = run_batch([{"fix": None, "scenario": scenario.model_dump()}], python=python)["runs"][0]
    failed, why = baseline_reproduces(record, entry.reproduce.expect, None)
    if inside_affected:
        assert failed, f"{entry.id} should fail on {stack} {versions}: {why}"
    else:
        assert not failed, f"{entry.id} should not fail on {stack} {versions} (fixed range): {why}"
