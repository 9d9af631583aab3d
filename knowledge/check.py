"""``lossdoctor kb check``: validate every entry and run its match / no-match examples."""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.kb import KnowledgeBase, load_kb
from knowledge.schema import FAILURE_CLASSES


@dataclass(frozen=True)
class ExampleResult:
    entry: str
    example: str
    expect_match: bool
    ranked: list[str]

    @property
    def passed(self) -> bool:
        first = self.ranked[0] if self.ranked else None
        return (first == self.entry) if self.expect_match else (first != self.entry)

    def describe(self) -> str:
        want = "rank first" if self.expect_match else "not rank first"
        got = ", ".join(self.ranked[:3]) or "no candidate"
        return f"{self.example}: should {want}; ranked: {got}"


def run_example(kb: KnowledgeBase, entry_id: str, text: str, expect_match: bool, name: str) -> ExampleResult:
    from bot.parse import parse_text
    from knowledge.matcher import rank

    ranked = [c.entry for c in rank(parse_text(text), kb)]
    return ExampleResult(entry=entry_id, example=name, expect_match=expect_match, ranked=ranked)


def check_kb(kb: KnowledgeBase | None = None) -> tuple[list[str], list[ExampleResult]]:
    """Problems found (strings) and every example's result. Entry loading errors raise."""
    kb = kb or load_kb()
    problems: list[str] = []
    results: list[ExampleResult] = []
    try:
        from reproducer.ops import OPS
    except ImportError:  # the reproducer is part of the base install; guard only against a broken tree
        OPS = None  # noqa: N806
    covered = {e.failure_class for e in kb.entries}
    for name in FAILURE_CLASSES:
        if name != "out_of_scope" and name not in covered:
            problems.append(f"failure class {name!r} has no entry")
    for entry in kb.entries:
        examples = kb.examples(entry.id)
        n_match = sum(e.expect_match for e in examples)
        n_no = len(examples) - n_match
        if n_match < 3:
            problems.append(f"{entry.id}: needs at least 3 match/ examples, has {n_match}")
        if n_no < 2:
            problems.append(f"{entry.id}: needs at least 2 no-match/ examples, has {n_no}")
        if OPS is not None:
            ops = [op.op for f in entry.fixes for op in f.ops] + [op.op for op in entry.reproduce.faults]
            for op in ops:
                if op not in OPS:
                    problems.append(f"{entry.id}: unknown reproducer operation {op!r}")
        for example in examples:
            result = run_example(kb, entry.id, example.read(), example.expect_match, example.name)
            results.append(result)
            if not result.passed:
                problems.append(result.describe())
    return problems, results


@dataclass(frozen=True)
class UntestedSignal:
    entry: str
    why: str
    weight: float


def untested_evidence(kb: KnowledgeBase | None = None) -> list[UntestedSignal]:
    """Evidence (positive weight) that none of its entry's match/ examples fires: a rule no example
    exercises is a rule no test checks, so each one is a knowledge example still to write."""
    from bot.parse import parse_text
    from knowledge.matcher import MatchText, holds

    kb = kb or load_kb()
    out: list[UntestedSignal] = []
    for entry in kb.entries:
        reports = [parse_text(x.read()) for x in kb.examples(entry.id) if x.expect_match]
        texts = [MatchText(r.text) for r in reports]
        for signal in entry.evidence:
            if signal.weight > 0 and not any(holds(signal.when, r, t) for r, t in zip(reports, texts)):
                out.append(UntestedSignal(entry.id, signal.why, signal.weight))
    return out
