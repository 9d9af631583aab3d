"""Every knowledge entry is a tested piece of data: it validates, ranks first on each of
its match/ examples and not first on its no-match/ near-misses."""

from __future__ import annotations

import pytest

from knowledge.check import check_kb, run_example
from knowledge.kb import default_kb
from knowledge.schema import FAILURE_CLASSES

KB = default_kb()
EXAMPLES = [(entry.id, ex) for entry in KB.entries for ex in KB.examples(entry.id)]


@pytest.mark.parametrize(("entry_id", "example"), EXAMPLES, ids=[ex.name for _, ex in EXAMPLES])
def test_example(entry_id, example):
    result = run_example(KB, entry_id, example.read(), example.expect_match, example.name)
    assert result.passed, result.describe()


@pytest.mark.parametrize("entry", KB.entries, ids=[e.id for e in KB.entries])
def test_entry_has_enough_examples(entry):
    examples = KB.examples(entry.id)
    assert sum(e.expect_match for e in examples) >= 3, "needs at least 3 match/ examples"
    assert sum(not e.expect_match for e in examples) >= 2, "needs at least 2 no-match/ examples"


def test_every_failure_class_has_an_entry():
    covered = {e.failure_class for e in KB.entries}
    assert set(FAILURE_CLASSES) - {"out_of_scope"} <= covered


def test_kb_check_reports_no_problem():
    problems, _ = check_kb(KB)
    assert problems == []


def test_shared_patterns_are_put_into_every_entry_that_names_them():
    """The checkpoint-warning pair weighs the same question in opposite directions; both read it
    from patterns.yaml, so it cannot drift apart in one of them."""
    from knowledge.kb import ENTRIES_DIR, load_patterns

    patterns = load_patterns(ENTRIES_DIR)
    asks = f"(?:{patterns['asks_if_harmless']})"
    users = [e.id for e in KB.entries if any(s.when.text and asks in s.when.text for s in e.evidence)]
    assert {"benign-training-warning", "gradient-checkpointing-loss-has-no-grad-fn"} <= set(users)
    assert not any("{{" in (s.when.text or "") for e in KB.entries for s in e.evidence)


def test_unknown_or_bad_shared_pattern_is_a_clear_error(tmp_path):
    import shutil

    from bot.errors import KnowledgeBaseError
    from knowledge.kb import ENTRIES_DIR, load_kb

    entries = tmp_path / "entries"
    shutil.copytree(ENTRIES_DIR, entries)
    target = entries / "benign-training-warning" / "entry.yaml"
    target.write_text(target.read_text().replace("{{asks_if_harmless}}", "{{no_such_pattern}}", 1))
    with pytest.raises(KnowledgeBaseError, match=r"benign-training-warning.*no shared pattern 'no_such_pattern'"):
        load_kb(entries)
    (entries / "patterns.yaml").write_text("broken: '(unclosed'\n")
    with pytest.raises(KnowledgeBaseError, match=r"patterns.yaml: pattern 'broken' is not a valid regex"):
        load_kb(entries)
