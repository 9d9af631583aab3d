"""The warm pool: same records as a fresh subprocess, and a run that hangs, crashes or eats memory
is stopped and reported without taking the pool down.

The pool under test calls `probe` (below) in each forked child: a scenario with a ``probe`` key
runs that probe, any other scenario goes to the real `reproducer.child.run_scenario`.
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from reproducer import sandbox
from reproducer.pool import WarmPool
from reproducer.sandbox import Limits

pytestmark = pytest.mark.sandbox

HERE = Path(__file__).resolve().parent
SHORT = Limits(timeout_s=3, memory_mb=4096, cpu_s=30)
NORMAL = Limits(timeout_s=120, memory_mb=6144, cpu_s=300)


def probe(scenario: dict) -> dict:
    """Pool target for these tests (runs in a forked child inside the sandbox)."""
    action = scenario.get("probe")
    if action is None:
        from reproducer.child import run_scenario

        return run_scenario(scenario)
    if action == "hang":
        time.sleep(3600)
    if action == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "exit":
        os._exit(3)
    if action == "allocate":
        mmap.mmap(-1, 64 << 30)
    if action == "sleep":
        time.sleep(scenario["seconds"])
    if action == "pid":
        return {"ok": True, "verdict": f"{os.getpid()} {os.getpgid(0)} {os.getcwd()}"}
    if action == "connect":
        try:
            with socket.create_connection(("127.0.0.1", scenario["port"]), timeout=5) as s:
                return {"ok": True, "verdict": "reached " + s.recv(4).decode()}
        except OSError as e:
            return {"ok": True, "verdict": f"blocked {type(e).__name__}"}
    if action == "write":
        try:
            Path(scenario["path"]).write_text("x")
            return {"ok": True, "verdict": "written"}
        except OSError as e:
            return {"ok": True, "verdict": f"refused {type(e).__name__}"}
    if action == "env":
        return {"ok": True, "verdict": str(os.environ.get("HF_TOKEN"))}
    return {"ok": True, "verdict": "done"}


@pytest.fixture(scope="module")
def pool(bwrap):
    """One pool for this module, started by a caller that holds a token."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_TOKEN", "hf_test_secret_value")
        with WarmPool(target="test_pool:probe", import_paths=(str(HERE),), workers=2) as warm:
            yield warm


def runs(*scenarios: dict) -> list[dict]:
    return [{"fix": f"fix-{i}", "scenario": s} for i, s in enumerate(scenarios)]


def test_pool_parent_is_sandboxed_single_threaded_and_frozen(pool):
    assert pool.sandbox.startswith("bwrap")
    assert pool.hello["python_threads"] == 1 and pool.hello["torch_threads"] == 1
    assert pool.hello["gc_frozen"] > 100_000  # the imported stack sits in the permanent generation
    assert set(pool.versions) >= {"torch", "transformers", "trl", "datasets", "peft"}
    assert pool.device in ("cpu", "cuda")


def test_each_run_is_its_own_process_with_its_own_directory(pool):
    first, second = pool.run(runs({"probe": "pid"}, {"probe": "pid"}), NORMAL)
    (pid1, group1, dir1), (pid2, group2, dir2) = first["verdict"].split(), second["verdict"].split()
    assert pid1 != pid2 and pid1 == group1 and pid2 == group2
    assert dir1 != dir2
    assert (first["fix"], second["fix"]) == ("fix-0", "fix-1")


def test_hanging_run_is_killed_and_the_pool_survives(pool):
    start = time.monotonic()
    hung, after = pool.run(runs({"probe": "hang"}, {"probe": "pid"}), SHORT)
    assert hung["exception"]["type"] == "Timeout" and not hung["ok"] and hung["fix"] == "fix-0"
    assert "did not finish within 3 s" in hung["exception"]["message"]
    assert after["ok"]
    assert time.monotonic() - start < 20
    assert pool.alive


@pytest.mark.parametrize(
    ("action", "kind"), [("segfault", "Crash"), ("exit", "Crash"), ("allocate", "MemoryLimit")]
)
def test_crashing_or_greedy_run_is_reported_and_the_pool_survives(pool, action, kind):
    proc_before = pool.proc.pid
    failed, after = pool.run(runs({"probe": action}, {"probe": "pid"}), SHORT)
    assert failed["exception"]["type"] == kind, failed
    assert after["ok"] and pool.proc.pid == proc_before


def test_pool_restarts_when_its_parent_died(pool):
    old = pool.proc.pid
    sandbox.kill_group(old)
    pool.proc.wait()
    (record,) = pool.run(runs({"probe": "pid"}), NORMAL)
    assert record["ok"] and pool.proc.pid != old


def test_runs_in_the_pool_are_isolated(pool, listener, tmp_path):
    target = tmp_path / "outside.txt"
    connect, write, env = {"probe": "connect", "port": listener}, {"probe": "write", "path": str(target)}, {"probe": "env"}
    # positive controls: the same probes outside the sandbox
    assert probe(connect)["verdict"] == "reached pong"
    assert probe(write)["verdict"] == "written"
    assert probe(env)["verdict"] == "hf_test_secret_value"
    target.unlink()
    connected, written, seen = pool.run(runs(connect, write, env), NORMAL)
    assert connected["verdict"] == "blocked ConnectionRefusedError"
    assert written["verdict"].startswith("refused") and not target.exists()
    assert seen["verdict"] == "None"


def test_runs_go_in_parallel_up_to_the_worker_count(pool):
    start = time.monotonic()
    records = pool.run(runs(*[{"probe": "sleep", "seconds": 1.0}] * 4), NORMAL)
    assert all(r["ok"] for r in records)
    assert 1.9 < time.monotonic() - start < 3.5  # 4 one-second runs, 2 at a time


# --- with the real child ---------------------------------------------------------------------


def scenario(**changes) -> dict:
    from reproducer.scenario import Scenario

    return Scenario(**changes).model_dump()


def fresh(batch: list[dict]) -> dict:
    """The same batch through a fresh sandboxed ``python -m reproducer.child``."""
    from reproducer.runner import run_batch

    return run_batch(batch, warm=False)


def test_pool_gives_the_same_records_as_a_fresh_subprocess(pool):
    batch = [
        {"fix": None, "scenario": scenario()},
        {"fix": "use-lm-collator", "scenario": scenario(collator="DataCollatorForLanguageModeling")},
    ]
    warm = pool.run(batch, NORMAL)
    cold = fresh(batch)["runs"]
    baseline, fixed = warm
    assert not baseline["ok"] and baseline["exception"]["type"] == "ValueError"
    assert "did not return a loss" in baseline["exception"]["message"]
    assert fixed["ok"] and fixed["loss"] > 0 and fixed["params_changed"]
    for w, c in zip(warm, cold):
        assert w["fix"] == c["fix"] and w["ok"] == c["ok"]
        assert w["losses"] == c["losses"]
        assert w["loss"] == c["loss"]
        assert w["exception"] == c["exception"]
    again = pool.run(batch[1:], NORMAL)[0]
    assert again["losses"] == fixed["losses"]  # same seed, same loss


def test_run_batch_returns_records_and_evidence(bwrap):
    from reproducer.runner import run_batch

    result = run_batch([{"fix": None, "scenario": scenario(collator="DataCollatorForLanguageModeling")}])
    assert set(result) >= {"runs", "versions", "device", "sandbox", "seconds"}
    assert result["sandbox"].startswith("bwrap") and result["versions"]["transformers"]
    assert result["runs"][0]["ok"] and result["runs"][0]["loss"] > 0


def test_run_batch_with_an_interpreter_that_cannot_run_raises_a_clear_error(bwrap):
    from bot.errors import ReproductionError
    from reproducer.runner import run_batch

    with pytest.raises(ReproductionError, match="could not run with /nonexistent/python"):
        run_batch([{"fix": None, "scenario": scenario()}], python="/nonexistent/python")


def test_pool_that_cannot_start_raises_a_clear_error(bwrap):
    broken = WarmPool(target="no_such_module:run")
    from bot.errors import ReproductionError

    with pytest.raises(ReproductionError, match="could not start.*no_such_module"):
        broken.start()
    assert not broken.alive


def test_pool_without_bwrap_still_scrubs_env_limits_and_times_out_and_says_so(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_secret_value")
    fallback = sandbox.probe("/nonexistent/bwrap")
    with WarmPool(target="test_pool:probe", import_paths=(str(HERE),), iso=fallback) as warm:
        assert warm.sandbox.startswith("subprocess (bwrap unavailable") and "no network isolation" in warm.sandbox
        env, hung, greedy = warm.run(runs({"probe": "env"}, {"probe": "hang"}, {"probe": "allocate"}), SHORT)
    assert env["verdict"] == "None"
    assert hung["exception"]["type"] == "Timeout" and greedy["exception"]["type"] == "MemoryLimit"


def test_pool_process_tree_is_gone_after_close(pool):
    import psutil

    pool.run(runs({"probe": "pid"}), NORMAL)
    tree = [pool.proc.pid] + [p.pid for p in psutil.Process(pool.proc.pid).children(recursive=True)]
    assert len(tree) >= 3  # bwrap, its init in the new PID namespace, the python parent
    pool.close()
    time.sleep(0.2)
    assert not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
