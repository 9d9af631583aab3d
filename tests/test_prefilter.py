"""The literal prefilter must never hide a real match (soundness), and must filter."""

from __future__ import annotations

import re

import pytest

from knowledge.kb import default_kb
from knowledge.prefilter import branches, may_match, possible_part, required_literals


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


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        ("nan loss|overflow|(a|b)ccc", ["nan loss", "overflow", "(a|b)ccc"]),
        (r"x[|]y|z\|w|(?:p|q)rst", [r"x[|]y", r"z\|w", "(?:p|q)rst"]),  # bars in a class, escaped or in a group
        ("(?i)default|chat template", ["default", "chat template"]),
        (r"(foo)\1|bar", None),  # a back-reference: removing a branch would renumber the groups
        ("single alternative", None),
    ],
)
def test_top_level_alternatives(pattern, parts):
    split = branches(pattern)
    assert (None if split is None else [p for p, _ in split[1]]) == parts
    if pattern.startswith("(?i)"):
        assert split[0] == "(?i)" and possible_part(split, "the chat template") == "(?i)chat template"


def test_searching_only_the_possible_alternatives_finds_the_same_matches_on_the_knowledge_base():
    """`possible_part` drops the alternatives whose literals are missing: it must match exactly when the
    whole pattern does (on every knowledge example), and it must drop some."""
    kb = default_kb()
    patterns = {c.text for e in kb.entries for c in [*e.requires, *e.excludes, *(s.when for s in e.evidence)] if c.text}
    texts = [ex.read() for e in kb.entries for ex in kb.examples(e.id)][::3]
    dropped = 0
    for pattern in patterns:
        split = branches(pattern)
        if split is None:
            continue
        whole = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
        for text in texts:
            possible = possible_part(split, text.lower())
            found = possible is not None and re.search(possible, text, re.IGNORECASE | re.MULTILINE) is not None
            assert found == (whole.search(text) is not None), pattern
            dropped += possible != pattern
    assert dropped > len(texts)
