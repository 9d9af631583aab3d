"""Reproduce a diagnosis: build each candidate's scenario from the report, run the
baseline and every fix in the sandbox, and judge them.

`Reproducer` is the callable that `bot.core.diagnose` takes as ``reproduce=``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.models import Candidate, FixOutcome, Report, Reproduction, RunRecord
from bot.settings import Settings, get_settings
from knowledge.kb import KnowledgeBase
from knowledge.schema import Entry, Fix
from reproducer.checks import baseline_reproduces, fix_verified
from reproducer.from_report import build_scenario
from reproducer.ops import apply_ops
from reproducer.scenario import Scenario

UPGRADE_OP = "upgrade"


@dataclass
class Plan:
    """The runs for one candidate entry."""

    entry: Entry
    scenario: Scenario
    sources: dict[str, str]
    fixes: list[tuple[Fix, Scenario]] = field(default_factory=list)
    skipped: list[tuple[Fix, str]] = field(default_factory=list)


def plan_for(report: Report, entry: Entry) -> Plan:
    scenario, sources = build_scenario(report, entry.reproduce.scenario, entry.reproduce.faults)
    plan = Plan(entry=entry, scenario=scenario, sources=sources)
    for fix in entry.fixes:
        if not fix.offered_for(report):
            continue
        names = [op.op for op in fix.ops]
        if not fix.applies_to(scenario.trainer):
            plan.skipped.append((fix, f"applies to {', '.join(fix.trainers)}; the reproduction uses {scenario.trainer}"))
        elif fix.heads and scenario.head not in fix.heads:
            plan.skipped.append((fix, f"for {', '.join(fix.heads)} models; the reported model has a {scenario.head} head"))
        elif not names:
            plan.skipped.append((fix, "this fix has no reproducer operation"))
        elif UPGRADE_OP in names:
            plan.skipped.append((fix, "verified by running the scenario on the upgraded versions"))
        else:
            fixed = apply_ops(scenario, fix.ops)
            if fixed == scenario:
                plan.skipped.append((fix, "it changes nothing in this setup (e.g. no num_labels covers a label of -1)"))
            else:
                plan.fixes.append((fix, fixed))
    return plan


def _record(data: dict[str, Any], fix: str | None) -> RunRecord:
    allowed = RunRecord.model_fields
    return RunRecord.model_validate({**{k: v for k, v in data.items() if k in allowed}, "fix": fix})


def _evidence(record: RunRecord, reason: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "loss": record.loss,
        "supervised_tokens": record.supervised_tokens,
        "params_changed": record.params_changed,
        "grad_norm": record.grad_norm,
        "exception": record.exception.model_dump() if record.exception else None,
        "seconds": record.seconds,
        "versions": record.versions,
        "device": record.device,
    }


@dataclass
class Outcome:
    plan: Plan
    baseline: RunRecord
    reproduced: bool
    baseline_reason: str
    runs: list[RunRecord]
    fixes: list[FixOutcome]
    batch: dict[str, Any]


class Reproducer:
    """``reproducer(report, candidates, kb) -> (Reproduction | None, [FixOutcome])``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        progress: Callable[[str], None] | None = None,
        build_envs: bool = True,
        write_repro: Path | None = None,
        run: bool = True,
        run_batch: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.progress = progress or (lambda message: None)
        self.build_envs = build_envs
        self.write_repro = write_repro
        self.run = run
        if run_batch is None:
            from reproducer.runner import run_batch as default_run_batch

            run_batch = default_run_batch
        self.run_batch = run_batch

    def __call__(
        self, report: Report, candidates: list[Candidate], kb: KnowledgeBase
    ) -> tuple[Reproduction | None, list[FixOutcome]]:
        started = time.perf_counter()
        entries = [kb.get(c.entry) for c in candidates][: self.settings.repro_max_candidates]
        plans = [plan_for(report, e) for e in entries if e.reproduce.reproducible]
        not_reproducible = [e for e in entries if not e.reproduce.reproducible]
        if not plans:
            reasons = "; ".join(f"{e.id}: {e.reproduce.reason}" for e in not_reproducible)
            return None, self._not_run_fixes(entries, reasons or "no reproducible candidate", report)
        if self.write_repro is not None:
            self._write_script(plans[0])
        if not self.run:
            return None, self._not_run_fixes(entries, "reproduction not run (--no-repro)", report)

        self.progress(f"reproducing on a tiny model: {', '.join(p.entry.id for p in plans)}")
        outcomes = self._run_plans(report, plans, python=None)
        chosen = self._choose(outcomes)
        note = None
        if not chosen.reproduced:
            note = self._did_not_reproduce_note(report, outcomes)
            retried, retry_note = self._on_user_versions(report, plans)
            if retried is not None:
                outcomes = retried
                chosen = self._choose(outcomes)
                note = retry_note if chosen.reproduced else f"{note} {retry_note} It did not fail there either ({chosen.baseline_reason})."
            elif retry_note:
                note = f"{note} {retry_note}"
        if chosen.reproduced and not any(f.status == "verified" for f in chosen.fixes):
            combined = self._combined_fix(report, outcomes, chosen)
            if combined is not None:
                chosen.fixes.append(combined)
        fixes = [f for o in outcomes for f in o.fixes] + self._not_run_fixes(not_reproducible, "not reproducible on a tiny model", report)
        fixes.sort(key=lambda f: f.entry != chosen.plan.entry.id)
        batch = chosen.batch
        reproduction = Reproduction(
            reproduced=chosen.reproduced,
            versions=batch.get("versions", {}),
            device=batch.get("device") or "cpu",
            sandbox=batch.get("sandbox", ""),
            entry=chosen.plan.entry.id,
            baseline=chosen.baseline,
            runs=chosen.runs,
            seconds=round(time.perf_counter() - started, 3),
            scenario=chosen.plan.scenario.model_dump(),
            field_sources=chosen.plan.sources,
            note=note,
        )
        return reproduction, fixes

    # -- running -------------------------------------------------------------------------

    def _run_plans(self, report: Report, plans: list[Plan], *, python: str | None) -> list[Outcome]:
        runs: list[dict[str, Any]] = []
        for plan in plans:
            runs.append({"fix": None, "scenario": plan.scenario.model_dump()})
            runs += [{"fix": fix.id, "scenario": s.model_dump()} for fix, s in plan.fixes]
        batch = self.run_batch(runs, python=python)
        records = iter(batch["runs"])
        outcomes = []
        for plan in plans:
            baseline = _record(next(records), None)
            reproduced, reason = baseline_reproduces(baseline.model_dump(), plan.entry.reproduce.expect, report)
            baseline.verdict = "reproduced" if reproduced else f"not reproduced: {reason}"
            fix_runs, fix_outcomes = [], []
            for fix, _ in plan.fixes:
                record = _record(next(records), fix.id)
                ok, why = fix_verified(record.model_dump(), responses_only=fix.responses_only)
                status = "verified" if ok and reproduced else "failed" if not ok else "not_run"
                if ok and not reproduced:
                    why = "trains, but the baseline did not reproduce the failure, so this proves nothing"
                record.verdict = status if status != "not_run" else why
                fix_runs.append(record)
                fix_outcomes.append(self._outcome(plan.entry, fix, status, _evidence(record, why)))
            fix_outcomes += [self._outcome(plan.entry, fix, "not_run", {"reason": why}) for fix, why in plan.skipped]
            outcomes.append(Outcome(plan, baseline, reproduced, reason, fix_runs, fix_outcomes, batch))
        return outcomes

    def _on_user_versions(self, report: Report, plans: list[Plan]) -> tuple[list[Outcome] | None, str | None]:
        """Rerun on the report's own library versions when they differ from the installed ones."""
        if not self.build_envs:
            return None, None
        from reproducer.envs import EnvError, EnvManager
        from reproducer.versions import differs_from_installed, select_versions

        selection = select_versions(report)
        if not selection.requested or not differs_from_installed(selection.requested):
            return None, None
        pins = ", ".join(f"{k} {v}" for k, v in sorted(selection.requested.items()))
        self.progress(f"the installed versions did not reproduce it; preparing an environment with {pins}")
        try:
            env = EnvManager(self.settings).ensure(selection.requested, progress=self.progress)
        except EnvError as exc:
            return None, f"An environment with your versions ({pins}) could not be prepared ({exc}), so it ran on the installed versions only."
        outcomes = self._run_plans(report, plans, python=str(env.python))
        self._run_upgrade_fixes(report, outcomes)
        note = " ".join([f"It was then run on your versions ({pins}) in a cached environment.", *selection.evidence])
        return outcomes, note

    def _run_upgrade_fixes(self, report: Report, outcomes: list[Outcome]) -> None:
        """For a failure reproduced on the report's versions, run each 'upgrade' fix: the same
        scenario on the requested release (the installed stack when it satisfies the request,
        else a cached environment with that exact pin)."""
        from packaging.specifiers import SpecifierSet

        from reproducer.versions import installed_versions, requested_versions

        installed = installed_versions()
        for outcome in (o for o in outcomes if o.reproduced):
            for fix in outcome.plan.entry.fixes:
                upgrade = next((op for op in fix.ops if op.op == UPGRADE_OP), None)
                if upgrade is None or not fix.applies_to(outcome.plan.scenario.trainer):
                    continue
                package, wanted = upgrade.args["package"], str(upgrade.args["version"])
                spec = SpecifierSet(wanted if wanted[0] in "<>=!~" else f"=={wanted}")
                python = None
                if installed.get(package) is None or installed[package].split("+")[0] not in spec:
                    if not wanted[0].isdigit():
                        continue  # a range the installed stack does not satisfy: nothing definite to build
                    from reproducer.envs import EnvError, EnvManager

                    try:
                        env = EnvManager(self.settings).ensure({**requested_versions(report), package: wanted}, progress=self.progress)
                    except EnvError as exc:
                        self._replace_fix(outcome, fix, "not_run", {"reason": f"could not build {package} {wanted}: {exc}"})
                        continue
                    python = str(env.python)
                record, why = self._run_one(fix.id, outcome.plan.scenario, python=python, responses_only=False)
                outcome.runs.append(record)
                self._replace_fix(outcome, fix, record.verdict, _evidence(record, f"{why} on {package} {record.versions.get(package)}"))

    def _run_one(self, fix_id: str, scenario: Scenario, *, python: str | None, responses_only: bool) -> tuple[RunRecord, str]:
        """Run one fixed scenario in the sandbox and judge it; the record's verdict is 'verified' or 'failed'."""
        batch = self.run_batch([{"fix": fix_id, "scenario": scenario.model_dump()}], python=python)
        record = _record(batch["runs"][0], fix_id)
        ok, why = fix_verified(record.model_dump(), responses_only=responses_only)
        record.verdict = "verified" if ok else "failed"
        return record, why

    def _replace_fix(self, outcome: Outcome, fix: Fix, status: str, evidence: dict[str, Any]) -> None:
        outcome.fixes = [f for f in outcome.fixes if f.id != fix.id]
        outcome.fixes.append(self._outcome(outcome.plan.entry, fix, status, evidence))

    def _combined_fix(self, report: Report, outcomes: list[Outcome], chosen: Outcome) -> FixOutcome | None:
        """Two causes at once: when single fixes fail, try the first fix of each reproduced candidate together."""
        others = [o for o in outcomes if o is not chosen and o.plan.fixes]
        if not others or not chosen.plan.fixes:
            return None
        first, _ = chosen.plan.fixes[0]
        second, _ = others[0].plan.fixes[0]
        scenario = apply_ops(apply_ops(chosen.plan.scenario, first.ops), second.ops)
        fix_id = f"{first.id}+{second.id}"
        record, why = self._run_one(fix_id, scenario, python=None, responses_only=first.responses_only or second.responses_only)
        chosen.runs.append(record)
        return FixOutcome(
            id=fix_id, title=f"{first.title} + {second.title}", entry=chosen.plan.entry.id,
            ops=[op.op for op in [*first.ops, *second.ops]], status=record.verdict,  # type: ignore[arg-type]
            evidence=_evidence(record, why), snippet="\n".join(s for s in (first.snippet, second.snippet) if s) or None,
        )

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _choose(outcomes: list[Outcome]) -> Outcome:
        def key(o: Outcome) -> tuple[int, int]:
            return (not o.reproduced, not any(f.status == "verified" for f in o.fixes))

        return sorted(outcomes, key=key)[0]

    @staticmethod
    def _did_not_reproduce_note(report: Report, outcomes: list[Outcome]) -> str:
        from reproducer.versions import installed_versions

        first = outcomes[0]
        installed = installed_versions()
        theirs = {k: v for k, v in report.versions.items() if k in installed and installed[k] != v}
        text = f"The tiny reproduction did not fail the way your report does ({first.baseline_reason})."
        if theirs:
            mine = ", ".join(f"{k} {installed[k]}" for k in sorted(theirs))
            yours = ", ".join(f"{k} {v}" for k, v in sorted(theirs.items()))
            text += f" It ran on {mine}; you have {yours}."
        return text

    @staticmethod
    def _outcome(entry: Entry, fix: Fix, status: str, evidence: dict[str, Any]) -> FixOutcome:
        return FixOutcome(
            id=fix.id, title=fix.title, entry=entry.id, ops=[op.op for op in fix.ops],
            status=status, evidence=evidence, snippet=fix.snippet or None,  # type: ignore[arg-type]
        )

    def _not_run_fixes(self, entries: list[Entry], reason: str, report: Report | None = None) -> list[FixOutcome]:
        return [self._outcome(e, f, "not_run", {"reason": reason})
                for e in entries for f in e.fixes if report is None or f.offered_for(report)]

    def _write_script(self, plan: Plan) -> None:
        from reproducer.script import write_script

        runs = [("baseline", plan.scenario.model_dump())] + [(fix.id, s.model_dump()) for fix, s in plan.fixes]
        self.write_repro.mkdir(parents=True, exist_ok=True)
        path = write_script(runs, self.write_repro / f"repro_{plan.entry.id.replace('-', '_')}.py")
        self.progress(f"wrote {path}")
