"""Diagnosis -> the Markdown reply a user reads. Surfaces only trim it to their limits."""

from __future__ import annotations

import re

from bot.models import Candidate, Diagnosis, FixOutcome, Report, RunRecord
from knowledge.kb import KnowledgeBase
from knowledge.matcher import SIMILAR_REPORTS

_STATUS = {
    "verified": "verified on a tiny reproduction",
    "failed": "tried on a tiny reproduction: did not fix it",
    "not_run": "not run",
}


def render_reply(diagnosis: Diagnosis, report: Report, kb: KnowledgeBase) -> str:
    lines: list[str] = []
    if diagnosis.verdict == "unknown":
        lines.append("**I could not match this to a known loss-computation failure.**")
        lines.append("")
        lines.append(diagnosis.abstain_reason or "")
        guesses = [c for c in diagnosis.candidates if c.failure_class != "out_of_scope"][:3]
        if guesses:
            lines += ["", "**Closest known causes (guesses, not a diagnosis)**"]
            lines += [_listed(c) for c in guesses]
    else:
        top = diagnosis.candidates[0]
        entry = kb.get(top.entry)
        lines.append(f"**Likely cause: {entry.title}** (`{entry.failure_class}`)")
        lines.append("")
        lines.append(entry.root_cause.strip())
        if top.why:
            lines += ["", "**Why I think so**"] + [f"- {w}" for w in top.why]
        lines += _reproduction_lines(diagnosis)
        lines += _fix_lines(diagnosis)
        others = [c for c in diagnosis.candidates[1:] if c.failure_class != "out_of_scope"][:2]
        if others:
            lines += ["", "**Also possible**"] + [_listed(c) for c in others]
        if diagnosis.question:
            lines += ["", f"**To be sure:** {diagnosis.question}"]
    if diagnosis.redacted:
        kinds = ", ".join(diagnosis.redacted)
        lines += [
            "",
            f"**Your paste contained secrets ({kinds}).** I removed them before doing anything else, "
            "but they were posted: revoke and rotate them.",
        ]
    for note in report.notes:
        lines += ["", f"_Note: {note}_"]
    return "\n".join(lines).strip() + "\n"


def _listed(candidate: Candidate) -> str:
    """A candidate as a list item; one that similar labelled reports put there names their threads."""
    line = f"- {candidate.title} (`{candidate.failure_class}`)"
    threads = [url for w in candidate.why if SIMILAR_REPORTS in w for url in _URL.findall(w)]
    return line + (f"; reported threads like yours: {', '.join(threads)}" if threads else "")


_URL = re.compile(r"https?://[^\s,()]+")


def _reproduction_lines(diagnosis: Diagnosis) -> list[str]:
    repro = diagnosis.reproduction
    if repro is None:
        return []
    versions = ", ".join(f"{k} {v}" for k, v in sorted(repro.versions.items()) if k in {"transformers", "trl", "peft", "torch"})
    where = f"{versions} on {repro.device}" if versions else repro.device
    if repro.reproduced:
        failure = _describe(repro.baseline)
        out = ["", f"**Reproduced** on a tiny model ({where}): {failure}."]
    else:
        out = ["", f"**Not reproduced** on a tiny model ({where})."]
    if repro.note:
        out.append(repro.note)
    return out


def _describe(run: RunRecord | None) -> str:
    if run is None:
        return "no run"
    if run.exception is not None:
        return f"`{run.exception.type}: {_short(run.exception.message)}`"
    return f"loss {run.loss}, {run.supervised_tokens} supervised tokens, weights changed: {run.params_changed}"


def _fix_lines(diagnosis: Diagnosis) -> list[str]:
    fixes = sorted(diagnosis.fixes, key=lambda f: {"verified": 0, "not_run": 1, "failed": 2}[f.status])
    if not fixes:
        return []
    out = ["", "**Fixes**"]
    for fix in fixes[:4]:
        out.append(f"- **{fix.title}** ({_status(fix)})")
        if fix.snippet and fix.status != "failed":
            out += ["", "```python", fix.snippet.rstrip(), "```"]
    return out


def _status(fix: FixOutcome) -> str:
    text = _STATUS[fix.status]
    loss = fix.evidence.get("loss")
    if fix.status == "verified" and loss is not None:
        text += f": loss {loss:.3f}, weights changed"
    reason = fix.evidence.get("reason")
    if fix.status == "failed" and reason:
        text += f" ({reason})"
    return text


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
