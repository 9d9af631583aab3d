"""Find the release of one library where a failure appears or disappears.

`bisect` runs a scenario's baseline on an ordered list of releases of one package, each in its
own version environment (`reproducer.envs`), probing both ends and then halving the range, as
``git bisect`` does. It assumes the outcome changes once in the range. `bisect_command` is what
``lossdoctor bisect`` calls: with a known failing release in the middle it searches both sides
and can say "broke in X, fixed in Y (verified)".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from reproducer.envs import EnvError, EnvManager
from reproducer.versions import normalize_name

Runner = Callable[..., dict]
"""`reproducer.runner.run_batch`: ``runner(runs, python=..., warm=...) -> {"runs": [...], ...}``."""


@dataclass
class Probe:
    """One release tried: did the baseline fail there?"""

    version: str
    failed: bool | None
    """None when the release could not be tried (no environment could be built)."""
    record: dict[str, Any] | None = None
    env: str = ""
    """Environment key ('installed' for the interpreter lossdoctor runs in)."""
    built: bool = False
    seconds: float = 0.0
    error: str | None = None

    def outcome(self) -> str:
        if self.failed is None:
            return f"not tried ({self.error})"
        if not self.failed:
            return "passes"
        exc = (self.record or {}).get("exception") or {}
        return f"fails ({exc.get('type', 'no exception')}: {str(exc.get('message', ''))[:80]})" if exc else "fails"


@dataclass
class BisectResult:
    package: str
    versions: list[str]
    probes: list[Probe] = field(default_factory=list)
    """In the order they ran."""
    changed_in: str | None = None
    """First release whose outcome differs from the first release's; None when none does."""
    last_before: str | None = None
    """The release just before `changed_in` that was run and kept the first release's outcome."""
    direction: str | None = None
    """'fixed' (failure disappears at `changed_in`) or 'broke' (it appears)."""
    seconds: float = 0.0

    @property
    def envs_built(self) -> int:
        return sum(1 for p in self.probes if p.built)

    @property
    def cache_hits(self) -> int:
        return sum(1 for p in self.probes if p.failed is not None and not p.built)

    @property
    def verified(self) -> bool:
        """Both sides of the change were run (not inferred)."""
        return self.changed_in is not None and self.last_before is not None

    def cost(self) -> str:
        return (f"{len(self.probes)} releases run, {self.envs_built} environments built, "
                f"{self.cache_hits} reused, {self.seconds:.0f} s")

    def summary(self) -> str:
        """One line for a reply, e.g. "trl: fixed in 0.20.0 (fails on 0.19.1, passes on 0.20.0: verified)"."""
        if self.changed_in is None:
            tried = [p for p in self.probes if p.failed is not None]
            if not tried:
                return f"{self.package}: no release in the range could be tried"
            state = "fails" if tried[0].failed else "passes"
            return f"{self.package}: {state} on every release tried from {tried[0].version} to {tried[-1].version}"
        before, after = ("fails", "passes") if self.direction == "fixed" else ("passes", "fails")
        return (f"{self.package}: {self.direction} in {self.changed_in} ({before} on {self.last_before}, "
                f"{after} on {self.changed_in}: verified)")


def run_probe(scenario: dict, package: str, version: str, *, failed: Callable[[dict], bool], manager: EnvManager,
              runner: Runner, fixed: dict[str, str] | None = None,
              progress: Callable[[str], None] | None = None) -> Probe:
    """Build or reuse the environment for ``package==version`` (plus ``fixed`` pins) and run the baseline there."""
    started = time.monotonic()
    try:
        env = manager.ensure({**(fixed or {}), package: version}, progress=progress)
    except EnvError as exc:
        return Probe(version=version, failed=None, error=str(exc).splitlines()[0][:200],
                     seconds=time.monotonic() - started)
    runs = [{"fix": None, "scenario": scenario}]
    if env.installed_stack:
        result = runner(runs)
    else:
        result = runner(runs, python=str(env.python), warm=False)
    record = result["runs"][0]
    return Probe(version=version, failed=bool(failed(record)), record=record, env=env.key, built=env.built,
                 seconds=time.monotonic() - started)


def bisect(scenario: dict, package: str, versions: Sequence[str], *, failed: Callable[[dict], bool],
           manager: EnvManager, runner: Runner, fixed: dict[str, str] | None = None,
           known: dict[str, Probe] | None = None, progress: Callable[[str], None] | None = None) -> BisectResult:
    """Find the first release in ``versions`` (sorted here) whose outcome differs from the first's.

    ``failed(record)`` says whether a run shows the failure. ``fixed`` pins other packages for every
    probe; ``known`` holds probes already run (reused, and filled in). A release whose environment
    cannot be built is skipped, as ``git bisect skip`` does.
    """
    say = progress or (lambda line: None)
    started = time.monotonic()
    package = normalize_name(package)
    ordered = sorted(dict.fromkeys(versions), key=Version)
    result = BisectResult(package=package, versions=ordered)
    memo = known if known is not None else {}

    def probe(version: str) -> Probe:
        if version not in memo:
            say(f"{package} {version}: running the baseline...")
            memo[version] = run_probe(scenario, package, version, failed=failed, manager=manager, runner=runner,
                                      fixed=fixed, progress=progress)
            result.probes.append(memo[version])
            say(f"{package} {version}: {memo[version].outcome()}")
        return memo[version]

    candidates = list(ordered)
    first = last = None
    while candidates and first is None:
        if probe(candidates[0]).failed is None:
            candidates.pop(0)
        else:
            first = memo[candidates[0]]
    while len(candidates) > 1 and last is None:
        if probe(candidates[-1]).failed is None:
            candidates.pop()
        else:
            last = memo[candidates[-1]]
    if first is None or last is None or first.failed == last.failed:
        result.seconds = time.monotonic() - started
        return result
    lo, hi = 0, len(candidates) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        outcome = probe(candidates[mid]).failed
        if outcome is None:
            candidates.pop(mid)
            hi -= 1
            continue
        if outcome == first.failed:
            lo = mid
        else:
            hi = mid
    result.changed_in, result.last_before = candidates[hi], candidates[lo]
    result.direction = "fixed" if first.failed else "broke"
    result.seconds = time.monotonic() - started
    return result


def release_range(available: Sequence[str], start: str, end: str, *, latest_patch_only: bool = True) -> list[str]:
    """Final releases from ``start`` to ``end`` inclusive, oldest first; by default only the last
    patch release of each minor series (plus ``start`` and ``end`` themselves)."""
    low, high = Version(start), Version(end)
    chosen = sorted((Version(v) for v in available if not Version(v).is_prerelease and low <= Version(v) <= high))
    if latest_patch_only:
        series: dict[tuple[int, int], Version] = {}
        for v in chosen:
            series[(v.major, v.minor)] = v
        chosen = sorted(set(series.values()) | ({low, high} & set(chosen)))
    return [str(v) for v in chosen]


def failure_matching(text: str | None) -> Callable[[dict], bool]:
    """A ``failed`` predicate: the run raised (and, when ``text`` is given, its message contains it)."""

    def failed(record: dict) -> bool:
        exc = record.get("exception") or {}
        if record.get("ok") or not exc:
            return False
        return text is None or text in f"{exc.get('type', '')}: {exc.get('message', '')}"

    return failed


def bisect_command(scenario: dict, package: str, versions: Sequence[str] | str, *, failing: str | None = None,
                   expect: str | None = None, fixed: dict[str, str] | None = None, manager: EnvManager | None = None,
                   runner: Runner | None = None, echo: Callable[[str], None] = print) -> list[BisectResult]:
    """``lossdoctor bisect``: print where the failure appears and/or disappears, and what it cost.

    ``versions`` is a list of releases or a range ``"A..B"`` (the last patch of each minor series
    between them, from the registry). With ``failing`` (a release known to fail, e.g. the user's),
    the range is split there and both sides are searched: "broke in X, fixed in Y (verified)".
    ``expect`` is a text the failing run's exception must contain (default: any exception).
    """
    manager = manager or EnvManager()
    if runner is None:
        from reproducer.runner import run_batch as runner
    if isinstance(versions, str):
        start, _, end = versions.partition("..")
        versions = release_range(manager.available_versions(package), start, end)
    ordered = sorted(dict.fromkeys(list(versions) + ([failing] if failing else [])), key=Version)
    failed = failure_matching(expect)
    known: dict[str, Probe] = {}
    kwargs = dict(failed=failed, manager=manager, runner=runner, fixed=fixed, known=known, progress=echo)
    if failing and ordered[0] != failing and ordered[-1] != failing:
        at = ordered.index(failing)
        results = [bisect(scenario, package, ordered[: at + 1], **kwargs),
                   bisect(scenario, package, ordered[at:], **kwargs)]
    else:
        results = [bisect(scenario, package, ordered, **kwargs)]
    echo(summarize(results))
    for result in results:
        echo(f"  {result.summary()}; {result.cost()}")
    return results


def summarize(results: Sequence[BisectResult]) -> str:
    """``"trl: broke in X, fixed in Y (verified)"`` from one or two searches."""
    if not results:
        return "nothing searched"
    package = results[0].package
    found = [r for r in results if r.changed_in]
    if not found:
        return "; ".join(r.summary() for r in results)
    parts = [f"{r.direction} in {r.changed_in}" for r in found]
    verified = all(r.verified for r in found)
    return f"{package}: {', '.join(parts)}" + (" (verified)" if verified else "")
