"""Virtual environments with a report's library versions: built with pip, cached, evicted LRU.

One environment per version set, under ``Settings.envs_dir/<key>``, built with ``python -m venv``
and ``pip install --only-binary=:all: torch==2.13.0 <pins>`` (pip, not uv: pip finds the local
CPU torch wheel). pip runs with an allowlisted environment, so none of the bot's tokens reach
it. A file lock keeps two processes from building the same environment; an environment counts
only once its completion marker exists, written last and atomically, after its packages have
imported. Metadata (versions, size, last use) is kept in `bot.storage.Storage`, namespace ``envs``.

Usage (builds about 1.5 GB the first time)::

    env = EnvManager().ensure({"transformers": "4.55.4", "trl": "0.19.1"}, progress=print)
    run_batch(runs, python=str(env.python), warm=False)
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bot.errors import BotError
from bot.settings import Settings, get_settings
from bot.storage import Storage
from reproducer.versions import STACK, InstallPlan, install_plan, installed_versions

MARKER = ".lossdoctor-env.json"
"""Written last, atomically: a directory without it is a half-built environment."""
NAMESPACE = "envs"
INDEX_TIMEOUT_S = 60
INSTALL_TIMEOUT_S = 1800

_KEEP_ENV = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_CACHE_HOME",
}
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH")
_UNREACHABLE = re.compile(r"Could not fetch URL (\S+?): (.*?)(?: - skipping)?$", re.M)

# Prints the installed stack as JSON; with --import it first imports what the child needs.
_PROBE = """
import importlib, importlib.metadata as md, json, sys
if "--import" in sys.argv:
    import torch, transformers, trl, peft, datasets, accelerate
    transformers.Trainer, transformers.AutoModelForCausalLM, trl.SFTTrainer, peft.LoraConfig
names = json.loads(sys.argv[1])
found = {}
for name in names:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


class EnvError(BotError):
    """A version environment could not be made."""


class RegistryUnreachable(EnvError):
    """The package registry cannot be reached: run on the installed versions instead."""


class VersionNotFound(EnvError):
    """A pinned version does not exist on the registry."""


class EnvBuildFailed(EnvError):
    """pip failed, or the installed packages do not import."""


@dataclass(frozen=True)
class Env:
    """A ready Python environment for the reproducer child."""

    key: str
    python: Path
    versions: dict[str, str]
    """Training-stack versions actually installed, read with importlib.metadata in that environment."""
    path: Path | None = None
    """None for the installed stack (the interpreter lossdoctor runs in)."""
    built: bool = False
    """True when this call built it; False for a cache hit or the installed stack."""
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def installed_stack(self) -> bool:
        return self.path is None


def scrubbed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment pip runs with: allowlisted names only, never a token or a LOSSDOCTOR_ setting."""
    env = {}
    for name, value in environ.items():
        keep = name in _KEEP_ENV or name.startswith("PIP_")
        if keep and not any(word in name.upper() for word in _SECRET_WORDS):
            env[name] = value
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def dir_size(path: Path) -> int:
    """Bytes on disk under ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


@contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """True when another process holds the lock at ``path``."""
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def satisfies(versions: Mapping[str, str], plan: InstallPlan) -> bool:
    """True when installed ``versions`` match every pin and cap of ``plan`` (local labels ignored)."""
    for name, pin in plan.pins.items():
        have = versions.get(name)
        if have is None or Version(have).public != Version(pin).public:
            return False
    for cap in plan.caps:
        name, spec = re.match(r"([a-z0-9-]+)(.*)", cap).groups()
        if name not in versions or Version(versions[name]) not in SpecifierSet(spec):
            return False
    return True


class EnvManager:
    """Creates, reuses and evicts version environments under ``settings.envs_dir``."""

    def __init__(self, settings: Settings | None = None, storage: Storage | None = None, *, base_python: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.storage = storage or Storage(self.settings)
        self.base_python = base_python or sys.executable
        """Interpreter that creates the venvs and runs pip (``pip --python <env>``)."""
        self.root = Path(self.settings.envs_dir)

    # --- the public operations -------------------------------------------------------------

    def ensure(self, versions: Mapping[str, str], progress: Callable[[str], None] | None = None) -> Env:
        """An environment with ``versions`` installed: the installed stack when it already matches,
        else a cached one, else a new one (about a minute). Raises `VersionRefused`,
        `VersionNotFound`, `RegistryUnreachable` or `EnvBuildFailed`."""
        say = progress or (lambda line: None)
        plan = install_plan(dict(versions))
        here = installed_versions()
        if satisfies(here, plan):
            return Env(key="installed", python=Path(sys.executable), versions=here, notes=plan.notes)
        key = plan.key(self._python_version())
        path = self.root / key
        reuse = self._find_cached(plan, prefer=key)
        if reuse is not None:
            other, found = reuse
            self._record(other, self.root / other, plan, found, size=None, pins=False)
            return Env(key=other, python=self._env_python(self.root / other), versions=found, path=self.root / other,
                       notes=plan.notes)
        started = time.monotonic()
        with file_lock(self._lock_path(key), on_wait=lambda: say(f"waiting for another process building {_describe(plan)}...")):
            found = self._read_marker(path)
            if found is not None:
                self._record(key, path, plan, found, size=None)
                return Env(key=key, python=self._env_python(path), versions=found, path=path, notes=plan.notes)
            if path.exists():
                shutil.rmtree(path)  # half-built by a process that died
            say(f"checking {_describe(plan)} on the package registry...")
            self.check_exists(plan)
            say(f"building environment {_describe(plan)} (about a minute)...")
            try:
                found = self._build(path, plan)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            seconds = time.monotonic() - started
            size = dir_size(path)
            self._record(key, path, plan, found, size=size, build_seconds=seconds)
            say(f"environment ready in {seconds:.0f} s ({size / 1e9:.1f} GB)")
        self.evict(keep=(key,))
        return Env(key=key, python=self._env_python(path), versions=found, path=path, built=True, seconds=seconds, notes=plan.notes)

    def evict(self, budget_gb: float | None = None, keep: tuple[str, ...] = ()) -> list[str]:
        """Remove least recently used environments until their total size is within ``budget_gb``
        (default ``settings.env_disk_budget_gb``), plus half-built ones nobody is building.
        Environments in ``keep`` or in use by a build are never removed. Returns removed keys."""
        budget = (self.settings.env_disk_budget_gb if budget_gb is None else budget_gb) * 1e9
        removed = []
        if self.root.exists():
            for path in self.root.iterdir():
                if path.name.startswith("."):
                    continue
                if path.is_dir() and not (path / MARKER).exists() and not is_locked(self._lock_path(path.name)):
                    shutil.rmtree(path, ignore_errors=True)
                    self.storage.delete(NAMESPACE, path.name)
        entries = []
        for key, meta, _updated in self.storage.items(NAMESPACE):
            if not (self.root / key / MARKER).exists():
                self.storage.delete(NAMESPACE, key)
                continue
            entries.append((meta.get("last_used", 0.0), key, meta.get("size_bytes") or 0))
        entries.sort()
        total = sum(size for _used, _key, size in entries)
        for _used, key, size in entries:
            if total <= budget:
                break
            if key in keep or is_locked(self._lock_path(key)):
                continue
            self.remove(key)
            removed.append(key)
            total -= size
        return removed

    def remove(self, key: str) -> None:
        """Delete one environment and its metadata (the marker first, so it is never half-used)."""
        path = self.root / key
        with file_lock(self._lock_path(key)):
            (path / MARKER).unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)
            self.storage.delete(NAMESPACE, key)

    def cached(self) -> list[dict]:
        """Metadata of the cached environments, least recently used first."""
        rows = [dict(meta, key=key) for key, meta, _u in self.storage.items(NAMESPACE)]
        return sorted(rows, key=lambda row: row.get("last_used", 0.0))

    def available_versions(self, name: str) -> list[str]:
        """Releases of ``name`` on the registry, oldest first. Raises `RegistryUnreachable`."""
        found, unreachable = self._index_versions(name)
        if not found and unreachable:
            raise RegistryUnreachable(f"the package registry could not be reached ({unreachable})")
        return sorted(found, key=Version)

    def check_exists(self, plan: InstallPlan) -> None:
        """Refuse pins that do not exist on the registry (`VersionNotFound`), or say it is unreachable."""
        names = [n for n in plan.pins if n != "torch"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            answers = dict(zip(names, pool.map(self._index_versions, names)))
        missing, unreachable = [], ""
        for name in names:
            found, error = answers[name]
            if not any(Version(v) == Version(plan.pins[name]) for v in found):
                missing.append(name)
                unreachable = unreachable or error
        if missing and unreachable:
            raise RegistryUnreachable(f"the package registry could not be reached ({unreachable}); "
                                      f"cannot install {', '.join(f'{n}=={plan.pins[n]}' for n in missing)}")
        if missing:
            detail = "; ".join(f"{n}=={plan.pins[n]} (latest known: {_latest(answers[n][0])})" for n in missing)
            raise VersionNotFound(f"no such release on the package registry: {detail}")

    def pip_env(self) -> dict[str, str]:
        """The environment pip and the smoke import run with (see `scrubbed_env`)."""
        return scrubbed_env(os.environ)

    def pip_command(self, python: Path, plan: InstallPlan) -> list[str]:
        """The pip install command for ``plan`` into the environment of ``python``."""
        command = [self.base_python, "-m", "pip", "--python", str(python), "install",
                   "--only-binary=:all:", "--no-input", "--progress-bar=off"]
        if self.settings.pip_index_url:
            command += ["--index-url", self.settings.pip_index_url]
        return command + plan.requirements()

    # --- helpers ---------------------------------------------------------------------------

    def _build(self, path: Path, plan: InstallPlan) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        env = self.pip_env()
        self._run([self.base_python, "-m", "venv", "--without-pip", str(path)], env, "creating the venv", 120)
        python = self._env_python(path)
        self._run(self.pip_command(python, plan), env, "pip install", INSTALL_TIMEOUT_S)
        found = self._probe(python, env)
        for name, pin in plan.pins.items():
            if Version(found.get(name, "0")).public != Version(pin).public:
                raise EnvBuildFailed(f"pip installed {name} {found.get(name, 'nothing')} instead of {pin}")
        marker = {"versions": found, "requirements": plan.requirements(), "created": time.time()}
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=1))
        os.replace(tmp, path / MARKER)
        return found

    def _probe(self, python: Path, env: dict[str, str]) -> dict[str, str]:
        probe_env = dict(env, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        result = self._run([str(python), "-I", "-c", _PROBE, json.dumps(list(STACK)), "--import"], probe_env,
                           "importing the installed stack", 300)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def _run(self, command: list[str], env: dict[str, str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EnvBuildFailed(f"{what} took longer than {timeout:.0f} s") from None
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
            raise EnvBuildFailed(f"{what} failed:\n{tail}")
        return result

    def _index_versions(self, name: str) -> tuple[list[str], str]:
        """(versions on the registry, why a registry could not be reached or '')."""
        # plain-text output: `--json` needs pip >= 23.3, and a fresh venv may carry an older pip
        command = [self.base_python, "-m", "pip", "index", "versions", name, "-vv",
                   "--timeout", "15", "--retries", "1"]
        if self.settings.pip_index_url:
            command += ["--index-url", self.settings.pip_index_url]
        try:
            result = subprocess.run(command, env=self.pip_env(), capture_output=True, text=True, timeout=INDEX_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return [], f"pip index versions {name} timed out"
        failures = _UNREACHABLE.findall(result.stderr + result.stdout)
        error = f"{failures[0][0]}: {failures[0][1]}" if failures else ""
        for line in result.stdout.splitlines():
            if line.startswith("Available versions:"):
                return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()], error
        return [], error

    def _find_cached(self, plan: InstallPlan, prefer: str) -> tuple[str, dict[str, str]] | None:
        """A complete cached environment whose installed versions meet every pin and cap of ``plan``
        (the one with ``prefer`` as key first, then the most recently used)."""
        rows = sorted(self.storage.items(NAMESPACE), key=lambda row: (row[0] != prefer, -row[1].get("last_used", 0.0)))
        for key, _meta, _updated in rows:
            found = self._read_marker(self.root / key)
            if found is not None and satisfies(found, plan):
                return key, found
        return None

    def _read_marker(self, path: Path) -> dict[str, str] | None:
        try:
            return dict(json.loads((path / MARKER).read_text())["versions"])
        except (OSError, ValueError, KeyError):
            return None

    def _record(self, key: str, path: Path, plan: InstallPlan, found: dict[str, str], *, size: int | None,
                build_seconds: float | None = None, pins: bool = True) -> None:
        meta = self.storage.get(NAMESPACE, key) or {}
        meta.update(path=str(path), versions=found, last_used=time.time())
        if pins or "requested" not in meta:
            meta.update(requested=plan.pins, requirements=plan.requirements())
        if size is not None:
            meta["size_bytes"] = size
        elif "size_bytes" not in meta:
            meta["size_bytes"] = dir_size(path)
        if build_seconds is not None:
            meta["build_seconds"] = round(build_seconds, 1)
        self.storage.put(NAMESPACE, key, meta)

    def _lock_path(self, key: str) -> Path:
        return self.root / ".locks" / f"{key}.lock"

    def _env_python(self, path: Path) -> Path:
        return path / "bin" / "python"

    def _python_version(self) -> str:
        if self.base_python == sys.executable:
            return f"{sys.version_info.major}.{sys.version_info.minor}"
        out = subprocess.run([self.base_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], env=self.pip_env(),
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()


def _describe(plan: InstallPlan) -> str:
    stated = [f"{n}=={v}" for n, v in sorted(plan.pins.items()) if n != "torch"]
    return " ".join(stated + list(plan.caps)) or "the latest releases"


def _latest(versions: list[str]) -> str:
    return max(versions, key=Version) if versions else "none"
