"""The knowledge-base snapshot: same entries as a fresh load, rebuilt when a file changes."""

from __future__ import annotations

import shutil

import pytest

from bot.settings import get_settings
from knowledge.kb import ENTRIES_DIR, fingerprint, load_kb, load_kb_cached


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSDOCTOR_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_snapshot_matches_a_fresh_load_and_is_reused(home, tmp_path):
    entries = tmp_path / "entries"
    shutil.copytree(ENTRIES_DIR, entries)
    first = load_kb_cached(entries)
    snapshots = list((home / "cache").glob("kb-*.pickle"))
    assert len(snapshots) == 1
    second = load_kb_cached(entries)
    assert [e.model_dump() for e in second.entries] == [e.model_dump() for e in load_kb(entries).entries]
    assert second is not first and "bm25" in second.cache and second.cache["literals"]


def test_snapshot_is_rebuilt_when_an_entry_changes(home, tmp_path):
    entries = tmp_path / "entries"
    shutil.copytree(ENTRIES_DIR, entries)
    before = fingerprint(entries)
    load_kb_cached(entries)
    target = next(entries.glob("*/entry.yaml"))
    target.write_text(target.read_text().replace("title:", "title: CHANGED", 1) if "title: " in target.read_text() else target.read_text())
    assert fingerprint(entries) != before
    kb = load_kb_cached(entries)
    assert any(e.title.startswith("CHANGED") for e in kb.entries)
    assert len(list((home / "cache").glob("kb-*.pickle"))) == 1  # the stale snapshot is gone


def test_corrupt_snapshot_falls_back_to_yaml(home, tmp_path):
    entries = tmp_path / "entries"
    shutil.copytree(ENTRIES_DIR, entries)
    load_kb_cached(entries)
    snapshot = next((home / "cache").glob("kb-*.pickle"))
    snapshot.write_bytes(b"not a pickle")
    assert len(load_kb_cached(entries).entries) == len(list(entries.glob("*/entry.yaml")))


def test_fingerprint_changes_with_the_code_that_derives_the_snapshot(tmp_path, monkeypatch):
    """A new lossdoctor release (another matcher or lexical index) must not reuse an old snapshot."""
    import os

    import knowledge.kb as kb_module

    package = tmp_path / "knowledge"
    package.mkdir()
    (tmp_path / "bot").mkdir()
    for module in kb_module.DERIVED_BY:
        (package / module).write_text("# v1\n")
    monkeypatch.setattr(kb_module, "__file__", str(package / "kb.py"))
    before = fingerprint(ENTRIES_DIR)
    assert fingerprint(ENTRIES_DIR) == before
    lexical = package / "lexical.py"
    lexical.write_text("# v2, another tokenizer\n")
    os.utime(lexical, ns=(1, 1))
    assert fingerprint(ENTRIES_DIR) != before
    changed = fingerprint(ENTRIES_DIR)
    parser = package / "../bot/parse.py"  # the parser reads the examples the snapshot derives from
    parser.write_text("# v2, another parser\n")
    os.utime(parser, ns=(2, 2))
    assert fingerprint(ENTRIES_DIR) != changed
