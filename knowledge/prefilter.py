"""Literal prefilters for regexes: a cheap substring test that must pass before a regex runs.

For a pattern, `required_literals` computes a set of lower-case strings such that every
match contains at least one of them (the idea of RE2's FilteredRE2). Most knowledge-base
patterns then cost one ``in`` test on the lower-cased paste instead of a regex scan.
"""

from __future__ import annotations

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
