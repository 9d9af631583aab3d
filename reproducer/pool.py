"""A warm worker pool: one sandboxed parent imports the training stack once and forks a child per run.

Isolation per pool (the parent and all its children share one bubblewrap sandbox, see
`reproducer.sandbox`): no network, read-only root with the caller's home and temp dirs hidden,
an environment with no token or secret, one writable pool directory.

Isolation per run (each run is a child forked by the parent): its own process and process group,
its own fresh directory inside the pool directory (cwd, ``$HOME``, ``$TMPDIR``; removed after the
run), its own rlimits (address space or data segment, CPU time), and a wall-clock timeout that the
parent enforces by killing the child's group and reporting a ``Timeout`` record. A child that
crashes or hangs never takes the parent down. What runs do NOT get from each other: a separate
network or mount namespace (they share the pool's), so a run could see a sibling's directory
while both are alive; the product only runs our own reproducer, which writes nowhere else.

Why it is fast (reproduction-facts.md §4): the parent pays the ~4 s import once; it sets
``torch.set_num_threads(1)`` and does no multi-threaded torch work before forking (a child forked
after a parallel op can deadlock in its first parallel op), and it runs ``gc.collect();
gc.freeze()`` so the children's ``gc.collect()`` (which Trainer runs at every ``train()``) skips
the ~200 ms walk over the imported modules and does not copy their pages.

Protocol (JSON lines): the parent first writes ``{"ready": true, "versions", "device", ...}``,
then answers each request line ``{"runs": [{"fix", "scenario"}...], "limits": {...}}`` with
``{"runs": [RunRecord dicts], "child_peak_rss_mb", "parent_peak_rss_mb", "seconds"}``.
The client side is `WarmPool`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Callable

from bot.errors import ReproductionError
from bot.settings import Settings, get_settings
from reproducer import sandbox
from reproducer.sandbox import Limits

DEFAULT_TARGET = "reproducer.child:run_scenario"
"""What a forked child calls with the run's scenario dict; returns a RunRecord dict, never raises."""


# --- inside the sandbox: the parent --------------------------------------------------------


FAMILY_MODULES = ("llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "gpt_neox", "t5", "bart", "bert", "roberta")
"""Model families of `Scenario`: their modeling code is imported once in the parent (~0.1-2 s each)."""


def warm_up(target_spec: str) -> tuple[Callable[[dict], dict], dict[str, str], str]:
    """Import the training stack, the child and the target once, without threads or CUDA.

    Also trains the tiny tokenizer (cached per process by `reproducer.tiny`). Returns the
    target, the library versions and the device.
    """
    module_name, _, function_name = target_spec.partition(":")
    target = getattr(importlib.import_module(module_name), function_name)  # first: a bad target fails fast
    import torch

    torch.set_num_threads(1)  # before any torch work: a fork after a parallel op can deadlock
    torch.set_num_interop_threads(1)
    import peft
    import transformers
    import trl

    from reproducer import child, tiny  # noqa: F401 - imported once here, used by every fork

    # resolve the lazy attributes a run uses, so that children do not import them one by one
    for module, names in (
        (transformers, ["Trainer", "Seq2SeqTrainer", "TrainingArguments", "Seq2SeqTrainingArguments",
                        "AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification",
                        "AutoModelForMaskedLM", "AutoModel", "AutoConfig", "PreTrainedTokenizerFast",
                        "DataCollatorForSeq2Seq", "DataCollatorWithPadding", "DataCollatorForLanguageModeling",
                        "default_data_collator", "set_seed"]),
        (trl, ["SFTTrainer", "SFTConfig"]),
        (peft, ["LoraConfig", "get_peft_model"]),
    ):  # fmt: skip
        for name in names:
            getattr(module, name, None)
    for family in FAMILY_MODULES:
        try:
            importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except ImportError:  # an older transformers without this family
            pass
    tiny.build_tokenizer()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # NVML check (env): no CUDA init before fork
    return target, tiny.installed_versions(), device


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Child:
    """A forked run: its pid (= process group), result pipe, directory and deadline."""

    def __init__(self, index: int, run: dict, target: Callable[[dict], dict], limits: Limits, pool_dir: Path):
        self.index, self.fix = index, run.get("fix")
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=pool_dir))
        self.start = time.monotonic()
        self.deadline = self.start + limits.timeout_s
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            in_child(run, target, limits, self.dir, write_end)
        os.close(write_end)
        try:
            os.setpgid(pid, pid)
        except OSError:  # the child already did it, or already exited
            pass
        self.pid, self.fd, self.data = pid, read_end, b""

    def finish(self, failure: dict | None, limits: Limits) -> tuple[dict, float]:
        """Reap the child; its record (or a failure record) and its peak RSS in MiB."""
        if failure:
            sandbox.kill_group(self.pid)
        _, status, usage = os.wait4(self.pid, 0)
        os.close(self.fd)
        seconds = time.monotonic() - self.start
        stderr_tail = read_tail(self.dir / "stderr.log")
        shutil.rmtree(self.dir, ignore_errors=True)
        if failure is None:
            try:
                record = json.loads(self.data)
            except ValueError:
                code = os.waitstatus_to_exitcode(status)
                failure = sandbox.explain_exit(code, limits, stderr_tail) or sandbox.failure_info(
                    "Crash", f"the run exited without a result; last output: {stderr_tail[-500:]}"
                )
        if failure:
            record = sandbox.failed_record(failure, self.fix, seconds)
        return sandbox.label_memory_limit(record, limits), usage.ru_maxrss / 1024


PROTOCOL_FD: int | None = None
"""The parent's answer channel to the client; closed in every child."""


def in_child(run: dict, target: Callable[[dict], dict], limits: Limits, run_dir: Path, result_fd: int) -> None:
    """Body of a forked child: own group, directory, limits; writes one JSON record and exits."""
    code = 0
    try:
        os.setpgid(0, 0)
        if PROTOCOL_FD is not None:
            os.close(PROTOCOL_FD)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(run_dir / "stderr.log", os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(run_dir)
        os.environ["HOME"] = os.environ["TMPDIR"] = str(run_dir)
        tempfile.tempdir = None
        sandbox.apply_limits(limits)
        record = {**target(run["scenario"]), "fix": run.get("fix")}
        os.write(result_fd, json.dumps(record).encode())
    except BaseException as error:  # noqa: BLE001 - report anything, the parent decides
        try:
            sys.stderr.write(f"{type(error).__name__}: {error}\n")
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    finally:
        os._exit(code)


def read_tail(path: Path, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def serve_request(request: dict, target: Callable[[dict], dict], device: str, workers: int, pool_dir: Path) -> dict:
    """Fork a child per run (at most ``workers`` at once); wait, kill the late ones, collect records."""
    limits = Limits(**request["limits"])
    if device.startswith("cuda"):
        limits = Limits(limits.timeout_s, limits.memory_mb, limits.cpu_s, cuda=True)
    runs = request["runs"]
    records: list[dict | None] = [None] * len(runs)
    child_peak = 0.0
    waiting = list(enumerate(runs))
    active: dict[int, Child] = {}
    start = time.monotonic()
    while waiting or active:
        while waiting and len(active) < workers:
            index, run = waiting.pop(0)
            child = Child(index, run, target, limits, pool_dir)
            active[child.fd] = child
        now = time.monotonic()
        wait = max(0.0, min(c.deadline for c in active.values()) - now)
        ready, _, _ = select.select(list(active), [], [], wait)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                active[fd].data += chunk
                continue
            child = active.pop(fd)
            records[child.index], rss = child.finish(None, limits)
            child_peak = max(child_peak, rss)
        now = time.monotonic()
        for fd, child in list(active.items()):
            if now >= child.deadline:
                del active[fd]
                message = f"the run did not finish within {limits.timeout_s:g} s and was killed"
                records[child.index], rss = child.finish(sandbox.failure_info("Timeout", message), limits)
                child_peak = max(child_peak, rss)
    return {
        "runs": records,
        "child_peak_rss_mb": round(child_peak, 1),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": round(time.monotonic() - start, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Warm reproducer pool (runs inside the sandbox).")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="module:function called with each scenario")
    args = parser.parse_args(argv)
    # the protocol gets the real stdout; anything else printing to stdout goes to stderr
    global PROTOCOL_FD
    PROTOCOL_FD = os.dup(1)
    protocol = os.fdopen(PROTOCOL_FD, "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    start = time.monotonic()
    try:
        target, versions, device = warm_up(args.target)
    except BaseException as error:  # noqa: BLE001 - tell the client why the pool cannot start
        protocol.write(json.dumps({"ready": False, "error": f"{type(error).__name__}: {error}"}) + "\n")
        return 1
    gc.collect()
    gc.freeze()
    pool_dir = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    hello = {
        "ready": True, "versions": versions, "device": device, "startup_s": round(time.monotonic() - start, 3),
        "python_threads": threading.active_count(), "native_threads": native_threads(),
        "torch_threads": sys.modules["torch"].get_num_threads(), "gc_frozen": gc.get_freeze_count(),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
    }  # fmt: skip
    protocol.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        response = serve_request(json.loads(line), target, device, args.workers, pool_dir)
        protocol.write(json.dumps(response) + "\n")
    return 0


# --- outside the sandbox: the client -------------------------------------------------------


class WarmPool:
    """A sandboxed pool parent, started on first use and restarted when it died.

    >>> with WarmPool() as pool:
    ...     records = pool.run([{"fix": None, "scenario": Scenario().model_dump()}])
    """

    def __init__(
        self, *, settings: Settings | None = None, workers: int = 1, target: str = DEFAULT_TARGET,
        import_paths: tuple[str, ...] = (), iso: sandbox.Isolation | None = None,
    ):  # fmt: skip
        """``workers``: runs forked at once; ``target``: ``module:function`` each child calls with
        the scenario; ``import_paths``: extra PYTHONPATH entries (visible read-only in the
        sandbox); ``iso``: the isolation to use (default: `sandbox.isolation`)."""
        self.settings = settings or get_settings()
        self.iso = iso
        self.workers = max(1, workers)
        self.target = target
        self.import_paths = tuple(str(Path(p).resolve()) for p in import_paths)
        self.proc: Any = None
        self.log: IO[bytes] | None = None
        self.dir: Path | None = None
        self.buffer = b""
        self.hello: dict = {}
        self.sandbox = ""
        self.last: dict = {}
        self.lock = threading.Lock()

    # lifecycle

    def start(self) -> None:
        """Start the parent in its sandbox and wait until it has imported the stack."""
        self.close()
        iso = self.iso or sandbox.isolation(self.settings)
        self.dir = sandbox.new_run_dir("lossdoctor-pool-")
        argv = [sys.executable, "-m", "reproducer.pool", "--workers", str(self.workers), "--target", self.target]
        pythonpath = ":".join([str(sandbox.package_dir(self.dir)), *self.import_paths])
        cmd, env, iso = sandbox.command(
            argv, self.dir, env={"PYTHONPATH": pythonpath}, iso=iso, visible=tuple(map(Path, self.import_paths))
        )
        self.sandbox = f"{iso.description}; warm pool: one forked child per run"
        self.log = tempfile.TemporaryFile()
        self.buffer = b""
        self.proc = subprocess.Popen(
            cmd, stdin=-1, stdout=-1, stderr=self.log, cwd=self.dir, env=env, start_new_session=True
        )
        started = time.monotonic()
        line = self._read_line(started + max(300.0, self.settings.repro_timeout_s))
        hello = json.loads(line) if line else {"ready": False, "error": "the pool exited during start-up"}
        if not hello.get("ready"):
            tail = self._log_tail()
            self.close()
            raise ReproductionError(f"The reproducer pool could not start: {hello.get('error')}. {tail}".strip())
        self.hello = {**hello, "cold_start_s": round(time.monotonic() - started, 3)}

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.close()
                    self.proc.wait(timeout=5)
                except Exception:  # broken pipe, or it did not exit in time
                    sandbox.kill_group(self.proc.pid)
                    self.proc.wait()
            else:
                self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> WarmPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def versions(self) -> dict[str, str]:
        return self.hello.get("versions", {})

    @property
    def device(self) -> str:
        return self.hello.get("device", "cpu")

    # runs

    def run(self, runs: list[dict], limits: Limits | None = None) -> list[dict]:
        """Run each ``{"fix", "scenario"}`` in its own forked child; RunRecord dicts in the same order.

        ``limits`` apply to each run (default: from the settings).
        """
        limits = limits or Limits.from_settings(self.settings)
        with self.lock:
            for _attempt in (1, 2):
                if not self.alive:
                    self.start()
                response = self._request(runs, limits)
                if response is not None:
                    self.last = response
                    return response["runs"]
            raise ReproductionError(f"The reproducer pool died twice while running a batch. {self._log_tail()}")

    def _request(self, runs: list[dict], limits: Limits) -> dict | None:
        """Send one request; None when the pool died (it will be restarted)."""
        request = {"runs": runs, "limits": asdict(limits)}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        rounds = math.ceil(max(1, len(runs)) / self.workers)
        deadline = time.monotonic() + limits.timeout_s * rounds + 60
        line = self._read_line(deadline)
        if line is None:
            return None
        return json.loads(line)

    def _read_line(self, deadline: float) -> str | None:
        """The next line the pool writes; None at EOF. Kills the pool and raises past the deadline."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                tail = self._log_tail()
                self.close()
                raise ReproductionError(f"The reproducer pool stopped answering and was killed. {tail}".strip())
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def _log_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 1500))
        text = self.log.read().decode(errors="replace").strip()
        return f"Last output: {text}" if text else ""


if __name__ == "__main__":
    sys.exit(main())
