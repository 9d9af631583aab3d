"""Score the matcher on a labelled JSONL set (``lossdoctor eval FILE.jsonl``).

Each line: ``{"user_text": "...", "failure_class": "<taxonomy name or out_of_scope>", ...}``.
A report the matcher abstains on counts as predicting ``out_of_scope``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import UnreadableInput
from bot.models import Diagnosis
from knowledge.kb import KnowledgeBase

OUT = "out_of_scope"


@dataclass
class EvalResult:
    total: int = 0
    top1: int = 0
    top3: int = 0
    abstained: int = 0
    abstained_correct: int = 0
    out_of_scope: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    misses: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def abstain_precision(self) -> float:
        return self.abstained_correct / self.abstained if self.abstained else 1.0

    @property
    def abstain_recall(self) -> float:
        return self.abstained_correct / self.out_of_scope if self.out_of_scope else 1.0

    def summary(self) -> str:
        n = self.total or 1
        lines = [
            f"reports: {self.total}",
            f"top-1: {self.top1 / n:.1%} ({self.top1}/{self.total})",
            f"top-3: {self.top3 / n:.1%} ({self.top3}/{self.total})",
            f"abstain precision: {self.abstain_precision:.1%} ({self.abstained_correct}/{self.abstained})",
            f"abstain recall: {self.abstain_recall:.1%} ({self.abstained_correct}/{self.out_of_scope})",
            f"out-of-scope given a class: {self.out_of_scope - self.abstained_correct}/{self.out_of_scope}",
        ]
        wrong = sorted(((k, v) for k, v in self.confusion.items() if k[0] != k[1]), key=lambda kv: -kv[1])
        if wrong:
            lines.append("confusions (expected -> predicted: count):")
            lines += [f"  {e} -> {p}: {c}" for (e, p), c in wrong]
        return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableInput(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or "user_text" not in row or "failure_class" not in row:
            raise UnreadableInput(f"{path}:{number}: each line needs 'user_text' and 'failure_class'")
        rows.append(row)
    return rows


def score(diagnosis: Diagnosis, expected: str, result: EvalResult, number: int) -> None:
    predicted = diagnosis.failure_class or OUT
    top3 = [c.failure_class for c in diagnosis.candidates[:3]]  # as the JSON lists them, out-of-scope ones included
    result.total += 1
    result.confusion[(expected, predicted)] += 1
    if expected == OUT:
        result.out_of_scope += 1
    if predicted == OUT:
        result.abstained += 1
        result.abstained_correct += expected == OUT
    if predicted == expected:
        result.top1 += 1
    else:
        result.misses.append((number, expected, predicted))
    if predicted == expected or (expected != OUT and expected in top3):
        result.top3 += 1


def evaluate(rows: list[dict], kb: KnowledgeBase, sets: list[str] | None = None) -> EvalResult:
    """Score `rows`; `sets[i]` names the labelled set row i comes from, which the matcher then does not
    compare it with (a set is never scored against its own lines)."""
    from bot.core import diagnose
    from bot.parse import parse_text

    result = EvalResult()
    for number, row in enumerate(rows, 1):
        held_out = sets[number - 1] if sets else None
        score(diagnose(parse_text(row["user_text"]), kb, held_out=held_out), row["failure_class"], result, number)
    return result
