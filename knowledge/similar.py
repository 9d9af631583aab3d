"""Labelled reports of real threads, nearest first: what caused the reports that read most like this one.

The corpus is every knowledge-base match example (labelled with its entry's class) and, for the
bundled knowledge base, the labelled report sets under ``eval/`` (each line written from a public
thread, with its source URL). A report is compared with them by BM25 over their whole text; the
classes of the nearest ones fill the candidate list when the evidence names fewer than three causes,
and each such candidate cites the threads it came from.

Scoring a labelled set must not find its own lines: `nearest` takes the name of a set to hold out
(``lossdoctor eval`` holds out the file it scores, so each line is compared with the other sets only).
"""

from __future__ import annotations

import json
import sys
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.lexical import BM25, tokenize

if TYPE_CHECKING:
    from knowledge.kb import KnowledgeBase

REPORT_SETS_DIR = Path(__file__).resolve().parents[1] / "eval"
"""The labelled report sets (JSONL with user_text, failure_class, source), present in a checkout."""

NEIGHBOURS = 5
"""How many of the nearest reports vote on the causes."""

COMMON_SHARE = 0.2
"""Terms found in more than this share of the reports are not compared (they rank nothing)."""

TEXT_CHARS = 12_000
"""Each labelled report is indexed by its first TEXT_CHARS characters (long pastes are mostly code)."""

QUERY_CHARS = 6_000
"""A report is compared by its first QUERY_CHARS characters (the question and the error come first)."""


@dataclass(frozen=True)
class LabelledReport:
    failure_class: str
    source: str
    """The thread's URL, or the knowledge-base example's name."""
    set_name: str
    """The file the report comes from (a report set's stem, or ``kb`` for the knowledge base's examples)."""


@dataclass(frozen=True)
class Neighbour:
    report: LabelledReport
    score: float


class SimilarReports:
    """BM25 (`knowledge.lexical.BM25`'s own weighting) over a few thousand reports, kept as an
    inverted index of precomputed term weights: a query touches only the postings of its own terms,
    and terms found in most reports (which barely tell reports apart) are left out of it."""

    def __init__(self, reports: list[tuple[LabelledReport, str]]) -> None:
        # the labels as three flat lists of interned strings, the postings as one pair of flat arrays and
        # each term's start in them: a few pickled objects instead of thousands (the index travels in the
        # knowledge-base snapshot that every cold `diagnose` loads)
        self.classes = [sys.intern(r.failure_class) for r, _ in reports]
        self.sources = [r.source for r, _ in reports]
        self.sets = [sys.intern(r.set_name) for r, _ in reports]
        bm25 = BM25([text[:TEXT_CHARS] for _, text in reports])
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for number, (counts, length) in enumerate(zip(bm25.docs, bm25.lengths)):
            norm = bm25.length_norm(length)
            for term, tf in counts.items():
                docs, weights = postings.setdefault(term, ([], []))
                docs.append(number)
                weights.append(bm25.weight(term, tf, norm))
        common = max(COMMON_SHARE * len(reports), 10)
        self.terms: dict[str, int] = {}
        self.starts, self.doc_ids, self.weights = array("i", [0]), array("i"), array("f")
        for term, (docs, weights) in postings.items():
            if len(docs) <= common:
                self.terms[term] = len(self.terms)
                self.doc_ids.extend(docs)
                self.weights.extend(weights)
                self.starts.append(len(self.doc_ids))

    @property
    def reports(self) -> list[LabelledReport]:
        return [LabelledReport(*row) for row in zip(self.classes, self.sources, self.sets)]

    def nearest(self, text: str, *, k: int = NEIGHBOURS, held_out: str | None = None) -> list[Neighbour]:
        scores: dict[int, float] = {}
        for term in set(tokenize(text[:QUERY_CHARS])):
            number = self.terms.get(term)
            if number is not None:
                start, stop = self.starts[number], self.starts[number + 1]
                for doc, weight in zip(self.doc_ids[start:stop], self.weights[start:stop]):
                    scores[doc] = scores.get(doc, 0.0) + weight
        order = sorted((i for i in scores if self.sets[i] != held_out), key=lambda i: (-scores[i], i))
        return [Neighbour(LabelledReport(self.classes[i], self.sources[i], self.sets[i]), scores[i]) for i in order[:k]]


def votes(neighbours: list[Neighbour]) -> list[tuple[str, float, list[Neighbour]]]:
    """The neighbours' classes, each with its share of their summed scores and its neighbours, best first."""
    total = sum(n.score for n in neighbours) or 1.0
    weight: Counter[str] = Counter()
    members: dict[str, list[Neighbour]] = {}
    for n in neighbours:
        weight[n.report.failure_class] += n.score
        members.setdefault(n.report.failure_class, []).append(n)
    return [(c, w / total, members[c]) for c, w in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))]


def read_report_sets(directory: Path) -> list[tuple[LabelledReport, str]]:
    """The labelled lines of every ``*.jsonl`` under `directory`; a line that is not a labelled report is skipped."""
    out = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("user_text"), str) and isinstance(row.get("failure_class"), str):
                out.append((LabelledReport(row["failure_class"], str(row.get("source", "")), path.stem), row["user_text"]))
    return out


KB_SET = "kb"
"""The set name of the knowledge base's own match examples."""


def labelled_corpus(kb: KnowledgeBase) -> list[tuple[LabelledReport, str]]:
    """Every labelled report of a knowledge base: its match examples (labelled with their entry's
    class) and, for the bundled knowledge base, the report sets under ``eval/``. The similar-report
    index and the wording classifier (`knowledge.classifier`) are both built from it."""
    from knowledge.kb import ENTRIES_DIR

    corpus = [(LabelledReport(entry.failure_class, example.name, KB_SET), example.read())
              for entry in kb.entries for example in kb.examples(entry.id) if example.expect_match]
    if kb.directory == ENTRIES_DIR:
        corpus += read_report_sets(REPORT_SETS_DIR)
    return corpus
