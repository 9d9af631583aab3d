"""The pure core: ``diagnose(report) -> Diagnosis``.

It matches the report against the knowledge base and, when given a reproducer, lets it
reproduce the failure and verify fixes. It imports no chat SDK and no training library:
the reproducer is passed in (`reproducer.engine.reproduce`) so ``diagnose --no-repro``
stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.models import Candidate, Diagnosis, FixOutcome, Report, Reproduction
from bot.render import render_reply
from knowledge.kb import KnowledgeBase, default_kb
from knowledge.matcher import ALTERNATIVE, WORDING_ONLY, is_guess, rank, weigh
from knowledge.schema import Entry

MAX_CANDIDATES = 5
CLOSE_SCORE = 2.0
"""Candidates within this many points of the best one are 'in play': their fixes are listed and tried."""

Reproduce = Callable[[Report, list[Candidate], KnowledgeBase], tuple[Reproduction | None, list[FixOutcome]]]


def diagnose(report: Report, kb: KnowledgeBase | None = None, *, reproduce: Reproduce | None = None,
             held_out: str | None = None) -> Diagnosis:
    """`held_out`: a labelled report set not to compare the report with (the set being scored)."""
    kb = kb or default_kb()
    ranked = rank(report, kb, held_out=held_out)
    abstains = not ranked or ranked[0].failure_class == "out_of_scope" or is_guess(ranked[0])
    ranked, not_a_loss_failure = weigh(ranked, report, kb, abstains=abstains, held_out=held_out)
    candidates = ranked[:MAX_CANDIDATES]
    if not candidates:
        diagnosis = Diagnosis(verdict="unknown", failure_class=None, abstain_reason=_nothing_fits(report))
    elif not_a_loss_failure is not None:
        diagnosis = Diagnosis(
            verdict="unknown", failure_class=None, candidates=candidates,
            abstain_reason=_worded_like_other_failures(report, candidates[0], not_a_loss_failure),
        )
    elif candidates[0].failure_class == "out_of_scope":
        entry = kb.get(candidates[0].entry)
        diagnosis = Diagnosis(
            verdict="unknown", failure_class=None, candidates=candidates,
            abstain_reason=_out_of_scope(entry, _closest_cause(candidates)),
        )
    elif is_guess(candidates[0]):
        diagnosis = Diagnosis(
            verdict="unknown", failure_class=None, candidates=candidates, abstain_reason=_guess_reason(report, candidates[0]),
        )
    else:
        in_play = in_play_candidates(candidates)
        fixes = [
            _fix_outcome(kb.get(c.entry), f)
            for c in in_play
            for f in kb.get(c.entry).fixes
            if f.offered_for(report)
        ]
        diagnosis = Diagnosis(
            verdict="matched",
            failure_class=in_play[0].failure_class,
            candidates=candidates,
            fixes=fixes,
            question=_question(report, in_play, kb),
        )
        if reproduce is not None:
            reproduction, fixes = reproduce(report, in_play, kb)
            _apply_reproduction(diagnosis, reproduction, fixes, kb)
    diagnosis.redacted = list(report.redacted)
    diagnosis.reply = render_reply(diagnosis, report, kb)
    return diagnosis


def in_play_candidates(candidates: list[Candidate]) -> list[Candidate]:
    """The best candidate and those close to it, out-of-scope ones and weaker alternatives left out."""
    scoped = [c for i, c in enumerate(candidates)
              if c.failure_class != "out_of_scope" and (i == 0 or not c.why or c.why[-1] != ALTERNATIVE)]
    if not scoped:
        return []
    best = scoped[0].score
    return [c for c in scoped if c.score >= best - CLOSE_SCORE][:3]


def _apply_reproduction(
    diagnosis: Diagnosis, reproduction: Reproduction | None, fixes: list[FixOutcome], kb: KnowledgeBase
) -> None:
    diagnosis.reproduction = reproduction
    if fixes:
        diagnosis.fixes = fixes
    if reproduction is None or not reproduction.reproduced:
        return
    verified = [f for f in diagnosis.fixes if f.status == "verified"]
    diagnosis.verdict = "verified" if verified else "reproduced"
    entry_id = verified[0].entry if verified else reproduction.entry
    if entry_id:
        diagnosis.failure_class = kb.get(entry_id).failure_class
        # the candidate the run supports goes first
        diagnosis.candidates.sort(key=lambda c: c.entry != entry_id)


def _fix_outcome(entry: Entry, fix) -> FixOutcome:  # noqa: ANN001 - knowledge.schema.Fix
    return FixOutcome(
        id=fix.id, title=fix.title, entry=entry.id, ops=[op.op for op in fix.ops], status="not_run", snippet=fix.snippet or None
    )


def _question(report: Report, in_play: list[Candidate], kb: KnowledgeBase) -> str | None:
    """One clarifying question when the top candidates are close and a fact that splits them is missing."""
    if len(in_play) < 2:
        return None
    for candidate in in_play:
        for field, question in kb.get(candidate.entry).ask_when_missing.items():
            if _missing(report, field):
                return question
    return None


def _missing(report: Report, field: str) -> bool:
    if field.startswith("flags."):
        return field.removeprefix("flags.") not in report.flags
    if field.startswith("versions."):
        return field.removeprefix("versions.") not in report.versions
    value = getattr(report, field, None)
    return value is None or value == [] or value == {}


def _recognised(report: Report) -> str:
    seen = []
    if report.exceptions:
        last = report.exceptions[-1]
        seen.append(f"the exception {last.type}")
    if report.losses:
        seen.append(f"{len(report.losses)} logged loss value{'s' if len(report.losses) != 1 else ''}")
    if report.versions:
        seen.append("library versions")
    return ", ".join(seen) if seen else "no traceback, loss log or training code"


def _nothing_fits(report: Report) -> str:
    return (
        f"No knowledge entry fits this report (I recognised {_recognised(report)}). "
        "Paste the full traceback, the trainer/collator code and the first logged losses, "
        "or ask in the library's issue tracker if this is not a loss problem."
    )


def _guess_reason(report: Report, closest: Candidate) -> str:
    seen = _recognised(report)
    return (
        f"Nothing in this report is decisive (I recognised {seen}): no error message, logged value or setting "
        f"that a known cause needs. On weak grounds (its wording, or a symptom that many causes share), the closest "
        f"known cause is: {closest.title} (`{closest.failure_class}`), but that is a guess. Paste the full traceback, "
        "the trainer/collator code and the first logged losses; if the run fails outside the loss (installation, "
        "data loading, hardware), the library's issue tracker is the better place."
    )


def _worded_like_other_failures(report: Report, closest: Candidate, share: float) -> str:
    return (
        f"The evidence in this report is not decisive (I recognised {_recognised(report)}). It points to "
        f"{closest.title} (`{closest.failure_class}`), but {share:.0%} of the labelled reports worded most like this "
        "one were not loss-computation failures (installation, memory, data loading, expected behaviour). Paste the "
        "full traceback, the trainer/collator code and the first logged losses; if the run fails outside the loss, "
        "the library's issue tracker is the better place."
    )


def _closest_cause(candidates: list[Candidate]) -> Candidate | None:
    """When the look-alike leads on wording alone, the in-scope candidate listed after it (else None)."""
    if not any(w.startswith(WORDING_ONLY) for w in candidates[0].why):
        return None
    return next((c for c in candidates[1:] if c.failure_class != "out_of_scope"), None)


def _out_of_scope(entry: Entry, closest: Candidate | None = None) -> str:
    first = entry.root_cause.strip().split("\n\n")[0].replace("\n", " ")
    looks = f"{entry.title[0].lower() + entry.title[1:]}, which is not a loss-computation failure"
    if closest is None:
        return f"This looks like {looks}. {first}"
    return (
        f"Nothing in this report is decisive. It reads most like {looks}. {first} "
        f"If the loss itself is wrong, the closest known cause is: {closest.title} (`{closest.failure_class}`); "
        "the full traceback or the first logged losses would tell the two apart."
    )
