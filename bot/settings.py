"""The one settings object. Every feature reads its configuration from `Settings`.

Values come from the environment (prefix ``LOSSDOCTOR_``), e.g. ``LOSSDOCTOR_HOME=/srv/ld``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("lossdoctor", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOSSDOCTOR_", extra="ignore")

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
