"""`run_batch`: the one entry point the core calls to run scenarios in the sandbox.

- ``warm=True`` (default, installed interpreter): a process-wide `WarmPool` forks a child per
  run from a sandboxed parent that imported the stack once (about 0.1 s a run once warm).
- ``warm=False``, or ``python=`` another interpreter (a venv with other library versions from
  `reproducer.envs`): one fresh sandboxed ``python -m reproducer.child`` for the whole batch, with
  PYTHONPATH holding only our own packages so that interpreter keeps its own libraries.

Either way each run comes back as a RunRecord-shaped dict, in the order given; a run the
sandbox had to stop (timeout, memory, CPU, crash) comes back as a failed record that says so.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from typing import Any

from bot.errors import ReproductionError
from bot.settings import get_settings
from reproducer import sandbox
from reproducer.pool import WarmPool
from reproducer.sandbox import Limits

_pool: WarmPool | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """Runs forked at once: one per two cores, at most 4 (1 on a 2-core machine)."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def shared_pool() -> WarmPool:
    """The process-wide warm pool for the installed interpreter (closed at exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WarmPool(settings=get_settings(), workers=default_workers())
            atexit.register(close_shared_pool)
        return _pool


def close_shared_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


def run_batch(runs: list[dict], *, python: str | None = None, warm: bool = True) -> dict[str, Any]:
    """Run ``[{"fix": None | id, "scenario": Scenario.model_dump()}...]`` sandboxed.

    Returns ``{"runs": [RunRecord dicts], "versions", "device", "sandbox", "seconds"}``.
    Raises `ReproductionError` when the sandbox cannot run at all (bwrap required but missing,
    the interpreter does not start, the pool dies twice).
    """
    start = time.monotonic()
    if python is None and warm:
        pool = shared_pool()
        records = pool.run(runs)
        return {
            "runs": records, "versions": pool.versions, "device": pool.device, "sandbox": pool.sandbox,
            "seconds": round(time.monotonic() - start, 3),
        }  # fmt: skip
    result = run_fresh(runs, python=python or sys.executable)
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def run_fresh(runs: list[dict], *, python: str) -> dict[str, Any]:
    """One sandboxed ``python -m reproducer.child`` for the whole batch."""
    limits = Limits.from_settings(runs=len(runs))
    done = sandbox.run(
        [python, "-m", "reproducer.child"], stdin=json.dumps({"runs": runs}), limits=limits, python=python
    )
    if done.failure is not None:
        if done.failure["type"] == "Crash" and (done.returncode or 0) > 0 and not done.stdout.strip():
            raise ReproductionError(f"The reproducer could not run with {python}: {done.failure['message']}")
        records = [sandbox.failed_record(done.failure, run.get("fix"), done.seconds) for run in runs]
        return {"runs": records, "versions": {}, "device": None, "sandbox": done.sandbox}
    try:
        output = json.loads(last_json_line(done.stdout))
    except ValueError as error:
        raise ReproductionError(f"The reproducer printed no result ({error}); stderr: {done.stderr[-500:]}") from None
    records = [sandbox.label_memory_limit(record, limits) for record in output["runs"]]
    return {"runs": records, "versions": output.get("versions", {}), "device": output.get("device"),
            "sandbox": done.sandbox}  # fmt: skip


def last_json_line(text: str) -> str:
    """The result object: the whole output, or its last line that looks like JSON."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return text
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return line
    return text
