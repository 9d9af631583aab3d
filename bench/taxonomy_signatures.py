"""How the matcher answers each "Typical signatures" line of taxonomy.md, quoted as a short report.

    python bench/taxonomy_signatures.py ../shared/taxonomy.md [-v]

The private set (a) is made of reports like those the taxonomy was distilled from; its signature
lines are the shortest such reports. Each line (backticks stripped) is diagnosed alone and scored
against the class whose section it is in, beside the BM25-over-taxonomy baseline from the same run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accuracy_vs_taxonomy_bm25 import taxonomy_baseline  # noqa: E402

from bot.core import diagnose  # noqa: E402
from bot.parse import parse_text  # noqa: E402
from knowledge.evaluate import EvalResult, score  # noqa: E402
from knowledge.kb import default_kb  # noqa: E402


_PLACEHOLDERS = {"(B*seq_len)": "(4096)", "(B)": "(8)", "(X)": "(1023)", "(Y)": "(512)", "Target N": "Target 5",
                 "key: N": "key: 0", "length N": "length 37", "(got M)": "(got 21)"}


def _numbers(line: str) -> str:
    """A real message has numbers where the taxonomy writes placeholders (`Target N`, `batch_size (B)`)."""
    for placeholder, number in _PLACEHOLDERS.items():
        line = line.replace(placeholder, number)
    return line


def signature_lines(taxonomy: Path) -> list[tuple[str, str]]:
    parts = re.split(r"^## `([a-z0-9_]+)`\s*$", taxonomy.read_text(encoding="utf-8"), flags=re.MULTILINE)
    rows = []
    for name, body in zip(parts[1::2], parts[2::2]):
        block = body.split("**Typical signatures.**", 1)[-1].split("**Usual fix.**", 1)[0]
        for line in re.findall(r"^- (.+)$", block, flags=re.MULTILINE):
            rows.append((name, _numbers(line.replace("`", "").strip())))
    return rows


def main(taxonomy: str, *flags: str) -> None:
    rows = signature_lines(Path(taxonomy))
    names, index = taxonomy_baseline(Path(taxonomy))
    kb = default_kb()
    ours = EvalResult()
    base1 = base3 = 0
    for number, (want, text) in enumerate(rows, 1):
        diagnosis = diagnose(parse_text(text), kb)
        score(diagnosis, want, ours, number)
        scores = index.scores(text)
        top3 = [names[i] for i in sorted(range(len(names)), key=lambda i: -scores[i])[:3]]
        base1 += top3[0] == want
        base3 += want in top3
        if "-v" in flags and (diagnosis.failure_class or "out_of_scope") != want:
            listed = [c.failure_class for c in diagnosis.candidates[:3]]
            print(f"MISS {want}: {text[:90]!r} -> {diagnosis.failure_class} {listed}")
    n = len(rows)
    print(f"{n} signature lines")
    print(f"lossdoctor               top-1 {ours.top1}/{n}   top-3 {ours.top3}/{n}")
    print(f"BM25 over taxonomy.md    top-1 {base1}/{n}   top-3 {base3}/{n}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: taxonomy_signatures.py TAXONOMY.md [-v]")
    main(*sys.argv[1:])
