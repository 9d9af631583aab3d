"""What reports worded like this one were caused by: a linear classifier of a report's wording.

A multinomial logistic regression over the words of a report (tf-idf, sublinear, L2-normalised;
Chinese, Japanese and Korean text as character pairs), trained on every labelled report there is:
the knowledge base's match examples (labelled with their entry's class) and the report sets under
``eval/``, each line written from a public thread. It gives each failure class (``out_of_scope``
included) a probability; the matcher weighs those against its evidence (`knowledge.matcher.weigh`).

Training needs numpy and a few seconds; diagnosing does not. The trained model ships as
``report_classifier.json.gz`` (``lossdoctor kb train`` writes it; a test fails when it no longer
matches the labelled reports). Scoring a labelled set must not use a model that saw it: for a set
of the training data, `classifier_for` trains (once, then cached in the storage home) a model
without that set's fold, one of FOLDS groups of sets.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import re
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.similar import KB_SET, labelled_corpus

if TYPE_CHECKING:
    from knowledge.kb import KnowledgeBase

MODEL_FILE = Path(__file__).resolve().with_name("report_classifier.json.gz")
"""The model trained on every labelled report of the bundled knowledge base and report sets."""

TEXT_CHARS = 8_000
"""A report is read by its first TEXT_CHARS characters (the question and the error come first)."""
MAX_TERMS = 10_000
"""The vocabulary: the terms found in most reports, at most this many."""
MIN_REPORTS = 2
"""A term must occur in at least this many labelled reports to be in the vocabulary."""
REGULARISATION = 0.1
"""L2 penalty on the weights (1/C with C = 10), against the summed log-loss of the reports."""
ITERATIONS = 40
"""L-BFGS iterations: the held-out accuracy no longer moves after about 40."""
FOLDS = 5
"""Labelled sets are split into this many folds by name; scoring a set uses a model without its fold."""

_WORD = re.compile(r"[a-z_][a-z0-9_]+|\d+")
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]+")


def wording(text: str) -> str:
    """What the classifier reads of a report: its first TEXT_CHARS characters without traceback frames,
    routine notices (deprecation warnings, wandb log-in lines) and environment rows or package pins,
    which every kind of report carries alike (a pasted `transformers env` block moved 91 of 1,953
    answers before they were left out)."""
    from bot.parse import is_setup_line
    from knowledge.matcher import lexical_text

    text = lexical_text(text[:2 * TEXT_CHARS])
    return "\n".join(line for line in text.split("\n") if not is_setup_line(line))[:TEXT_CHARS]


def terms(text: str) -> Counter[str]:
    """The terms of a report's `wording`: lower-cased words and numbers; CJK runs as overlapping character pairs."""
    text = wording(text).lower()
    found = Counter(_WORD.findall(text))
    for run in _CJK.findall(text):
        found.update(run[i:i + 2] for i in range(len(run) - 1))
    return found


@dataclass
class ReportClassifier:
    classes: list[str]
    vocabulary: dict[str, int]
    idf: array
    """One float per vocabulary term."""
    weights: array
    """len(vocabulary) x len(classes) floats, one row per term."""
    bias: list[float]
    trained_on: str
    """`corpus_fingerprint` of the reports it was trained on."""
    reports: int
    """How many labelled reports it was trained on."""

    def probabilities(self, text: str) -> dict[str, float]:
        width = len(self.classes)
        features = []
        for term, count in terms(text).items():
            row = self.vocabulary.get(term)
            if row is not None:
                features.append((row, (1.0 + math.log(count)) * self.idf[row]))
        norm = math.sqrt(sum(v * v for _, v in features)) or 1.0
        z = list(self.bias)
        weights = self.weights
        for row, value in features:
            value /= norm
            start = row * width
            z = [a + b * value for a, b in zip(z, weights[start:start + width])]
        top = max(z)
        exp = [math.exp(v - top) for v in z]
        total = sum(exp)
        return {c: e / total for c, e in zip(self.classes, exp)}

    def write(self, path: Path) -> None:
        """Save with the weights quantised to one byte per class column (a few hundred KB)."""
        width = len(self.classes)
        scales = [max((abs(self.weights[i]) for i in range(k, len(self.weights), width)), default=0.0) / 127 or 1.0
                  for k in range(width)]
        quantised = array("b", (max(-127, min(127, round(w / scales[i % width]))) for i, w in enumerate(self.weights)))
        vocabulary = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        data = {
            "classes": self.classes, "vocabulary": vocabulary, "scales": scales, "bias": self.bias,
            "idf": base64.b64encode(array("f", self.idf).tobytes()).decode(),
            "weights": base64.b64encode(quantised.tobytes()).decode(),
            "trained_on": self.trained_on, "reports": self.reports,
        }
        path.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))

    @classmethod
    def read(cls, path: Path) -> ReportClassifier:
        data = json.loads(gzip.decompress(path.read_bytes()))
        width = len(data["classes"])
        quantised = array("b")
        quantised.frombytes(base64.b64decode(data["weights"]))
        scales = data["scales"]
        idf = array("f")
        idf.frombytes(base64.b64decode(data["idf"]))
        return cls(
            classes=data["classes"], vocabulary={t: i for i, t in enumerate(data["vocabulary"])}, idf=idf,
            weights=array("f", (q * scales[i % width] for i, q in enumerate(quantised))), bias=data["bias"],
            trained_on=data["trained_on"], reports=data["reports"],
        )


LabelledText = tuple[str, str, str]
"""(text, failure_class, set name)."""


def labelled_reports(kb: KnowledgeBase) -> list[LabelledText]:
    """`knowledge.similar.labelled_corpus` as (text, class, set name); the knowledge base's own
    examples (set KB_SET) are always trained on, never held out."""
    return [(text, report.failure_class, report.set_name) for report, text in labelled_corpus(kb)]


def corpus_fingerprint(reports: list[LabelledText]) -> str:
    digest = hashlib.sha256()
    for text, failure_class, set_name in sorted(reports, key=lambda r: (r[2], r[1], r[0])):
        digest.update(f"{set_name}\0{failure_class}\0{text}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


def fold_of(set_name: str) -> int | None:
    """The fold of a labelled set (None for the knowledge base's examples, which are never held out)."""
    return None if set_name == KB_SET else zlib.crc32(set_name.encode()) % FOLDS


def train(reports: list[LabelledText], *, without_fold: int | None = None) -> ReportClassifier:
    """Fit the classifier (numpy, a few seconds); `without_fold` leaves that fold's sets out."""
    import numpy as np

    fingerprint = corpus_fingerprint(reports)
    if without_fold is not None:
        reports = [r for r in reports if fold_of(r[2]) != without_fold]
    docs = [terms(text) for text, _, _ in reports]
    df = Counter(t for d in docs for t in d)
    vocabulary = sorted(sorted((t for t, n in df.items() if n >= MIN_REPORTS), key=lambda t: (-df[t], t))[:MAX_TERMS])
    index = {t: i for i, t in enumerate(vocabulary)}
    n, size = len(docs), len(vocabulary)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocabulary])
    classes = sorted({c for _, c, _ in reports})
    width = len(classes)
    rows, cols, vals = [], [], []
    for number, d in enumerate(docs):
        feats = [(index[t], (1.0 + math.log(c)) * idf[index[t]]) for t, c in d.items() if t in index]
        norm = math.sqrt(sum(v * v for _, v in feats)) or 1.0
        for col, v in sorted(feats):
            rows.append(number)
            cols.append(col)
            vals.append(v / norm)
    r, c, v = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(vals)
    by_col = np.argsort(c, kind="stable")
    rt, ct, vt = r[by_col], c[by_col], v[by_col]
    row_starts, col_starts = np.searchsorted(r, np.arange(n)), np.searchsorted(ct, np.arange(size))
    row_used = np.diff(np.append(row_starts, len(r))) > 0
    col_used = np.diff(np.append(col_starts, len(ct))) > 0
    target = np.zeros((n, width))
    target[np.arange(n), [classes.index(f) for _, f, _ in reports]] = 1.0

    def loss_and_gradient(theta):  # noqa: ANN001, ANN202 - numpy arrays
        w, b = theta[:size * width].reshape(size, width), theta[size * width:]
        z = np.zeros((n, width))
        z[row_used] = np.add.reduceat(w[c] * v[:, None], row_starts[row_used], axis=0)
        z += b
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(target * log_p).sum() + 0.5 * REGULARISATION * (w * w).sum()
        g = np.exp(log_p) - target
        gw = np.zeros((size, width))
        gw[col_used] = np.add.reduceat(g[rt] * vt[:, None], col_starts[col_used], axis=0)
        return loss, np.concatenate([(gw + REGULARISATION * w).ravel(), g.sum(axis=0)])

    theta = _lbfgs(loss_and_gradient, np.zeros(size * width + width), ITERATIONS)
    return ReportClassifier(
        classes=classes, vocabulary=index, idf=array("f", idf.tolist()),
        weights=array("f", theta[:size * width].tolist()), bias=theta[size * width:].tolist(),
        trained_on=fingerprint, reports=n,
    )


def _lbfgs(f, x, iterations: int, memory: int = 10):  # noqa: ANN001, ANN202 - numpy arrays
    """Minimise f (which returns value and gradient) by L-BFGS with a backtracking line search."""
    value, grad = f(x)
    steps: list = []
    for _ in range(iterations):
        q = grad.copy()
        alphas = []
        for s, y in reversed(steps):
            a = (s @ q) / (y @ s)
            alphas.append(a)
            q -= a * y
        if steps:
            s, y = steps[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(1.0, float(abs(grad).max()))
        for (s, y), a in zip(steps, reversed(alphas)):
            q += s * (a - (y @ q) / (y @ s))
        direction = -q
        slope = grad @ direction
        if slope >= 0:
            direction, slope, steps = -grad, -(grad @ grad), []
        step = 1.0
        while True:
            candidate = x + step * direction
            new_value, new_grad = f(candidate)
            if new_value <= value + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = candidate - x, new_grad - grad
        if s @ y > 1e-10:
            steps = [*steps, (s, y)][-memory:]
        done = abs(value - new_value) < 1e-6 * max(1.0, abs(value))
        x, value, grad = candidate, new_value, new_grad
        if done:
            break
    return x


def classifier_for(kb: KnowledgeBase, held_out: str | None = None) -> ReportClassifier | None:
    """The classifier to weigh a report with; None for a knowledge base other than the bundled one.

    With `held_out` the name of a labelled set it was trained on, a model trained without that set's
    fold (trained on first use, then kept in the storage home's cache)."""
    from knowledge.kb import ENTRIES_DIR

    if kb.directory != ENTRIES_DIR:
        return None
    if "classifier" not in kb.cache:
        reports = labelled_reports(kb)
        kb.cache["classifier"] = current_model(reports)
        kb.cache["classifier_sets"] = frozenset(r[2] for r in reports) - {KB_SET}
    full = kb.cache["classifier"]
    fold = fold_of(held_out) if held_out else None
    if full is None or fold is None or held_out not in kb.cache["classifier_sets"]:  # type: ignore[operator]
        return full  # type: ignore[return-value]
    folds = kb.cache.setdefault("classifier_folds", {})
    if fold not in folds:  # type: ignore[operator]
        from bot.storage import read_cache, write_cache

        name = f"classifierfold{fold}-{full.trained_on}.pickle"  # type: ignore[union-attr]
        model = read_cache(name)
        if not isinstance(model, ReportClassifier):
            model = train(labelled_reports(kb), without_fold=fold)
            write_cache(name, model)
        folds[fold] = model  # type: ignore[index]
    return folds[fold]  # type: ignore[index]


def current_model(reports: list[LabelledText]) -> ReportClassifier | None:
    """The shipped model when it was trained on exactly these reports, else one trained now; where
    training is impossible (no numpy), the shipped model as it is (None if it cannot be read)."""
    try:
        shipped = ReportClassifier.read(MODEL_FILE)
    except (OSError, ValueError, KeyError, EOFError):
        shipped = None
    if shipped is not None and shipped.trained_on == corpus_fingerprint(reports):
        return shipped
    try:
        return train(reports)
    except ImportError:
        return shipped
