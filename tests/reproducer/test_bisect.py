"""bisect: binary search over releases, skipping unbuildable ones, reporting cost.

Unit tests inject a stand-in manager and runner at the two seams `bisect` takes (where a release
"fails" is decided by a table); the slow test bisects real trl releases in real environments.
"""

import math
import os
import time
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.storage import Storage
from reproducer.bisect import BisectResult, bisect, bisect_command, failure_matching, release_range, summarize
from reproducer.envs import Env, EnvBuildFailed, EnvManager
from reproducer.scenario import Scenario

RELEASES = ["0.15.2", "0.16.1", "0.17.0", "0.18.2", "0.19.1", "0.20.0", "0.21.0", "0.22.2", "0.23.1", "1.16.0"]
MESSAGE = "The model did not return a loss from the inputs, only the following keys: logits."


class TableManager:
    """Environments by version; some cannot be built; the first ensure of each builds it."""

    def __init__(self, unbuildable=()):
        self.unbuildable = set(unbuildable)
        self.built: set[str] = set()
        self.requests: list[dict] = []

    def ensure(self, versions, progress=None):
        self.requests.append(dict(versions))
        version = versions["trl"]
        if version in self.unbuildable:
            raise EnvBuildFailed(f"pip install failed: trl=={version} does not resolve")
        built = version not in self.built
        self.built.add(version)
        if version == "1.16.0":
            return Env(key="installed", python=Path("/usr/bin/python3"), versions={"trl": version})
        return Env(key=f"trl-{version}", python=Path(f"/envs/{version}/bin/python"), versions={"trl": version},
                   path=Path(f"/envs/{version}"), built=built)


class TableRunner:
    """Runs 'fail' on the releases in ``failing``; records how it was called."""

    def __init__(self, failing):
        self.failing = set(failing)
        self.calls: list[tuple] = []

    def __call__(self, runs, *, python=None, warm=True):
        self.calls.append((python, warm))
        version = "1.16.0" if python is None else Path(python).parent.parent.name
        if version in self.failing:
            record = {"ok": False, "exception": {"type": "ValueError", "message": MESSAGE}}
        else:
            record = {"ok": True, "exception": None, "loss": 6.2}
        return {"runs": [record], "versions": {"trl": version}}


SEED = Scenario(trainer="SFTTrainer", collator="DataCollatorForSeq2Seq", dataset_format="text").model_dump()
FAILED = failure_matching("did not return a loss")


def test_finds_where_the_failure_disappears():
    manager, runner = TableManager(), TableRunner(RELEASES[:5])
    result = bisect(SEED, "trl", RELEASES, failed=FAILED, manager=manager, runner=runner)
    assert (result.changed_in, result.last_before, result.direction) == ("0.20.0", "0.19.1", "fixed")
    assert result.verified
    assert len(result.probes) <= 2 + math.ceil(math.log2(len(RELEASES) - 2))
    assert result.summary() == "trl: fixed in 0.20.0 (fails on 0.19.1, passes on 0.20.0: verified)"
    assert result.envs_built == len(result.probes) - 1  # 1.16.0 is the installed stack
    assert result.cache_hits == 1
    assert (None, True) in runner.calls  # the installed stack runs on the warm pool
    assert ("/envs/0.15.2/bin/python", False) in runner.calls


def test_finds_where_the_failure_appears_in_any_order_of_input():
    runner = TableRunner(RELEASES[7:])
    result = bisect(SEED, "trl", list(reversed(RELEASES)), failed=FAILED, manager=TableManager(), runner=runner)
    assert (result.changed_in, result.last_before, result.direction) == ("0.22.2", "0.21.0", "broke")


def test_every_boundary_position_is_found():
    for cut in range(1, len(RELEASES)):
        result = bisect(SEED, "trl", RELEASES, failed=FAILED, manager=TableManager(), runner=TableRunner(RELEASES[:cut]))
        assert result.changed_in == RELEASES[cut] and result.last_before == RELEASES[cut - 1], cut


def test_no_change_in_the_range_is_said_plainly():
    result = bisect(SEED, "trl", RELEASES[:4], failed=FAILED, manager=TableManager(), runner=TableRunner(RELEASES))
    assert result.changed_in is None and not result.verified
    assert result.summary() == "trl: fails on every release tried from 0.15.2 to 0.18.2"
    assert len(result.probes) == 2


def test_unbuildable_releases_are_skipped():
    manager = TableManager(unbuildable={"0.15.2", "0.19.1", "0.20.0"})
    result = bisect(SEED, "trl", RELEASES, failed=FAILED, manager=manager, runner=TableRunner(RELEASES[:5]))
    assert (result.changed_in, result.last_before) == ("0.21.0", "0.18.2")
    skipped = [p for p in result.probes if p.failed is None]
    assert skipped and all("does not resolve" in p.error for p in skipped)
    assert "not tried" in skipped[0].outcome()


def test_a_different_failure_does_not_count():
    runner = TableRunner(RELEASES[:5])
    result = bisect(SEED, "trl", RELEASES, failed=failure_matching("element 0 of tensors"), manager=TableManager(),
                    runner=runner)
    assert result.changed_in is None
    assert result.summary() == "trl: passes on every release tried from 0.15.2 to 1.16.0"


def test_fixed_pins_go_into_every_probe():
    manager = TableManager()
    bisect(SEED, "trl", RELEASES[:4], failed=FAILED, manager=manager, runner=TableRunner([]),
           fixed={"transformers": "4.55.4"})
    assert manager.requests and all(r["transformers"] == "4.55.4" for r in manager.requests)


def test_command_searches_both_sides_of_a_known_failing_release():
    lines = []
    manager, runner = TableManager(), TableRunner(["0.18.2", "0.19.1"])
    results = bisect_command(SEED, "trl", RELEASES, failing="0.19.1", expect="did not return a loss",
                             manager=manager, runner=runner, echo=lines.append)
    assert summarize(results) == "trl: broke in 0.18.2, fixed in 0.20.0 (verified)"
    assert "trl: broke in 0.18.2, fixed in 0.20.0 (verified)" in lines
    assert any("environments built" in line for line in lines)
    tried = [p.version for r in results for p in r.probes]
    assert len(tried) == len(set(tried))  # 0.19.1 ran once, shared by both searches


def test_release_range_keeps_the_last_patch_of_each_minor():
    available = ["0.19.0", "0.19.1", "0.20.0", "0.21.0", "0.22.0", "0.22.1", "0.22.2", "0.23.0rc1", "0.23.0", "1.0.0"]
    assert release_range(available, "0.19.0", "0.23.0") == ["0.19.0", "0.19.1", "0.20.0", "0.21.0", "0.22.2", "0.23.0"]
    assert release_range(available, "0.22.0", "0.22.2", latest_patch_only=False) == ["0.22.0", "0.22.1", "0.22.2"]


def test_failure_matching():
    assert FAILED({"ok": False, "exception": {"type": "ValueError", "message": MESSAGE}})
    assert not FAILED({"ok": False, "exception": {"type": "ImportError", "message": "cannot import name"}})
    assert not FAILED({"ok": True, "exception": None})
    assert failure_matching(None)({"ok": False, "exception": {"type": "KeyError", "message": "'text'"}})


def test_summarize_without_a_change():
    result = BisectResult(package="trl", versions=["1"])
    assert summarize([result]) == "trl: no release in the range could be tried"


# --- real environments -------------------------------------------------------------------------

TEST_HOME = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))


@pytest.mark.slow
@pytest.mark.sandbox
def test_real_bisect_finds_the_trl_release_that_fixed_the_seed_case():
    """Seed case (SFTTrainer + DataCollatorForSeq2Seq on a text dataset): fails on trl 0.19-1.6, trains from
    trl 1.7.0 on, whose SFTTrainer builds a labels column while preparing the dataset. 0.19.1 reuses the
    legacy environment, 1.16.0 is the installed stack: two environments are built the first time."""
    from reproducer.runner import run_batch

    settings = Settings(home=TEST_HOME, env_disk_budget_gb=8.0)
    manager = EnvManager(settings, Storage(settings))
    lines = []
    started = time.monotonic()
    results = bisect_command(SEED, "trl", ["0.19.1", "0.22.2", "1.6.0", "1.7.0", "1.16.0"],
                             expect="did not return a loss", manager=manager, runner=run_batch, echo=lines.append)
    print("\n".join(lines), f"\nwall {time.monotonic() - started:.0f} s")
    [result] = results
    assert (result.changed_in, result.last_before, result.direction) == ("1.7.0", "1.6.0", "fixed")
    assert result.verified
    assert [p.version for p in result.probes] == ["0.19.1", "1.16.0", "1.6.0", "1.7.0"]
    for probe in result.probes:
        assert probe.record["versions"]["trl"] == probe.version  # what the child imported
    assert "did not return a loss" in result.probes[0].record["exception"]["message"]
    assert result.probes[1].env == "installed"
