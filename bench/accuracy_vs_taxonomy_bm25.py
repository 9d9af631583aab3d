"""Accuracy beside a baseline from the same run: lossdoctor's matcher vs a plain BM25 over taxonomy.md.

    python bench/accuracy_vs_taxonomy_bm25.py ../shared/taxonomy.md eval/*.jsonl

The baseline is the one the issue names: one BM25 document per `## `class`` section of the
taxonomy (the same `knowledge.lexical.BM25` the matcher uses), the best section is the answer.
Both are scored the same way as `lossdoctor eval` (top-1, top-3, near-misses given a class).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import diagnose  # noqa: E402
from bot.parse import parse_text  # noqa: E402
from knowledge.evaluate import OUT, EvalResult, read_jsonl, score  # noqa: E402
from knowledge.kb import default_kb  # noqa: E402
from knowledge.lexical import BM25  # noqa: E402


def taxonomy_baseline(taxonomy: Path) -> tuple[list[str], BM25]:
    parts = re.split(r"^## `([a-z0-9_]+)`\s*$", taxonomy.read_text(encoding="utf-8"), flags=re.MULTILINE)
    names, bodies = parts[1::2], parts[2::2]
    return names, BM25([n.replace("_", " ") + " " + b for n, b in zip(names, bodies)])


def main(taxonomy: str, *files: str) -> None:
    names, index = taxonomy_baseline(Path(taxonomy))
    rows = [(row, Path(f).stem) for f in files for row in read_jsonl(Path(f))]
    kb = default_kb()
    ours = EvalResult()
    base_top1 = base_top3 = base_given = 0
    for number, (row, held_out) in enumerate(rows, 1):
        want = row["failure_class"]
        score(diagnose(parse_text(row["user_text"]), kb, held_out=held_out), want, ours, number)
        scores = index.scores(row["user_text"])
        top3 = [names[i] for i in sorted(range(len(names)), key=lambda i: -scores[i])[:3]]
        base_top1 += top3[0] == want
        base_top3 += top3[0] == want or (want != OUT and want in top3)
        base_given += want == OUT and top3[0] != OUT
    n = len(rows) or 1
    near_misses = ours.out_of_scope
    print(f"{len(rows)} reports, {near_misses} near-misses")
    for key, (t1, t3, given) in {
        "lossdoctor": (ours.top1, ours.top3, near_misses - ours.abstained_correct),
        "BM25 over taxonomy.md": (base_top1, base_top3, base_given),
    }.items():
        print(f"{key:24s} top-1 {t1 / n:6.1%}   top-3 {t3 / n:6.1%}   near-misses given a class {given}/{near_misses}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: accuracy_vs_taxonomy_bm25.py TAXONOMY.md EVAL.jsonl...")
    main(*sys.argv[1:])
