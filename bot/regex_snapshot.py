"""A snapshot of compiled regular expressions, so a cold ``diagnose`` does not recompile them.

CPython compiles a regex in pure Python (``re._parser`` + ``re._compiler``, 0.1-0.5 ms a
pattern) and keeps the result only in the process (``re._cache``). The parser, the redactor
and the knowledge base's conditions use about 250 patterns, some 40 ms of every cold start.

`seed` reads the snapshot (each pattern's compiled code, as ``_sre.compile`` takes it) and
puts the resulting `re.Pattern` objects into ``re._cache`` before the modules that compile
them are imported; ``re.compile(p, flags)`` then finds them there. Nothing else changes:
the objects are the ones ``re.compile`` would build (`save` checks each one is equal, code
included, to the pattern ``re`` compiled itself before writing it), and a pattern missing
from the snapshot is compiled as usual. `save` rewrites the snapshot only when the process
compiled several patterns it lacked.

The snapshot depends only on the interpreter (its name carries the cache tag and the
``_sre`` magic number), never on what a user sent. Anything unexpected (another Python,
another ``re`` implementation, a corrupt file) disables it; it only ever costs speed.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

LIMIT = 1000
"""Most patterns kept (the bundled code and knowledge base use about 500)."""
HEADROOM = 256
"""``re`` keeps at most ``re._MAXCACHE`` (512) patterns and then drops the oldest; `seed` raises
that limit for this process to hold the snapshot and this many more."""

MIN_NEW = 3
"""Rewrite only for this many new patterns: a missing pattern only costs its compile (0.1-0.5 ms),
a rewrite a few milliseconds."""

_loaded: dict[tuple[str, int], tuple] = {}
"""(pattern, flags) -> the snapshot's row, for the patterns this process seeded."""


def supported() -> bool:
    import re

    return (
        sys.implementation.name == "cpython"
        and isinstance(getattr(re, "_cache", None), dict)
        and isinstance(getattr(re, "_MAXCACHE", None), int)
        and hasattr(re, "_compiler")
        and hasattr(re, "_parser")
    )


def file_name() -> str:
    import _sre

    tag = (sys.implementation.cache_tag or "python").replace("-", "")
    return f"re_{tag}_{_sre.MAGIC}-snapshot.pickle"


def default_cache_dir() -> Path:
    """`bot.storage.cache_dir` of the default settings, without importing pydantic."""
    home = os.environ.get("LOSSDOCTOR_HOME")
    if not home:
        from platformdirs import user_data_dir

        home = user_data_dir("lossdoctor", appauthor=False)
    return Path(home) / "cache"


def seed(directory: Path) -> int:
    """Put the snapshot's patterns into ``re._cache``; returns how many were added."""
    if not supported():
        return 0
    import re

    import _sre

    try:
        with (directory / file_name()).open("rb") as handle:
            rows = pickle.load(handle)  # noqa: S301 - written by `save` in lossdoctor's own cache
    except Exception:  # noqa: BLE001 - absent or unreadable: compile as usual
        return 0
    cache = re._cache
    if not isinstance(rows, list):
        return 0
    rows = rows[:LIMIT]
    # a seeded pattern dropped from the cache would be compiled again: make room for all
    re._MAXCACHE = max(re._MAXCACHE, len(cache) + len(rows) + HEADROOM)
    added = 0
    try:
        for row in rows:
            pattern, flags, final_flags, code, groups, groupindex, indexgroup = row
            key = (str, pattern, flags)
            if code is not None and type(pattern) is str and key not in cache:
                cache[key] = _sre.compile(pattern, final_flags, code, groups, groupindex, indexgroup)
                added += 1
            _loaded[pattern, flags] = row  # known: `save` need not rewrite the snapshot for it
    except Exception:  # noqa: BLE001 - a malformed row: keep what was added (each is a valid pattern)
        pass
    return added


def _row(pattern: str, flags: int, compiled: object) -> tuple | None:
    """The arguments `_sre.compile` takes for `pattern`, or None when they do not rebuild `compiled`."""
    import re

    import _sre

    try:
        parsed = re._parser.parse(pattern, flags)
        code = [int(op) for op in re._compiler._code(parsed, flags)]  # plain ints: opcodes are an int subclass
        groupindex = dict(parsed.state.groupdict)
        indexgroup = [None] * parsed.state.groups
        for name, index in groupindex.items():
            indexgroup[index] = name
        row = (pattern, flags, flags | parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup))
        rebuilt = _sre.compile(*row[:1], *row[2:])
    except Exception:  # noqa: BLE001 - an interpreter whose internals differ: leave the pattern out
        return None
    return row if rebuilt == compiled and rebuilt.groupindex == compiled.groupindex else None


def save(directory: Path) -> bool:
    """Write the snapshot when this process compiled patterns it lacks; True when written. Never raises."""
    try:
        return _save(directory)
    except Exception:  # noqa: BLE001 - the snapshot only ever costs speed
        return False


def _save(directory: Path) -> bool:
    if not supported():
        return False
    import re

    # tokenize builds its token pattern from a set, in a new order in each process: never the same twice
    unstable = {getattr(sys.modules.get("tokenize"), "PseudoToken", None)}
    current = [
        (key[1], key[2], value)
        for key, value in list(re._cache.items())
        if key[0] is str and not key[2] & re.DEBUG and key[1] not in unstable
    ]
    new = sum((pattern, flags) not in _loaded for pattern, flags, _ in current)
    if new < MIN_NEW and _loaded:
        return False
    rows = []
    seen = set()
    for pattern, flags, compiled in current:
        row = _loaded.get((pattern, flags)) or _row(pattern, flags, compiled) or (pattern, flags, *[None] * 5)
        rows.append(row)
        seen.add((pattern, flags))
    rows += [row for key, row in _loaded.items() if key not in seen]
    rows = rows[:LIMIT]
    from bot.storage import write_cache_file

    if not write_cache_file(directory, file_name(), rows):
        return False
    _loaded.clear()
    _loaded.update(((row[0], row[1]), row) for row in rows)
    return True
