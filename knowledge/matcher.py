"""Rank knowledge entries for a `Report`: explicit evidence first, BM25 for prose.

Deterministic. Each candidate carries the evidence that fired (``why``), so a reply can
say why it believes what it says.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from bot.models import Candidate, Report
from knowledge.kb import Example, KnowledgeBase
from knowledge.lexical import BM25
from knowledge.prefilter import Branches, branches, may_match, possible_part, required_literals
from knowledge.schema import Condition, Entry
from knowledge.similar import SimilarReports, labelled_corpus, votes

LEXICAL_WEIGHT = 1.0
"""At most this much is added to an entry's evidence score for word overlap with the report."""
LEXICAL_MIN_RAW = 4.0
"""Below this raw BM25 score the lexical signal is noise and adds nothing."""
LEXICAL_ONLY_MIN_RAW = 8.5
"""When no entry has enough structured evidence, a lexical-only candidate needs this raw BM25 score."""
LEXICAL_QUERY_CHARS = 32_000
"""Only the head and tail of a huge paste feed the lexical query (time stays bounded)."""
ALTERNATIVES = 3
"""When the evidence supports fewer distinct classes than this, weaker alternatives fill the list."""
ALTERNATIVE_GAP = 2.5
"""Alternatives score at least this far below the best candidate, so they are listed but never
'in play' (bot.core.CLOSE_SCORE is smaller): nothing is reproduced or fixed on their account."""
WORDING_ONLY = "no decisive evidence; the wording resembles this entry"
"""The reason a candidate carries when only its wording put it on the list."""
AGAINST = "(against)"
"""Prefix of a reason that counts against the candidate."""
SETUP_ONLY = "set-up only"
"""Marks a reason that only describes the set-up and was not counted (no sign of the failure)."""
OUTWEIGHED = "outweighed by the evidence against"
"""Marks a reason whose weight the evidence against the same entry cancels: it is shown, not counted."""
ALTERNATIVE = "a weaker alternative: some of its evidence or wording fits, not enough to rank it higher"
"""The last reason of a candidate listed only as 'also possible' (see `_alternatives`)."""
LOOK_ALIKE_MARGIN = 0.2
"""When no entry has decisive evidence, an out-of-scope look-alike within this score of the best
wording-only guess leads (the diagnosis abstains; the guess stays listed)."""
ALTERNATIVE_MIN_LEXICAL = 0.5
"""An entry without enough evidence is listed as an alternative only if its wording is this close to the best."""
CONTEXT_FIELDS = frozenset({
    "trainer", "collator", "model_class", "model_name", "model_type", "flag", "flag_absent", "version",
    "dataset_format", "call", "peft", "dataset_column", "defined_function", "collator_given", "section",
})
"""Condition fields that describe the set-up (what is installed, configured, loaded), not what went wrong."""
SHOWN_MIN = 1.0
"""Below this much evidence of what went wrong (an exception, a warning, a metric, the keys of the
missing-loss message, a frame, the wording outside pasted code and configs), set-up signals add nothing."""
NEAR_EVIDENCE = 0.75
"""An entry whose evidence reaches this share of its min_score joins a lexical-only list even when its wording
is not among the closest: most of its decisive evidence is there, which says more than word overlap."""
SYMPTOM_WEIGHT = 2.0
"""How much an alternative gains when the report shows the symptom most of the entry's own examples show."""
SYMPTOM_MIN_SHARE = 0.3
"""An entry whose examples show one of the report's symptoms at least this often is a possible alternative."""
SYMPTOM_METRICS = ("loss_zero", "loss_nan", "loss_inf", "loss_high", "grad_norm_zero", "grad_norm_nan", "grad_norm_inf",
                   "eval_loss_nan")
EXAMPLE_CHARS = 3_000
SIMILAR_MIN_RAW = 4.0
"""The nearest labelled report must score at least this (BM25) before similar reports fill the list."""
SIMILAR_REPORTS = "most similar labelled reports had this cause"
MATCH_TEXT_CHARS = 256_000
"""`text` conditions search at most this much of a paste: its head and its tail (tracebacks are at the end)."""
FAILURE_WORDS = re.compile(
    r"loss|\bnans?\b|\binfs?\b|label|\bgrad|error|exception|traceback|warning|diverg|explod|spike|stuck|\bzero\b"
    r"|wrong|broken|\bbug|fail|crash|garbage|pad(?:ding)?[ _]token|\bnot\s+(?:learn|decreas|converg|improv|work)"
    r"|(?:does|do|did)n[o']?t\s+(?:learn|decreas|converg|improv|work)"
    r"|\b(?:end|ends|ended|finish|finishes|finished|stops|stopped)\s+(?:too\s+)?(?:early|quickly|fast|after)"
    r"|损失|报错|错误|异常|不下降|不收敛|就结束|提前结束|没有训练完|エラー|損失|下がらない|異常|終了してしまう",
    re.IGNORECASE,
)
"""Without an exception, a logged metric or a warning, a report needs one of these words (a sign that something
failed) before wording alone may name a cause: 'how do I set a cosine schedule?' is not a failure report."""
WORDING_MODEL_WEIGHT = 10 / 3
"""In `weigh`, a class's probability under the wording classifier counts this much against log(1 + its
best evidence score). Replayed on the first looks of 725 unseen reports (sessions 9-13, each with a
classifier trained only on the reports labelled before it), 10/3 with ABSTAIN_WEIGHT 1.0 and the
order of `_others_by_wording` took the right class named first from 70.6 to 74.9 %, in the first three
from 82.3 to 91.0 %, and near-misses given a class from 35 to 20 of 283 (eval/README.md, session 14)."""
ABSTAIN_WEIGHT = 1.0
"""In `weigh`, what the matcher's own abstention adds to the side of 'not a loss failure'."""
DECISIVE_SCORE = 3.0
"""A lead with at least this much evidence (a cause, or an out-of-scope look-alike) stands whatever the
wording classifier says: explicit evidence (an exception's message, the keys of the missing-loss
message, a logged value with the set-up that explains it) outweighs word statistics. On the 1,942 labelled lines the classifier overturned such leads
about seven times as often wrongly as rightly."""
WORDING_MODEL = "a classifier of report wording, trained on {reports} labelled reports, gives this cause {p:.0%}"
"""The reason a candidate carries for the wording classifier."""
MATCH_LINE_CHARS = 4_000
"""Longer lines are cut before regexes see them, so a pathological line cannot make a search quadratic."""


@lru_cache(maxsize=4096)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


def _search(pattern: str, values: Any) -> bool:
    rx = _rx(pattern)
    return any(rx.search(v) for v in values if v)


def _flag_equal(actual: Any, expected: Any) -> bool:
    if expected == "*":
        return True
    if isinstance(expected, bool) or isinstance(actual, bool):
        return _truthy(actual) == _truthy(expected)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            return float(actual) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(actual).strip().strip("'\"").lower() == str(expected).lower()


def _truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().strip("'\"").lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off", "none", "null"}:
        return False
    return None


def _version_in(version: str, spec: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version.split("+")[0]) in SpecifierSet(spec, prereleases=True)
    except (InvalidVersion, InvalidSpecifier):
        return False


def _metric(report: Report, metric: str) -> bool:
    if metric == "loss_zero":
        return any(v == 0.0 for v in report.losses)
    if metric == "loss_nan":
        return any(math.isnan(v) for v in report.losses)
    if metric == "grad_norm_nan":
        return any(math.isnan(v) for v in report.grad_norms)
    if metric == "loss_inf":
        return any(math.isinf(v) for v in report.losses)
    if metric == "grad_norm_inf":
        return any(math.isinf(v) for v in report.grad_norms)
    if metric == "grad_norm_zero":
        return any(v == 0.0 for v in report.grad_norms)
    if metric == "eval_loss_nan":
        return any(math.isnan(v) for v in report.eval_losses)
    if metric == "eval_loss_constant":  # three or more evaluations to the last digit: the weights did not change
        finite = [v for v in report.eval_losses if math.isfinite(v) and v != 0.0]
        return len(finite) >= 3 and len(set(finite)) == 1 and len(finite) == len(report.eval_losses)
    if metric == "loss_falls":  # a finite, non-zero training loss that ends clearly below where it began: the weights learn
        logged = report.losses
        return (len(logged) >= 3 and all(math.isfinite(v) and v > 0.0 for v in logged)
                and logged[-1] < 0.9 * logged[0])
    if metric == "loss_high":
        return any(v > 20 for v in report.losses if not math.isnan(v))
    raise ValueError(f"unknown metric {metric!r}")


class MatchText:
    """The part of a paste that `text` conditions search, and its lower-cased twin for prefilters.

    Bounded: repeated lines (progress bars, identical log lines) are kept once, lines are cut
    at MATCH_LINE_CHARS, and only the head and tail of a huge paste are kept.
    """

    __slots__ = ("raw", "lower", "_found")

    def __init__(self, text: str) -> None:
        seen: set[str] = set()
        lines = []
        for line in text.splitlines():
            line = line[:MATCH_LINE_CHARS]
            if line not in seen:
                seen.add(line)
                lines.append(line)
        raw = "\n".join(lines)
        if len(raw) > MATCH_TEXT_CHARS:
            half = MATCH_TEXT_CHARS // 2
            raw = raw[:half] + "\n" + raw[-half:]
        self.raw = raw
        self.lower = raw.lower()
        self._found: dict[str, bool] = {}

    def search(self, pattern: str) -> bool:
        found = self._found.get(pattern)
        if found is None:  # several entries share a pattern (a set-up cue, a library message)
            found = self._found[pattern] = self._search(pattern)
        return found

    def _search(self, pattern: str) -> bool:
        if not may_match(_literals(pattern), self.lower):
            return False
        split = _branches(pattern)
        if split is not None:  # `a|b|c`: only the alternatives whose literals are in the paste are tried
            possible = possible_part(split, self.lower)
            if possible is None:
                return False
            pattern = possible
        return _rx(pattern).search(self.raw) is not None


_LITERALS: dict[str, frozenset[str] | None] = {}


def _literals(pattern: str) -> frozenset[str] | None:
    if pattern not in _LITERALS:
        _LITERALS[pattern] = required_literals(pattern)
    return _LITERALS[pattern]


_BRANCHES: dict[str, Branches] = {}


def _branches(pattern: str) -> Branches:
    if pattern not in _BRANCHES:
        _BRANCHES[pattern] = branches(pattern)
    return _BRANCHES[pattern]


def text_patterns(kb: KnowledgeBase) -> set[str]:
    conditions = [c for e in kb.entries for c in (*e.requires, *e.excludes, *(s.when for s in e.evidence))]
    return {c.text for c in conditions if c.text}


def symptoms(report: Report) -> frozenset[str]:
    """What the report shows went wrong, in cause-neutral terms: the logged metrics that are off and
    the last exception's type with the first words of its message ('ValueError: the model did')."""
    found = {m for m in SYMPTOM_METRICS if _metric(report, m)}
    if report.exceptions:
        last = report.exceptions[-1]
        words = _MESSAGE_WORD.findall((last.message or "").lower())[:3]
        found.add(f"{last.type.rsplit('.', 1)[-1]}: {' '.join(words)}")
    return frozenset(found)


_MESSAGE_WORD = re.compile(r"[a-z_]{2,}")


def _parsed(example: Example) -> Report:
    return _parse_example_text(example.read())


@lru_cache(maxsize=1024)
def _parse_example_text(text: str) -> Report:
    """Knowledge-base examples are parsed only when a snapshot is built (the results are kept in it)."""
    from bot.parse import parse_text

    return parse_text(text)


def symptom_shares(kb: KnowledgeBase) -> dict[str, dict[str, float]]:
    """Per entry, the share of its match examples that show each symptom."""
    shares = kb.cache.get("symptoms")
    if shares is None:
        shares = {}
        for entry in kb.entries:
            examples = [x for x in kb.examples(entry.id) if x.expect_match]
            counts: dict[str, int] = {}
            for example in examples:
                for symptom in symptoms(_parsed(example)):
                    counts[symptom] = counts.get(symptom, 0) + 1
            shares[entry.id] = {k: v / len(examples) for k, v in counts.items()}
        kb.cache["symptoms"] = shares
    return shares  # type: ignore[return-value]


def warm(kb: KnowledgeBase) -> None:
    """Compute what matching derives from the knowledge base (kept in `kb.cache`, pickled with it)."""
    lexical_index(kb)
    similar_reports(kb)
    symptom_shares(kb)
    from knowledge.classifier import classifier_for

    classifier_for(kb)
    kb.cache["literals"] = {p: _literals(p) for p in text_patterns(kb)}
    kb.cache["branches"] = {p: _branches(p) for p in text_patterns(kb)}


def prime(kb: KnowledgeBase) -> None:
    """Reuse the derived data of a cached knowledge base."""
    _LITERALS.update(kb.cache.get("literals", {}))  # type: ignore[arg-type]
    _BRANCHES.update(kb.cache.get("branches", {}))  # type: ignore[arg-type]


def holds(cond: Condition, report: Report, text: MatchText | None = None) -> bool:
    """True when every field set in `cond` holds for `report`.

    `text` is `MatchText(report.text)`, computed once per report by the caller.
    """
    if cond.exception is not None and not _search(cond.exception, (f"{e.type}: {e.message}" for e in report.exceptions)):
        return False
    if cond.exception_type is not None and not any(e.type in cond.exception_type for e in report.exceptions):
        return False
    if cond.warning is not None and not _search(cond.warning, report.warnings):
        return False
    if cond.returned_keys is not None and (
        report.returned_keys is None or not set(cond.returned_keys) <= set(report.returned_keys)
    ):
        return False
    if cond.received_inputs_include is not None and (
        report.received_inputs is None or not set(cond.received_inputs_include) <= set(report.received_inputs)
    ):
        return False
    if cond.received_inputs_exclude is not None and (
        report.received_inputs is None or set(cond.received_inputs_exclude) & set(report.received_inputs)
    ):
        return False
    if cond.trainer is not None and not (
        report.trainer in cond.trainer or any(b in cond.trainer for b in report.trainer_bases)
    ):
        return False
    if cond.collator is not None and report.collator not in cond.collator:
        return False
    if cond.model_class is not None and not _search(cond.model_class, report.model_classes):
        return False
    if cond.model_name is not None and not _search(cond.model_name, report.model_names):
        return False
    if cond.model_type is not None and report.model_type not in cond.model_type:
        return False
    if cond.flag is not None:
        for name, expected in cond.flag.items():
            if name not in report.flags or not _flag_equal(report.flags[name], expected):
                return False
    if cond.flag_absent is not None and any(name in report.flags for name in cond.flag_absent):
        return False
    if cond.metric is not None and not _metric(report, cond.metric):
        return False
    if cond.version is not None:
        for package, spec in cond.version.items():
            version = report.versions.get(package)
            if version is None or not _version_in(version, spec):
                return False
    if cond.dataset_format is not None and report.dataset_format not in cond.dataset_format:
        return False
    if cond.frame is not None and not _search(cond.frame, (f"{f.file}:{f.function or ''}" for f in report.frames)):
        return False
    if cond.call is not None and not set(cond.call) & set(report.calls):
        return False
    if cond.peft is not None and report.uses_peft != cond.peft:
        return False
    if cond.dataset_column is not None and not set(cond.dataset_column) & set(report.dataset_columns):
        return False
    if cond.defined_function is not None and not _search(cond.defined_function, report.defined_functions):
        return False
    if cond.collator_given is not None and (report.collator is not None) != cond.collator_given:
        return False
    if cond.section is not None and not set(cond.section) & set(report.sections):
        return False
    # the paste-wide regex last: the structured fields above are cheap and usually decide first
    if cond.text is not None and not (text or MatchText(report.text)).search(cond.text):
        return False
    return True


def evidence_score(entry: Entry, report: Report, text: MatchText | None = None,
                   narrative: MatchText | None = None) -> tuple[float, list[str]] | None:
    """The entry's evidence score and reasons, or None when it is ruled out.

    `narrative` is the paste without its code and config blocks (`Report.narrative`): a `text` signal
    that matches only inside those blocks describes the set-up, not what went wrong."""
    text = text or MatchText(report.text)
    if not all(holds(c, report, text) for c in entry.requires):
        return None
    if any(holds(c, report, text) for c in entry.excludes):
        return None
    score, why, shown, setup, setup_at = 0.0, [], 0.0, 0.0, []
    for signal in entry.evidence:
        if holds(signal.when, report, text):
            score += signal.weight
            why.append(signal.why if signal.weight >= 0 else f"{AGAINST} {signal.why}")
            if signal.weight > 0:
                if not signal.setup and _shows_the_failure(signal.when, narrative):
                    shown += signal.weight
                else:
                    setup += signal.weight
                    setup_at.append(len(why) - 1)
    if shown < SHOWN_MIN and setup:
        # the set-up fits (versions, flags, model, trainer) but the report barely shows the failure itself:
        # a set-up is not a report of what went wrong (every LoRA run with gradient checkpointing fits one)
        score -= setup
        for i in setup_at:
            why[i] += f" ({SETUP_ONLY}: not counted without a sign of the failure)"
    return score, why


_FRAME_LINE = re.compile(
    r"^[ \t]*(?:\[rank\d+\]:[ \t]*)?(?:File \"[^\"\n]*\", line \d+.*|File [~/][^\s:]*:\d+, in .*|Traceback \(most recent call last\):.*"
    r"|[-~^ ]*\^[-~^ ]*|~?/?[\w./-]*site-packages/.*|.*\bin _call_impl\b.*)\n"
    r"(?:[ \t]*(?:\[rank\d+\]:)?[ \t]{2,}(?!File \")\S.*\n)?",
    re.MULTILINE,
)
"""A traceback frame (its `File "...", line N` line and the source line under it): every traceback has
them, so they would make all tracebacks look alike to the word statistics. The frames are evidence of
their own (`frame` conditions); the exception line and the prose are what wording is compared on."""


def _shows_the_failure(cond: Condition, narrative: MatchText | None) -> bool:
    """Whether a condition that holds speaks of what went wrong rather than of the set-up."""
    fields = cond.model_fields_set - CONTEXT_FIELDS
    if fields != {"text"} or narrative is None:
        return bool(fields)
    return narrative.search(cond.text)  # type: ignore[arg-type]


_NOISE_LINE = re.compile(
    r"^.*\b(?:FutureWarning|DeprecationWarning|PendingDeprecationWarning)\b.*\n(?:[ \t]+warnings\.warn\(.*\n)?"
    r"|^[ \t]*warnings\.warn\(.*\n|^[ \t]*wandb: .*\n"
    r"|^.*`use_cache=True` is incompatible with gradient checkpointing.*\n",
    re.MULTILINE,
)
"""Lines every run prints (deprecation notices, wandb's log-in lines, the use_cache notice of every run with
gradient checkpointing): they say nothing about the failure."""


def lexical_text(text: str) -> str:
    """`text` without traceback frames and routine notices, for the word statistics (entry documents
    and queries alike)."""
    if "Warning" in text or "wandb:" in text or "warnings.warn" in text or "use_cache=True" in text:
        text = _NOISE_LINE.sub("", text if text.endswith("\n") else text + "\n")
    if 'File "' not in text and "Traceback" not in text:
        return text
    return _FRAME_LINE.sub("", text if text.endswith("\n") else text + "\n")


def entry_document(kb: KnowledgeBase, entry: Entry) -> str:
    parts = [entry.title, entry.root_cause, entry.keywords, *entry.questions]
    parts += [s.why for s in entry.evidence if s.weight > 0]
    parts += [f.title for f in entry.fixes]
    for example in kb.examples(entry.id):
        if example.expect_match:
            story = _parsed(example).narrative
            parts.append(lexical_text(story if story is not None else example.read())[:EXAMPLE_CHARS])
    return "\n".join(parts)


_RECENT_WORDING: dict[str, tuple[dict[str, object], list[float]]] = {}


def _wording_scores(kb: KnowledgeBase, query: str) -> list[float]:
    """`lexical_index(kb).scores(query)`, remembered for the last two queries (`rank` and `weigh` ask
    for the same ones); each is kept with the knowledge base's cache it was computed from."""
    recent = _RECENT_WORDING.get(query)
    if recent is not None and recent[0] is kb.cache:
        return recent[1]
    scores = lexical_index(kb).scores(query)
    _RECENT_WORDING.pop(query, None)
    if len(_RECENT_WORDING) >= 2:
        del _RECENT_WORDING[next(iter(_RECENT_WORDING))]
    _RECENT_WORDING[query] = (kb.cache, scores)
    return scores


def lexical_index(kb: KnowledgeBase) -> BM25:
    index = kb.cache.get("bm25")
    if index is None:
        index = kb.cache["bm25"] = BM25([entry_document(kb, e) for e in kb.entries])
    return index  # type: ignore[return-value]


def _lexical_query(report: Report, *, whole: bool = False) -> str:
    """The report's wording without pasted code and configs (which every report has alike), or
    with them (`whole`)."""
    text = report.narrative if report.narrative is not None and not whole else report.text
    if len(text) > LEXICAL_QUERY_CHARS:
        half = LEXICAL_QUERY_CHARS // 2
        text = text[:half] + "\n" + text[-half:]
    return lexical_text(text)


def similar_reports(kb: KnowledgeBase) -> SimilarReports:
    """The labelled reports to compare a report with: the knowledge base's match examples and, for
    the bundled knowledge base, the report sets under ``eval/``."""
    index = kb.cache.get("similar")
    if index is None:
        index = kb.cache["similar"] = SimilarReports(labelled_corpus(kb))
    return index  # type: ignore[return-value]


def rank(report: Report, kb: KnowledgeBase, *, lexical: bool = True, held_out: str | None = None) -> list[Candidate]:
    """Candidates for `report`, best first. Empty when nothing fits.

    `held_out` names a labelled report set whose lines are not compared with the report (the set
    being scored)."""
    query = _lexical_query(report)
    raw = _wording_scores(kb, query) if lexical and kb.entries else [0.0] * len(kb.entries)
    if lexical and report.narrative is not None and max(raw, default=0.0) < LEXICAL_ONLY_MIN_RAW:
        # the prose says too little to compare words on: the pasted code and configs are all there is
        query = _lexical_query(report, whole=True)
        raw = _wording_scores(kb, query)
    text = MatchText(report.text)
    narrative = MatchText(report.narrative) if report.narrative is not None else None
    admitted = [(entry, lex, result) for entry, lex in zip(kb.entries, raw)
                if (result := evidence_score(entry, report, text, narrative)) is not None]
    # wording is compared among the entries the report does not rule out or argue against: an entry
    # whose words fit best but whose evidence is against it must not raise the bar for the others
    top_raw = max((lex for _, lex, (score, _) in admitted if score >= 0), default=0.0)
    candidates: list[Candidate] = []
    lexical_only: list[Candidate] = []
    weak: list[tuple[float, Entry, list[str]]] = []
    report_symptoms = symptoms(report)
    shares = symptom_shares(kb) if report_symptoms else {}
    for entry, lex, (score, why) in admitted:
        bonus = LEXICAL_WEIGHT * lex / top_raw if top_raw >= LEXICAL_MIN_RAW else 0.0
        if score >= entry.min_score:
            if bonus >= 0.05:
                why = [*why, f"the wording of the report resembles this entry (lexical {bonus:.2f})"]
            candidates.append(_candidate(entry, score + bonus, why))
            continue
        near = score >= NEAR_EVIDENCE * entry.min_score
        if top_raw >= LEXICAL_ONLY_MIN_RAW and (lex >= 0.6 * top_raw or near) and score >= 0:
            if score == 0:
                why = [w if w.startswith(AGAINST) or SETUP_ONLY in w else f"{w} ({OUTWEIGHED})" for w in why]
            lexical_only.append(
                _candidate(entry, round(score * 0.25 + bonus, 3),
                           [*why, f"{WORDING_ONLY} (lexical {lex:.1f})"])
            )
        share = max((shares[entry.id].get(s, 0.0) for s in report_symptoms), default=0.0) if score >= 0 else 0.0
        if score > 0 or bonus >= ALTERNATIVE_MIN_LEXICAL or share >= SYMPTOM_MIN_SHARE:
            if share >= SYMPTOM_MIN_SHARE:
                why = [*why, "its own examples show the same symptom"]
            weak.append((0.5 * score / entry.min_score + bonus + SYMPTOM_WEIGHT * share, entry, why))
    if lexical_only and not _shows_a_failure(report, query):
        lexical_only = []
    pool = candidates or lexical_only
    pool.sort(key=lambda c: (-c.score, c.entry))
    if not pool:
        # nothing fits, but the report shows a failure (an exception, a metric that is off): the entries
        # whose evidence or examples share it are listed as possibilities, never as a diagnosis
        listed = _alternatives([], weak) if report_symptoms else []
        return listed + _like_similar_reports(listed, report, kb, raw, held_out) if listed else []
    if not candidates and pool[0].failure_class != "out_of_scope":
        # nothing has decisive evidence: a wording-only guess does not beat a look-alike that fits about as well
        look_alike = next((c for c in pool if c.failure_class == "out_of_scope"
                           and c.score >= pool[0].score - LOOK_ALIKE_MARGIN
                           and _may_lead(c, pool[0], report_symptoms, shares.get(c.entry, {}))), None)
        if look_alike is not None:
            pool.remove(look_alike)
            pool.insert(0, look_alike)
    head, rest = _distinct_classes_first(pool)
    listed = head + _alternatives(head, weak)
    return listed + _like_similar_reports(listed, report, kb, raw, held_out) + rest


def weigh(candidates: list[Candidate], report: Report, kb: KnowledgeBase, *, abstains: bool,
          held_out: str | None = None) -> tuple[list[Candidate], float | None]:
    """Weigh the ranked candidates against what labelled reports worded like this one were caused by.

    Each class scores log(1 + its best evidence score among the first three candidates) plus
    WORDING_MODEL_WEIGHT x its probability under `knowledge.classifier`; 'not a loss failure' scores
    WORDING_MODEL_WEIGHT x its probability, plus ABSTAIN_WEIGHT when the matcher abstains (`abstains`).
    The best class leads, unless the matcher's lead has DECISIVE_SCORE of evidence: a class the matcher
    did not name first moves to the front with the classifier's reason (so it is no longer a guess; its
    score stays its evidence score). When 'not a loss failure' wins over a class the matcher named,
    the second value is that probability (the caller abstains); else it is None. The classifier's
    ALTERNATIVES likeliest classes join the list as weaker alternatives where it lacks them, and the
    other classes follow the first candidate in the order of their probability.
    """
    from knowledge.classifier import classifier_for

    model = classifier_for(kb, held_out)
    if model is None or not candidates and not _shows_a_failure(report, _lexical_query(report)):
        return candidates, None  # a question that shows no failure ('how do I set a cosine schedule?') stays unanswered
    probability = model.probabilities(report.text)
    combined: dict[str, float] = {}
    for c in candidates[:3]:
        if c.failure_class != "out_of_scope":
            combined[c.failure_class] = max(combined.get(c.failure_class, 0.0), math.log1p(max(c.score, 0.0)))
    for failure_class, p in probability.items():
        if failure_class != "out_of_scope":
            combined[failure_class] = combined.get(failure_class, 0.0) + WORDING_MODEL_WEIGHT * p
    not_a_loss_failure = WORDING_MODEL_WEIGHT * probability.get("out_of_scope", 0.0) + (ABSTAIN_WEIGHT if abstains else 0.0)
    best = max(sorted(combined), key=combined.__getitem__)
    out = list(candidates)
    abstain_with: float | None = None
    wording: list[float] = []

    def entry_for(failure_class: str) -> Entry:
        """The entry of `failure_class` whose text the report's wording fits best."""
        if not wording:
            wording.extend(_wording_scores(kb, _lexical_query(report)))
        fits = [(w, e.id, e) for e, w in zip(kb.entries, wording) if e.failure_class == failure_class]
        return max(fits, key=lambda f: (f[0], f[1]))[2]

    if out and out[0].score >= DECISIVE_SCORE and not is_guess(out[0]):
        pass  # explicit evidence decides, for a cause or for an out-of-scope look-alike
    elif not_a_loss_failure >= combined[best]:
        if not abstains:
            abstain_with = probability.get("out_of_scope", 0.0)
    elif abstains or out[0].failure_class != best:
        reason = WORDING_MODEL.format(reports=f"{model.reports:,}", p=probability.get(best, 0.0))
        at = next((i for i, c in enumerate(out) if c.failure_class == best), None)
        if at is None:
            lead = _candidate(entry_for(best), 0.0, [reason])
        else:
            lead = out.pop(at)
            why = [w for w in lead.why if w != ALTERNATIVE]
            lead = lead.model_copy(update={"why": [reason, *why]})
        out.insert(0, lead)
    listed = {c.failure_class for c in out}
    floor = min((c.score for c in out), default=0.0)
    likely = [(c, p) for c, p in sorted(probability.items(), key=lambda kv: (-kv[1], kv[0])) if c != "out_of_scope"]
    for failure_class, p in likely[:ALTERNATIVES]:
        if failure_class not in listed and p >= 0.01:
            listed.add(failure_class)
            out.append(_candidate(entry_for(failure_class), max(0.0, round(min(floor, p), 3)),
                                  [WORDING_MODEL.format(reports=f"{model.reports:,}", p=p), ALTERNATIVE]))
    return _others_by_wording(out, probability), abstain_with


def _others_by_wording(candidates: list[Candidate], probability: dict[str, float]) -> list[Candidate]:
    """After the first candidate, the first one of each other in-scope class in the order of the wording
    classifier's probabilities; then the rest (another entry of a class already listed, out-of-scope
    look-alikes), as ranked. In the replay of 725 first looks this put 397 of 442 in-scope causes in the
    first three, against 381 ordered by the weighed score and 371 in the matcher's order."""
    if not candidates:
        return candidates
    seen = {candidates[0].failure_class, "out_of_scope"}
    firsts, rest = [], []
    for c in candidates[1:]:
        if c.failure_class in seen:
            rest.append(c)
        else:
            seen.add(c.failure_class)
            firsts.append(c)
    firsts.sort(key=lambda c: -probability.get(c.failure_class, 0.0))  # stable: ties keep the matcher's order
    return [candidates[0], *firsts, *rest]


def has_evidence(candidate: Candidate) -> bool:
    """Whether anything beyond the report's wording speaks for the candidate (set-up alone and
    evidence against it do not)."""
    return any(not w.startswith((WORDING_ONLY, AGAINST)) and SETUP_ONLY not in w and OUTWEIGHED not in w
               for w in candidate.why)


def is_guess(candidate: Candidate) -> bool:
    """A candidate that is not a diagnosis: listed on the report's wording alone (nothing the report
    shows speaks for it), or only as a weaker alternative."""
    if candidate.why and candidate.why[-1] == ALTERNATIVE:
        return True
    return any(w.startswith(WORDING_ONLY) for w in candidate.why) and not has_evidence(candidate)


def _may_lead(look_alike: Candidate, best: Candidate, report_symptoms: frozenset[str],
              look_alike_shares: dict[str, float]) -> bool:
    """Whether an out-of-scope look-alike close to the best wording-only guess may take the lead: it has
    evidence of its own, or, if neither has any, its examples fail the way the report does."""
    if has_evidence(look_alike):
        return True
    return not has_evidence(best) and _same_kind_of_symptom(report_symptoms, look_alike_shares)


def _same_kind_of_symptom(report_symptoms: frozenset[str], entry_shares: dict[str, float]) -> bool:
    """Whether an entry's own examples show the kind of failure the report shows: the same type of
    exception, or the same metric off. A report that shows neither (prose) fits any entry."""
    if not report_symptoms:
        return True
    kinds = {s.split(":", 1)[0] for s in entry_shares}
    return any(s.split(":", 1)[0] in kinds for s in report_symptoms)


def _shows_a_failure(report: Report, query: str) -> bool:
    if report.exceptions or report.losses or report.grad_norms or report.eval_losses or report.warnings:
        return True
    return FAILURE_WORDS.search(query) is not None


def _distinct_classes_first(pool: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """The best candidate and the best one of each other in-scope class; then the rest (each part by score).

    Two entries of one class are two ways of the same failure; a different class is a different
    answer. So the first places of the list name different classes where the evidence allows,
    and out-of-scope look-alikes do not take them from in-scope causes unless they lead.
    """
    head, rest, seen = [pool[0]], [], {pool[0].failure_class}
    for c in pool[1:]:
        if c.failure_class in seen or c.failure_class == "out_of_scope":
            rest.append(c)
        else:
            seen.add(c.failure_class)
            head.append(c)
    return head, rest


def _alternatives(pool: list[Candidate], weak: list[tuple[float, Entry, list[str]]]) -> list[Candidate]:
    """Weaker in-scope entries of other classes, listed after the candidates the evidence supports.

    They fill the list up to ALTERNATIVES distinct classes and score below the best by at least
    ALTERNATIVE_GAP, so they are shown as 'also possible' but never reproduced or fixed.
    """
    classes = {c.failure_class for c in pool if c.failure_class != "out_of_scope"}
    if len(classes) >= ALTERNATIVES:
        return []
    ceiling = pool[0].score - ALTERNATIVE_GAP if pool else 1.0
    out: list[Candidate] = []
    for strength, entry, why in sorted(weak, key=lambda w: (-w[0], w[1].id)):
        if len(classes) >= ALTERNATIVES:
            break
        if entry.failure_class in classes or entry.failure_class == "out_of_scope":
            continue
        classes.add(entry.failure_class)
        score = round(max(0.0, min(ceiling, strength)), 3)
        out.append(_candidate(entry, score, [*why, ALTERNATIVE]))
    return out


def _like_similar_reports(listed: list[Candidate], report: Report, kb: KnowledgeBase, raw: list[float],
                          held_out: str | None) -> list[Candidate]:
    """In-scope classes of the labelled reports nearest to this one, listed after the others as weaker
    alternatives while fewer than ALTERNATIVES distinct classes are listed; each names its entry that
    the report's wording fits best, and cites the reports it came from."""
    classes = {c.failure_class for c in listed if c.failure_class != "out_of_scope"}
    if len(classes) >= ALTERNATIVES:
        return []
    neighbours = similar_reports(kb).nearest(report.text, held_out=held_out)
    if not neighbours or neighbours[0].score < SIMILAR_MIN_RAW:
        return []
    wording = dict(zip((e.id for e in kb.entries), raw))
    ceiling = max(0.0, min(c.score for c in listed) - 0.01)  # callers list at least one candidate
    out: list[Candidate] = []
    for failure_class, share, members in votes(neighbours):
        if len(classes) >= ALTERNATIVES:
            break
        if failure_class in classes or failure_class == "out_of_scope":
            continue
        entries = [e for e in kb.entries if e.failure_class == failure_class]
        if not entries:
            continue
        classes.add(failure_class)
        entry = max(entries, key=lambda e: (wording.get(e.id, 0.0), e.id))
        cited = ", ".join(n.report.source for n in members if n.report.set_name != "kb")[:300]
        why = f"{len(members)} of the {len(neighbours)} {SIMILAR_REPORTS}" + (f" ({cited})" if cited else "")
        out.append(_candidate(entry, round(min(ceiling, share), 3), [why, ALTERNATIVE]))
    return out


def _candidate(entry: Entry, score: float, why: list[str]) -> Candidate:
    return Candidate(entry=entry.id, failure_class=entry.failure_class, title=entry.title, score=round(score, 3), why=why)
