"""Load the knowledge base: one directory per entry under ``knowledge/entries/``.

    entries/<id>/entry.yaml     the entry (knowledge.schema.Entry)
    entries/<id>/match/*.txt    pastes that must rank this entry first
    entries/<id>/no-match/*.txt near-misses that must not
    entries/patterns.yaml       regex fragments shared by several entries: a condition's regex
                                names one as {{name}} and loading puts it in, as a group
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from bot.errors import KnowledgeBaseError
from knowledge.schema import Entry
from knowledge.similar import REPORT_SETS_DIR

ENTRIES_DIR = Path(__file__).parent / "entries"
PATTERNS_FILE = "patterns.yaml"
_PATTERN_NAME = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Example:
    path: Path
    expect_match: bool

    @property
    def name(self) -> str:
        return f"{self.path.parent.parent.name}/{self.path.parent.name}/{self.path.name}"

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class KnowledgeBase:
    entries: tuple[Entry, ...]
    directory: Path
    _by_id: dict[str, Entry] = field(default_factory=dict, compare=False, repr=False)
    cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    """Derived data (the lexical index) computed once per knowledge base."""

    def __post_init__(self) -> None:
        self._by_id.update({e.id: e for e in self.entries})

    def get(self, entry_id: str) -> Entry:
        try:
            return self._by_id[entry_id]
        except KeyError:
            raise KnowledgeBaseError(f"no knowledge entry {entry_id!r}") from None

    def examples(self, entry_id: str) -> list[Example]:
        base = self.directory / entry_id
        found = [Example(p, True) for p in sorted((base / "match").glob("*.txt"))]
        found += [Example(p, False) for p in sorted((base / "no-match").glob("*.txt"))]
        return found


def _read_yaml(path: Path) -> object:
    import yaml  # only needed when the knowledge-base snapshot is missing or stale

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeBaseError(f"{path}: cannot read YAML: {exc}") from exc


def load_patterns(directory: Path) -> dict[str, str]:
    """The shared regex fragments (``patterns.yaml``: name -> regex); none when the file is absent."""
    path = directory / PATTERNS_FILE
    if not path.is_file():
        return {}
    data = _read_yaml(path)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"\w+", k) and isinstance(v, str) for k, v in data.items()
    ):
        raise KnowledgeBaseError(f"{path}: expected a mapping of names (letters, digits, _) to regex strings")
    for name, regex in data.items():
        if _PATTERN_NAME.search(regex):
            raise KnowledgeBaseError(f"{path}: pattern {name!r} names another pattern; write it out")
        try:
            re.compile(regex)
        except re.error as exc:
            raise KnowledgeBaseError(f"{path}: pattern {name!r} is not a valid regex: {exc}") from exc
    return data


def _put_in_patterns(value: object, patterns: dict[str, str], path: Path) -> object:
    """`value` with each {{name}} in its strings replaced by the named pattern, as a group."""
    if isinstance(value, str):
        def pattern(m: re.Match) -> str:
            if m.group(1) not in patterns:
                raise KnowledgeBaseError(f"{path}: no shared pattern {m.group(1)!r} in {PATTERNS_FILE}")
            return f"(?:{patterns[m.group(1)]})"
        return _PATTERN_NAME.sub(pattern, value)
    if isinstance(value, dict):
        return {k: _put_in_patterns(v, patterns, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_in_patterns(v, patterns, path) for v in value]
    return value


def load_entry(path: Path, patterns: dict[str, str] | None = None) -> Entry:
    """Read and validate one ``entry.yaml``; errors name the file and the field.

    `patterns` are the shared regex fragments its conditions may name (default: those of the
    entry's knowledge base)."""
    data = _read_yaml(path)
    if patterns is None:
        patterns = load_patterns(path.parent.parent)
    if isinstance(data, dict):
        for section in ("evidence", "requires", "excludes"):
            if section in data:
                data[section] = _put_in_patterns(data[section], patterns, path)
    try:
        entry = Entry.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{path}: invalid entry:\n{exc}") from exc
    if entry.id != path.parent.name:
        raise KnowledgeBaseError(f"{path}: id {entry.id!r} does not match its directory name {path.parent.name!r}")
    return entry


def load_kb(directory: Path | None = None) -> KnowledgeBase:
    directory = directory or ENTRIES_DIR
    patterns = load_patterns(directory)
    entries = tuple(load_entry(p, patterns) for p in sorted(directory.glob("*/entry.yaml")))
    return KnowledgeBase(entries=entries, directory=directory)


DERIVED_BY = ("schema.py", "kb.py", "matcher.py", "lexical.py", "prefilter.py", "similar.py", "classifier.py",
              "report_classifier.json.gz",
              "../bot/parse.py", "../bot/code_facts.py", "../bot/redact.py", "../bot/models.py")
"""The modules whose code shapes a snapshot's contents (the parser too: the matcher derives symptom
shares and word statistics from the parsed knowledge-base examples)."""


def fingerprint(directory: Path) -> str:
    """Changes whenever a file under `directory`, or a module in DERIVED_BY, is added, removed
    or modified (size or mtime).

    One ``os.scandir`` walk (its entries carry the file type, so only files are stat'ed):
    about 4 ms for the bundled knowledge base, where ``rglob`` + ``Path.stat`` took 15-25 ms.
    """
    root = os.path.realpath(directory)
    rows = []
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(os.path.join(root, relative) if relative else root) as listing:
            for item in listing:
                name = f"{relative}/{item.name}" if relative else item.name
                if item.is_dir():
                    stack.append(name)
                elif item.is_file():
                    stat = item.stat()
                    rows.append(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    rows.sort()
    # the snapshot also holds data derived by this package's code (schema, lexical index, regex
    # prefilters): a change to that code (an upgrade of lossdoctor) must rebuild it too
    package = os.path.dirname(os.path.abspath(__file__))
    for module in DERIVED_BY:
        stat = os.stat(os.path.join(package, module))
        rows.append(f"code:{module}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    digest = hashlib.sha1(root.encode())
    digest.update("".join(rows).encode())
    return digest.hexdigest()[:16]


def load_kb_cached(directory: Path | None = None) -> KnowledgeBase:
    """`load_kb` through a snapshot in the cache directory: validated entries and the matcher's
    derived data (lexical index, regex prefilters), rebuilt whenever an entry file changes.
    Any problem with the snapshot falls back to loading (and validating) the YAML."""
    from bot.storage import read_cache, write_cache
    from knowledge import matcher

    directory = directory or ENTRIES_DIR
    key = fingerprint(directory)
    if directory == ENTRIES_DIR and REPORT_SETS_DIR.is_dir():
        key = hashlib.sha1((key + fingerprint(REPORT_SETS_DIR)).encode()).hexdigest()[:16]  # the snapshot holds their index
    name = f"kb-{key}.pickle"
    kb = read_cache(name)
    if isinstance(kb, KnowledgeBase) and kb.directory == directory:
        matcher.prime(kb)
        return kb
    kb = load_kb(directory)
    matcher.warm(kb)
    write_cache(name, kb)
    global snapshot_rebuilt
    snapshot_rebuilt = True
    return kb


snapshot_rebuilt = False
"""Whether this process validated the YAML and rebuilt a snapshot (an untypical run: `bot.cli`
does not record the regexes compiled by it in its compiled-regex snapshot)."""


@lru_cache(maxsize=1)
def default_kb() -> KnowledgeBase:
    """The bundled knowledge base, loaded once per process (from the snapshot cache when fresh)."""
    return load_kb_cached()


def load_entries() -> tuple[Entry, ...]:
    return default_kb().entries
