from pathlib import Path

import pytest

from bot.errors import BotError
from bot.settings import Settings
from bot.storage import Storage, sqlite_path


def test_from_env_reads_prefixed_variables(tmp_path):
    s = Settings.from_env({"LOSSDOCTOR_HOME": str(tmp_path), "LOSSDOCTOR_REPRO_TIMEOUT_S": "9.5", "OTHER": "x"})
    assert s.home == tmp_path and s.repro_timeout_s == 9.5
    assert s.database_url == f"sqlite:///{tmp_path / 'lossdoctor.sqlite3'}"
    assert s.envs_dir == tmp_path / "envs"


def test_bad_value_is_a_clear_error():
    with pytest.raises(BotError, match="LOSSDOCTOR_REPRO_TIMEOUT_S"):
        Settings.from_env({"LOSSDOCTOR_REPRO_TIMEOUT_S": "soon"})


def test_unknown_keyword_is_rejected():
    with pytest.raises(ValueError):
        Settings(colour="blue")


def test_storage_round_trip(tmp_path):
    store = Storage(Settings(home=tmp_path))
    ident = store.save_diagnosis("cli", "redacted text", {"verdict": "matched"})
    assert store.get_diagnosis(ident) == {"verdict": "matched"}
    store.put("envs", "k", {"size": 3})
    store.put("envs", "k", {"size": 4})
    assert store.get("envs", "k") == {"size": 4}
    assert [k for k, _, _ in store.items("envs")] == ["k"]
    store.delete("envs", "k")
    assert store.get("envs", "k") is None
    store.close()
    assert (tmp_path / "lossdoctor.sqlite3").exists()


def test_only_sqlite_urls():
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    with pytest.raises(BotError, match="only sqlite"):
        sqlite_path("postgresql://u@h/db")
