"""The reproducer as the product runs it: reports -> scenarios -> the real sandbox (warm pool)
-> baseline and fixes judged. Every knowledge entry marked reproducible on the current stack
proves, on each of its match/ examples, that its baseline fails the expected way and that
each of its runnable fixes brings a real loss back."""

from __future__ import annotations

import pytest

from bot.core import diagnose
from bot.parse import parse_text
from knowledge.kb import default_kb
from reproducer.engine import Reproducer, plan_for
from reproducer.checks import baseline_reproduces, fix_verified
from reproducer.runner import run_batch

pytestmark = pytest.mark.sandbox

KB = default_kb()
CURRENT = [e for e in KB.entries if e.reproduce.reproducible and "current" in e.reproduce.stacks]
CASES = [(e, ex) for e in CURRENT for ex in KB.examples(e.id) if ex.expect_match]


def test_some_entries_reproduce_on_the_current_stack():
    assert len(CURRENT) >= 15


@pytest.fixture(scope="module")
def batch_results():
    """All plans of all cases in one sandboxed batch (one warm pool, forked child per run)."""
    plans, runs = [], []
    for entry, example in CASES:
        report = parse_text(example.read())
        plan = plan_for(report, entry)
        plans.append((entry, example, report, plan))
        runs.append({"fix": None, "scenario": plan.scenario.model_dump()})
        runs += [{"fix": fix.id, "scenario": s.model_dump()} for fix, s in plan.fixes]
    batch = run_batch(runs)
    assert "bwrap" in batch["sandbox"], batch["sandbox"]
    records = iter(batch["runs"])
    out = {}
    for entry, example, report, plan in plans:
        baseline = next(records)
        fixes = [(fix, next(records)) for fix, _ in plan.fixes]
        out[example.name] = (entry, report, plan, baseline, fixes)
    return out


@pytest.mark.parametrize(("entry", "example"), CASES, ids=[ex.name for _, ex in CASES])
def test_entry_reproduces_and_fixes_verify(batch_results, entry, example):
    _, report, plan, baseline, fixes = batch_results[example.name]
    ok, why = baseline_reproduces(baseline, entry.reproduce.expect, report)
    not_on_current = entry.reproduce.not_on_current.get(example.name.rsplit("/", 1)[-1])
    if not_on_current:
        assert not ok, f"declared not reproducible on the current stack ({not_on_current}), but it reproduced: {why}"
        return
    assert ok, f"baseline did not reproduce: {why}\nsources: {plan.sources}"
    assert fixes or plan.skipped, "a reproducible entry needs at least one fix to try"
    for fix, record in fixes:
        verified, reason = fix_verified(record, responses_only=fix.responses_only)
        assert verified, f"fix {fix.id} not verified: {reason}"


def test_bundled_plain_trainer_example_is_verified(tmp_path):
    text = (KB.directory.parents[1] / "examples" / "trainer-seq2seq-collator.txt").read_text()
    diagnosis = diagnose(parse_text(text), KB, reproduce=Reproducer(build_envs=False))
    assert diagnosis.verdict == "verified"
    assert diagnosis.failure_class == "collator_does_not_create_labels"
    status = {f.id: f.status for f in diagnosis.fixes}
    assert status["use-lm-collator"] == "verified"  # replace the collator
    assert status["mask-prompt-in-labels"] == "verified"  # train on responses only
    repro = diagnosis.reproduction
    assert repro.reproduced and repro.device == "cpu" and repro.versions["transformers"]
    assert repro.baseline.exception.type == "ValueError"
    assert "inputs it received are input_ids,attention_mask,labels" in repro.baseline.exception.message
    assert repro.field_sources["collator"].startswith("report")
    assert "Reproduced" in diagnosis.reply and "verified on a tiny reproduction" in diagnosis.reply


def test_never_verified_without_a_reproduced_baseline():
    """A report whose failure the installed stack does not show stays 'matched'."""
    text = (KB.directory.parents[1] / "examples" / "unsloth-seq2seq-collator.txt").read_text()
    diagnosis = diagnose(parse_text(text), KB, reproduce=Reproducer(build_envs=False))
    assert diagnosis.verdict == "matched"
    assert diagnosis.failure_class == "collator_does_not_create_labels"
    assert not diagnosis.reproduction.reproduced
    assert diagnosis.reproduction.note and "trl" in diagnosis.reproduction.note
    assert all(f.status != "verified" for f in diagnosis.fixes)
    assert "Not reproduced" in diagnosis.reply


def test_a_seq2seq_model_trained_without_labels_verifies_target_labels_and_drops_the_causal_lm_fixes():
    """T5 without labels fails in its decoder, not with 'did not return a loss'; the fix that tokenises the
    target into labels trains it, and the causal-LM fixes (input_ids as labels) are not offered for a model
    whose class names a seq2seq head."""
    text = (KB.directory.parents[1] / "tests" / "data" / "t5-no-labels-decoder-error.txt").read_text()
    diagnosis = diagnose(parse_text(text), KB, reproduce=Reproducer(build_envs=False))
    assert diagnosis.failure_class == "labels_missing_in_dataset"
    assert diagnosis.verdict == "verified", diagnosis.reproduction
    assert diagnosis.reproduction.field_sources["head"].startswith("report")
    assert "inputs_embeds" in diagnosis.reproduction.baseline.exception.message
    status = {f.id: f.status for f in diagnosis.fixes}
    assert status["target-labels-in-tokenize-function"] == "verified"
    assert "labels-in-tokenize-function" not in status and "use-lm-collator" not in status
