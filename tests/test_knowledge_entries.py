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
