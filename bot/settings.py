"""The one settings object. Every feature reads its configuration from `Settings`.

`get_settings()` reads the environment (prefix ``LOSSDOCTOR_``, e.g. ``LOSSDOCTOR_HOME=/srv/ld``);
``Settings(...)`` with keywords builds one explicitly (tests). Plain pydantic rather than
pydantic-settings: the latter costs ~100 ms of imports on every ``diagnose`` start.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import BotError

ENV_PREFIX = "LOSSDOCTOR_"


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("lossdoctor", appauthor=False))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    home: Path = Field(default_factory=_default_home)
    """Caches, virtual environments and the default database live here."""
    db_url: str | None = None
    """Where persisted data goes; default ``sqlite:///<home>/lossdoctor.sqlite3``."""
    max_input_bytes: int = 50 * 1024 * 1024
    """Pastes larger than this are refused with a clear message."""
    repro_timeout_s: float = 120.0
    """Wall-clock limit for one sandboxed reproduction run."""
    repro_memory_mb: int = 6144
    """Memory limit (address space on CPU, data segment on CUDA) for one run."""
    repro_cpu_s: int = 300
    """CPU-time limit for one run."""
    repro_max_candidates: int = 3
    """How many candidate entries the reproducer tries."""
    require_bwrap: bool = False
    """Fail instead of falling back when bubblewrap cannot run (always on when CI=true)."""
    build_envs: bool = True
    """Build a virtual environment with the user's library versions when the installed stack does not reproduce."""
    env_disk_budget_gb: float = 8.0
    """Evict least recently used version environments past this size."""
    pip_index_url: str | None = None
    """Package index for version environments; None uses pip's own configuration."""

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'lossdoctor.sqlite3'}"

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"


    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Settings from ``LOSSDOCTOR_<FIELD>`` variables; a bad value is a clear error, not a traceback."""
        environ = os.environ if environ is None else environ
        values = {
            name: environ[ENV_PREFIX + name.upper()] for name in cls.model_fields if ENV_PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
            raise BotError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after changing env)."""
    return Settings.from_env()
