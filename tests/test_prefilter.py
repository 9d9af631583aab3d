"""The literal prefilter must never hide a real match (soundness), and must filter."""

from __future__ import annotations

import re

import pytest

from knowledge.kb import default_kb
from knowledge.prefilter import may_match, required_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("did not return a loss", {"did not return a loss"}),
        ("(foo|barbaz) qux", {" qux"}),
        ("(alpha|beta)[0-9]", {"alpha", "beta"}),
        (r"Target \d+ is out of bounds", {" is out of bounds"}),
        ("a(bc|de)f", None),  # no literal of 3+ characters is required
        ("x?yz", None),
        ("(?=[^\\n]{0,40}packing)(?=[^\\n]{0,40}loss)", {"packing"}),
        ("(foo)?bar", {"bar"}),
        ("UPPER case", {"upper case"}),
    ],
)
def test_required_literals(pattern, expected):
    got = required_literals(pattern)
    assert (None if got is None else set(got)) == expected


def test_prefilter_is_sound_on_the_knowledge_base():
    kb = default_kb()
    patterns = {c.text for e in kb.entries for c in [*e.requires, *e.excludes, *(s.when for s in e.evidence)] if c.text}
    texts = [ex.read() for e in kb.entries for ex in kb.examples(e.id)]
    filtered = 0
    for pattern in patterns:
        literals = required_literals(pattern)
        rx = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
        for text in texts:
            if rx.search(text):
                assert may_match(literals, text.lower()), pattern
            elif not may_match(literals, text.lower()):
                filtered += 1
    assert filtered > len(texts)  # it does skip work
