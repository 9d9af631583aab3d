"""The one storage module: everything lossdoctor persists goes through `Storage`.

SQLite via the standard library (``LOSSDOCTOR_DB_URL=sqlite:///path``). Tables are
created on first use. Only redacted text is ever stored.
"""

from __future__ import annotations

import json
import sqlite3
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
