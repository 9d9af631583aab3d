"""Literal prefilters for regexes: a cheap substring test that must pass before a regex runs.

For a pattern, `required_literals` computes a set of lower-case strings such that every
match contains at least one of them (the idea of RE2's FilteredRE2). Most knowledge-base
patterns then cost one ``in`` test on the lower-cased paste instead of a regex scan.
"""

from __future__ import annotations

import re
from re import _constants as C  # noqa: N812 - the stdlib's own names
from re import _parser as sre_parse

MIN_LITERAL = 3
"""Shorter literals filter too little to be worth it."""

Alternatives = frozenset[str] | None
"""Any match contains one of these strings; None: nothing is known."""


def required_literals(pattern: str) -> Alternatives:
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - a pattern we cannot analyse is simply not prefiltered
        return None
    return _sequence(list(parsed))


def _best(candidates: list[frozenset[str]]) -> Alternatives:
    useful = [c for c in candidates if c and min(len(s) for s in c) >= MIN_LITERAL]
    if not useful:
        return None
    return max(useful, key=lambda c: (min(len(s) for s in c), -len(c)))


def _sequence(items: list) -> Alternatives:
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            candidates.append(frozenset({"".join(run)}))
            run.clear()

    for op, av in items:
        if op is C.LITERAL:
            run.append(chr(av).lower())
            continue
        if op is C.AT:
            continue  # zero-width anchors (^, $, \b) neither add nor break a literal
        flush()
        sub: Alternatives = None
        if op is C.SUBPATTERN:
            sub = _sequence(list(av[-1]))
        elif op is C.BRANCH:
            parts = [_sequence(list(branch)) for branch in av[1]]
            sub = None if any(p is None for p in parts) else frozenset().union(*parts)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)) and av[0] >= 1:
            sub = _sequence(list(av[2]))
        elif op is C.ASSERT and av[0] == 1:  # positive lookahead: its content must be there too
            sub = _sequence(list(av[1]))
        if sub is not None:
            candidates.append(sub)
    flush()
    return _best(candidates)


def may_match(literals: Alternatives, lowered_text: str) -> bool:
    return literals is None or any(lit in lowered_text for lit in literals)


Split = tuple[str, tuple[tuple[str, Alternatives], ...]]
"""A pattern's leading inline flags and its top-level alternatives, each with its required literals."""
Branches = Split | None
"""A pattern's split, or None: it is not searched alternative by alternative."""

_INLINE_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def branches(pattern: str) -> Branches:
    """The top-level alternatives of `pattern` (`a|b|c`), when it can be searched branch by branch:
    several of them and no back-reference (removing a branch would renumber the groups). Else None."""
    flags_match = _INLINE_FLAGS.match(pattern)
    flags = flags_match.group(0) if flags_match else ""
    parts = _top_level_parts(pattern[len(flags):])
    if len(parts) < 2 or _BACKREFERENCE.search(pattern):
        return None
    try:
        for part in parts:
            sre_parse.parse(flags + part)
    except Exception:  # noqa: BLE001 - a split we cannot parse is simply not used
        return None
    return flags, tuple((part, required_literals(flags + part)) for part in parts)


def possible_part(split: Split, lowered_text: str) -> str | None:
    """The pattern of `split` without the alternatives that cannot match `lowered_text` (their required
    literals are absent); None when none can. A search for it finds a match exactly when the whole
    pattern does, but tries fewer alternatives at every position."""
    flags, parts = split
    kept = [part for part, literals in parts if may_match(literals, lowered_text)]
    return flags + "|".join(kept) if kept else None


def _top_level_parts(pattern: str) -> list[str]:
    parts, current, depth, in_class, escaped = [], [], 0, False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts
