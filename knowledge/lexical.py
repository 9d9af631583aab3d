"""A small Okapi BM25 index over knowledge entries, for free-form prose reports.

Pure Python: the corpus is a few dozen documents, so building the index costs about a
millisecond and needs no numpy.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_TOKEN = re.compile(r"[a-z][a-z0-9_]{1,40}")
_STOP = frozenset(
    "the and for with that this from are was were have has had not but you your when then than its into only "
    "what which does did can could would should will just all any also been being there their them they use "
    "using used get got how why is in on of to it be as at by or an if my me we our so do no".split()
)


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


class BM25:
    def __init__(self, documents: list[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(tokenize(d)) for d in documents]
        self.lengths = [sum(c.values()) for c in self.docs]
        self.avg_len = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for c in self.docs:
            df.update(c.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def length_norm(self, length: int) -> float:
        """The length part of the denominator for a document of `length` terms."""
        return self.k1 * (1 - self.b + self.b * length / (self.avg_len or 1.0))

    def weight(self, term: str, tf: int, norm: float) -> float:
        """What `term`, seen `tf` times in a document with length norm `norm`, adds to its score."""
        return self.idf[term] * tf * (self.k1 + 1) / (tf + norm)

    def scores(self, query: str) -> list[float]:
        terms = set(tokenize(query))
        out = []
        for counts, length in zip(self.docs, self.lengths):
            s = 0.0
            norm = self.length_norm(length)
            for t in terms:
                tf = counts.get(t)
                if tf:
                    s += self.weight(t, tf, norm)
            out.append(s)
        return out
