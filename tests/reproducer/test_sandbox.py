"""The sandbox keeps a run off the network, off the file system, away from the caller's secrets,
and stops it when it hangs or eats memory. Each isolation test runs the same probe outside the
sandbox first (the positive control) and shows that it works there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from bot.errors import ReproductionError
from bot.settings import Settings
from reproducer import sandbox
from reproducer.sandbox import Isolation, Limits

pytestmark = pytest.mark.sandbox

LIMITS = Limits(timeout_s=60, memory_mb=4096, cpu_s=60)



def unsandboxed(code: str) -> subprocess.CompletedProcess:
    """The positive control: the same probe in a plain child process of the test."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def sandboxed(code: str, iso: Isolation, limits: Limits = LIMITS) -> sandbox.Completed:
    return sandbox.run([sys.executable, "-c", code], limits=limits, iso=iso)


CONNECT = """
import socket
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=5) as s:
        print("reached", s.recv(4).decode())
except OSError as e:
    print("blocked", type(e).__name__)
"""


def test_run_cannot_reach_a_listener_on_the_host(bwrap, listener):
    code = CONNECT.format(port=listener)
    assert unsandboxed(code).stdout.strip() == "reached pong"
    done = sandboxed(code, bwrap)
    assert done.failure is None, done.stderr
    assert done.stdout.startswith("blocked ConnectionRefusedError")


def test_run_has_only_a_loopback_interface(bwrap):
    code = "print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))"
    assert unsandboxed(code).stdout.strip() != "['lo']"
    assert sandboxed(code, bwrap).stdout.strip() == "['lo']"


UNIX_CONNECT = """
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    print("reached", s.recv(4).decode())
except OSError as e:
    print("blocked", type(e).__name__)
"""


def test_run_cannot_reach_a_unix_socket_of_the_host(bwrap, tmp_path):
    path = str(tmp_path / "daemon.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"pong")

    answer_once = threading.Thread(target=answer, daemon=True)
    answer_once.start()
    control = subprocess.run([sys.executable, "-c", UNIX_CONNECT, path], capture_output=True, text=True, timeout=30)
    assert control.stdout == "reached pong\n"
    answer_once.join()
    done = sandbox.run([sys.executable, "-c", UNIX_CONNECT, path], limits=LIMITS, iso=bwrap)
    assert done.stdout.startswith("blocked")
    server.close()
    if Path("/run").is_dir() and os.listdir("/run"):  # where the host's daemons keep their sockets
        assert sandboxed("import os; print(os.listdir('/run'))", bwrap).stdout == "[]\n"


WRITE = """
import os, sys
try:
    with open(sys.argv[1], "w") as f:
        f.write("x")
    print("written")
except OSError as e:
    print("refused", type(e).__name__)
"""


def test_run_cannot_write_outside_its_directory(bwrap, tmp_path):
    target = tmp_path / "outside.txt"
    assert subprocess.run([sys.executable, "-c", WRITE, str(target)], capture_output=True, text=True).stdout == "written\n"
    target.unlink()
    done = sandbox.run([sys.executable, "-c", WRITE, str(target)], limits=LIMITS, iso=bwrap)
    assert done.stdout.startswith("refused")
    assert not target.exists()
    in_source = sandbox.SOURCE_ROOT / f"written-by-sandbox-{uuid.uuid4().hex}.txt"
    done = sandbox.run([sys.executable, "-c", WRITE, str(in_source)], limits=LIMITS, iso=bwrap)
    assert done.stdout == "refused OSError\n" and not in_source.exists()


def test_run_writes_in_its_own_directory_which_is_removed_afterwards(bwrap):
    code = "import os; open('f.txt', 'w').write('x'); print(os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'])"
    done = sandboxed(code, bwrap)
    cwd, home, tmp = done.stdout.split()
    assert cwd == home == tmp
    assert not Path(cwd).exists()


def test_run_cannot_read_files_in_the_callers_temp_dir(bwrap, tmp_path):
    (tmp_path / "private.txt").write_text("secret")
    code = f"import os; print(os.path.exists({str(tmp_path / 'private.txt')!r}))"
    assert unsandboxed(code).stdout == "True\n"
    assert sandboxed(code, bwrap).stdout == "False\n"


def test_callers_home_is_hidden_except_the_interpreter(bwrap):
    home = Path.home()
    code = f"import os; print(sorted(os.listdir({str(home)!r})))"
    visible = eval(sandboxed(code, bwrap).stdout)
    needed = sandbox.python_paths(sys.executable) | {sandbox.SOURCE_ROOT}
    allowed = {p.relative_to(home).parts[0] for p in needed if p.is_relative_to(home) and p != home}
    assert set(visible) <= allowed
    assert sandboxed("import torch, reproducer.sandbox", bwrap).failure is None


def test_run_does_not_see_the_callers_secrets(bwrap, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_secret_value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    code = "import os; print(os.environ.get('HF_TOKEN'), os.environ.get('OPENAI_API_KEY'), sorted(os.environ))"
    assert unsandboxed(code).stdout.startswith("hf_test_secret_value sk-test-secret")
    done = sandboxed(code, bwrap)
    assert done.stdout.startswith("None None")
    keys = set(eval(done.stdout.split(" ", 2)[2]))
    assert keys <= set(sandbox.minimal_env(Path("/x"), sys.executable)) | {"PWD", "CUDA_VISIBLE_DEVICES"}
    assert "hf_test_secret_value" not in done.stdout


def test_hanging_run_is_killed_at_the_timeout_and_reported(bwrap):
    marker = f"3600.{uuid.uuid4().int % 10**12}"  # a grandchild `sleep <marker>` must die too
    code = f"import subprocess, time; subprocess.Popen(['sleep', '{marker}']); time.sleep(3600)"
    done = sandboxed("import time; time.sleep(0.1)", bwrap, Limits(timeout_s=30, memory_mb=4096, cpu_s=30))
    assert done.failure is None and done.returncode == 0
    done = sandboxed(code, bwrap, Limits(timeout_s=2, memory_mb=4096, cpu_s=30))
    assert done.failure["type"] == "Timeout"
    assert "did not finish within 2 s" in done.failure["message"]
    assert done.seconds < 15
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert left == []


ALLOCATE = "import mmap; m = mmap.mmap(-1, 6 << 30); print('allocated')"


def test_run_that_takes_too_much_memory_is_stopped_and_reported(bwrap):
    assert unsandboxed(ALLOCATE).stdout == "allocated\n"  # 6 GiB mapped, not touched: fine without a limit
    done = sandboxed(ALLOCATE, bwrap, Limits(timeout_s=30, memory_mb=4096, cpu_s=30))
    assert done.failure["type"] == "MemoryLimit"
    assert "4096 MiB of address space" in done.failure["message"]


def test_run_that_burns_cpu_is_stopped_and_reported(bwrap):
    done = sandboxed("while True: pass", bwrap, Limits(timeout_s=30, memory_mb=4096, cpu_s=1))
    assert done.failure["type"] == "CPULimit"
    assert done.seconds < 15


def test_stopped_run_becomes_a_failed_run_record():
    from bot.models import RunRecord

    record = sandbox.failed_record(sandbox.failure_info("Timeout", "killed after 2 s"), fix="use-lm-collator", seconds=2)
    parsed = RunRecord.model_validate(record)
    assert not parsed.ok and parsed.exception.type == "Timeout" and parsed.fix == "use-lm-collator"


def test_memory_error_in_a_record_is_labelled_as_the_limit():
    record = {"ok": False, "exception": {"type": "MemoryError", "message": ""}}
    assert sandbox.label_memory_limit(record, LIMITS)["exception"]["type"] == "MemoryLimit"
    cuda_oom = {"ok": False, "exception": {"type": "OutOfMemoryError", "message": "CUDA out of memory"}}
    assert sandbox.label_memory_limit(cuda_oom, LIMITS) == cuda_oom


def test_without_bwrap_the_fallback_scrubs_env_and_says_it_has_no_network_isolation(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_secret_value")
    fallback = sandbox.probe("/nonexistent/bwrap")
    assert fallback.bwrap is None
    assert "bwrap unavailable" in fallback.description and "no network isolation" in fallback.description
    done = sandboxed("import os; print(os.environ.get('HF_TOKEN'), os.getcwd() == os.environ['TMPDIR'])", fallback)
    assert done.stdout == "None True\n"
    assert done.sandbox == fallback.description
    done = sandboxed(ALLOCATE, fallback, Limits(timeout_s=30, memory_mb=4096, cpu_s=30))
    assert done.failure["type"] == "MemoryLimit"


@pytest.mark.parametrize("how", ["ci", "settings"])
def test_missing_bwrap_is_an_error_when_required(monkeypatch, how):
    missing = sandbox.probe("/nonexistent/bwrap")
    monkeypatch.setenv("CI", "true" if how == "ci" else "false")
    settings = Settings(require_bwrap=how == "settings")
    with pytest.raises(ReproductionError, match="bubblewrap"):
        sandbox.isolation(settings, found=missing)
    monkeypatch.setenv("CI", "false")
    assert sandbox.isolation(Settings(require_bwrap=False), found=missing) is missing


def test_limits_come_from_settings():
    settings = Settings(repro_timeout_s=7, repro_memory_mb=5000, repro_cpu_s=11)
    limits = Limits.from_settings(settings, runs=3)
    assert (limits.timeout_s, limits.memory_mb, limits.cpu_s) == (21, 5000, 33)
    assert limits.cuda == bool(sandbox.cuda_devices())
