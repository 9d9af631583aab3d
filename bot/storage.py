"""The one storage module: everything lossdoctor persists goes through `Storage`.

SQLite via the standard library (``LOSSDOCTOR_DB_URL=sqlite:///path``). Tables are
created on first use. Only redacted text is ever stored.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

from bot.errors import BotError
from bot.settings import Settings, get_settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS diagnoses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    source TEXT NOT NULL,
    report_text TEXT NOT NULL,
    diagnosis_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""


def cache_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "cache"


def read_cache(name: str, settings: Settings | None = None) -> object | None:
    """A derived-data snapshot written by `write_cache`, or None when absent or unreadable.

    Only lossdoctor writes this directory (it lives in LOSSDOCTOR_HOME); a snapshot is data
    derived from files in the package, never anything a user sent.
    """
    path = cache_dir(settings) / name
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 - our own snapshot, see above
    except Exception:  # noqa: BLE001 - a missing or stale snapshot is simply rebuilt
        return None


def write_cache(name: str, value: object, settings: Settings | None = None) -> None:
    """Write a snapshot atomically; failure (read-only home...) only costs speed."""
    write_cache_file(cache_dir(settings), name, value)


def write_cache_file(directory: Path, name: str, value: object) -> bool:
    """`write_cache` into `directory`: replaces older snapshots of the same kind (the part of
    `name` before its first ``-``). Returns False when it could not be written."""
    import tempfile  # only when a snapshot is (re)written; keeps it off the cold path

    handle = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=directory, delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, directory / name)
        for old in directory.glob(name.split("-")[0] + "-*.pickle"):
            if old.name != name:
                old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        if handle is not None:
            Path(handle.name).unlink(missing_ok=True)
        return False
    return True


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path`` or ``sqlite:///:memory:`` -> path. Other schemes are refused."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise BotError(f"unsupported LOSSDOCTOR_DB_URL {url.split(':', 1)[0]!r}: only sqlite:///PATH is supported")
    return Path(url[len(prefix):])


class Storage:
    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        path = sqlite_path(settings.database_url)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        import sqlite3  # not needed by `diagnose --no-repro`, which stores nothing

        self._db = sqlite3.connect(str(path), timeout=30)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save_diagnosis(self, source: str, report_text: str, diagnosis: dict[str, Any]) -> int:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO diagnoses (created, source, report_text, diagnosis_json) VALUES (?, ?, ?, ?)",
                (time.time(), source, report_text, json.dumps(diagnosis)),
            )
        return int(cur.lastrowid)

    def get_diagnosis(self, diagnosis_id: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT diagnosis_json FROM diagnoses WHERE id = ?", (diagnosis_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, namespace: str, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO kv (namespace, key, value_json, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(namespace, key) DO UPDATE SET value_json = excluded.value_json, updated = excluded.updated",
                (namespace, key, json.dumps(value), time.time()),
            )

    def get(self, namespace: str, key: str) -> Any | None:
        row = self._db.execute("SELECT value_json FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
        return json.loads(row[0]) if row else None

    def items(self, namespace: str) -> list[tuple[str, Any, float]]:
        rows = self._db.execute(
            "SELECT key, value_json, updated FROM kv WHERE namespace = ? ORDER BY updated", (namespace,)
        ).fetchall()
        return [(k, json.loads(v), u) for k, v, u in rows]

    def delete(self, namespace: str, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
