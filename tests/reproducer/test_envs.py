"""EnvManager: cache keying, locking, completion marker, eviction, registry checks, scrubbed pip env.

Unit tests run the real EnvManager against a stand-in interpreter (``fake_python``, written to
tmp_path) that answers ``-m venv``, ``-m pip index versions``, ``-m pip install`` and the version
probe the way Python and pip do, and logs the environment it was started with. Tests marked slow
build a real legacy environment with pip (about 100 s and 1.5 GB the first time on a machine;
cached under ~/.cache/lossdoctor-test-envs after that).
"""

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.storage import Storage
from reproducer.envs import (
    MARKER,
    EnvBuildFailed,
    EnvManager,
    RegistryUnreachable,
    VersionNotFound,
    file_lock,
    installed_versions,
    is_locked,
    scrubbed_env,
)
from reproducer.versions import VersionRefused

FAKE_PYTHON = '''#!{python}
"""Stand-in interpreter: venv, pip index/install and the version probe, driven by files beside it."""
import json, os, re, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = Path({state!r})
args = sys.argv[1:]
with open(STATE / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"args": args, "env": dict(os.environ)}}) + "\\n")
index = json.loads((STATE / "index.json").read_text())

if args[:2] == ["-m", "venv"]:
    target = Path(args[-1])
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").write_text(Path(__file__).read_text())
    (target / "bin" / "python").chmod(0o755)
elif args[:4] == ["-m", "pip", "index", "versions"]:
    name = args[4]
    if (STATE / "unreachable").exists():
        print(f"Could not fetch URL https://registry.invalid/simple/{{name}}/: connection error: refused - skipping",
              file=sys.stderr)
        print("ERROR: No matching distribution found for " + name, file=sys.stderr)
        sys.exit(1)
    elif name in index:  # pip's plain-text answer
        print(f"{{name}} ({{index[name][0]}})")
        print("Available versions: " + ", ".join(index[name]))
    else:
        print("ERROR: No matching distribution found for " + name, file=sys.stderr)
        sys.exit(1)
elif args[:3] == ["-m", "pip", "--python"]:
    if (STATE / "fail").exists():
        print("ERROR: ResolutionImpossible: simulated", file=sys.stderr)
        sys.exit(1)
    time.sleep(float((STATE / "install_seconds").read_text()) if (STATE / "install_seconds").exists() else 0)
    env_dir = Path(args[3]).parent.parent
    installed = {{}}
    for requirement in args[args.index("install") + 1:]:
        if not re.fullmatch(r"[a-z][a-z0-9-]*(==[0-9.]+|<[0-9.]+)?", requirement):
            continue
        name, _, version = requirement.partition("==")
        if "<" not in name:
            installed[name] = version or index[name][0]
    (env_dir / "payload.bin").write_bytes(b"x" * 100_000)
    (env_dir / "installed.json").write_text(json.dumps(installed))
elif "-c" in args:
    if "--import" in args:
        env_dir = Path(sys.argv[0]).parent.parent
        print(json.dumps(json.loads((env_dir / "installed.json").read_text())))
    else:
        print("3.11")
else:
    sys.exit("fake python: unexpected " + repr(args))
'''

INDEX = {
    "transformers": ["5.24.0", "4.55.4", "4.55.3"],
    "trl": ["1.16.0", "0.20.0", "0.19.1"],
    "accelerate": ["1.15.0"],
    "datasets": ["5.2.0"],
    "peft": ["0.21.2"],
    "torch": ["2.13.0"],
}

SECRETS = {
    "HF_TOKEN": "hf_secret",
    "HUGGING_FACE_HUB_TOKEN": "hf_secret2",
    "OPENAI_API_KEY": "sk-secret",
    "SLACK_BOT_TOKEN": "xoxb-secret",
    "SLACK_SIGNING_SECRET": "slack-secret",
    "DISCORD_TOKEN": "discord-secret",
    "GITHUB_TOKEN": "ghp_secret",
    "GITHUB_WEBHOOK_SECRET": "gh-hook-secret",
    "LOSSDOCTOR_GITHUB_WEBHOOK_SECRET": "ld-secret",
    "LOSSDOCTOR_OPENAI_API_KEY": "ld-key",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "PIP_PASSWORD": "pip-secret",
}


class Fake:
    """A stand-in interpreter and its state directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "fake"
        self.state.mkdir()
        (self.state / "index.json").write_text(json.dumps(INDEX))
        self.python = self.state / "python"
        self.python.write_text(FAKE_PYTHON.format(python=sys.executable, state=str(self.state)))
        self.python.chmod(0o755)
        self.settings = Settings(home=tmp_path / "home", env_disk_budget_gb=100.0)

    def manager(self) -> EnvManager:
        return EnvManager(self.settings, Storage(self.settings), base_python=str(self.python))

    def calls(self, kind: str | None = None) -> list[dict]:
        path = self.state / "calls.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if kind == "install":
            rows = [r for r in rows if r["args"][:3] == ["-m", "pip", "--python"]]
        if kind == "index":
            rows = [r for r in rows if r["args"][:4] == ["-m", "pip", "index", "versions"]]
        return rows

    def touch(self, name: str, text: str = "") -> None:
        (self.state / name).write_text(text)


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


LEGACY = {"transformers": "4.55.4", "trl": "0.19.1"}


def test_scrubbed_env_keeps_only_what_pip_needs():
    environ = dict(SECRETS, PATH="/usr/bin", HOME="/root", PIP_FIND_LINKS="/opt/wheels", LOSSDOCTOR_HOME="/srv/ld",
                   HTTPS_PROXY="http://proxy:3128", PYTHONPATH="/somewhere", LD_PRELOAD="/evil.so")
    env = scrubbed_env(environ)
    assert not set(SECRETS) & set(env)
    assert {"PATH", "HOME", "PIP_FIND_LINKS", "HTTPS_PROXY"} <= set(env)
    assert "LOSSDOCTOR_HOME" not in env and "PYTHONPATH" not in env and "LD_PRELOAD" not in env
    assert not any(value in env.values() for value in SECRETS.values())


def test_build_records_versions_marker_and_metadata(fake):
    manager = fake.manager()
    lines = []
    env = manager.ensure(LEGACY, progress=lines.append)
    assert env.built and env.path is not None and (env.path / MARKER).exists()
    assert env.python == env.path / "bin" / "python"
    assert env.versions == {"torch": "2.13.0", "transformers": "4.55.4", "trl": "0.19.1",
                            "accelerate": "1.15.0", "datasets": "5.2.0", "peft": "0.21.2"}
    assert "building environment transformers==4.55.4 trl==0.19.1 (about a minute)..." in lines
    install = fake.calls("install")[0]["args"]
    assert install[install.index("install") + 1:] == [
        "--only-binary=:all:", "--no-input", "--progress-bar=off", "torch==2.13.0", "transformers==4.55.4",
        "trl==0.19.1", "accelerate", "datasets", "peft"]
    [meta] = manager.cached()
    assert meta["key"] == env.key and meta["versions"] == env.versions
    assert meta["size_bytes"] >= 100_000 and meta["last_used"] > 0


def test_unstated_companion_gets_its_cap(fake):
    env = fake.manager().ensure({"trl": "0.19.1"})
    install = fake.calls("install")[0]["args"]
    assert install[-2:] == ["transformers", "transformers<4.56"]
    assert env.versions["trl"] == "0.19.1"


def test_second_ensure_is_a_cache_hit(fake):
    first = fake.manager().ensure(LEGACY)
    second = fake.manager().ensure({"trl": "0.19.1", "transformers": "4.55.4", "torch": "2.5.1+cu124"})
    assert not second.built and second.path == first.path and second.versions == first.versions
    assert second.notes == ("torch 2.5.1: recorded, not matched (torch 2.13.0 CPU build).",)
    assert len(fake.calls("install")) == 1


def test_a_cached_env_that_meets_the_pins_and_caps_is_reused(fake):
    legacy = fake.manager().ensure(LEGACY)
    same_trl = fake.manager().ensure({"trl": "0.19.1"})  # plan: trl==0.19.1, transformers<4.56
    assert not same_trl.built and same_trl.key == legacy.key
    other = fake.manager().ensure({"trl": "0.20.0"})
    assert other.built and other.key != legacy.key
    assert len(fake.calls("install")) == 2
    assert {m["key"]: m["requested"] for m in fake.manager().cached()}[legacy.key] == {
        "transformers": "4.55.4", "trl": "0.19.1", "torch": "2.13.0"}


def test_pip_runs_without_the_bots_secrets(fake, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    fake.manager().ensure(LEGACY)
    calls = fake.calls()
    assert {tuple(c["args"][:2]) for c in calls} >= {("-m", "venv"), ("-m", "pip"), ("-I", "-c")}
    for call in calls:
        assert not set(SECRETS) & set(call["env"]), call["args"]
        assert not any(value in call["env"].values() for value in SECRETS.values())


def test_pip_index_url_is_passed_when_set(fake):
    fake.settings = Settings(home=fake.settings.home, pip_index_url="https://mirror.example/simple")
    fake.manager().ensure(LEGACY)
    calls = fake.calls("install") + fake.calls("index")
    assert len(calls) == 3
    for call in calls:
        assert call["args"][call["args"].index("--index-url") + 1] == "https://mirror.example/simple"


def test_nonexistent_version_is_refused_before_building(fake):
    with pytest.raises(VersionNotFound, match=r"trl==0\.99\.0 \(latest known: 1\.16\.0\)"):
        fake.manager().ensure({"trl": "0.99.0"})
    assert fake.calls("install") == []
    assert [p.name for p in fake.settings.envs_dir.iterdir()] == [".locks"]


def test_untrusted_pins_never_reach_pip(fake):
    for bad in ({"transformers": "4.0; rm -rf /"}, {"--index-url http://evil": "1.0"}, {"evil-package": "1.0"}):
        with pytest.raises(VersionRefused):
            fake.manager().ensure(bad)
    assert fake.calls() == []


def test_unreachable_registry_is_a_clear_error(fake):
    fake.touch("unreachable")
    with pytest.raises(RegistryUnreachable, match="could not be reached .*connection error"):
        fake.manager().ensure(LEGACY)
    assert fake.calls("install") == []


def test_unreachable_registry_with_real_pip(tmp_path):
    with socket.socket() as sock:  # a port on this machine nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(home=tmp_path, pip_index_url=f"http://127.0.0.1:{port}/simple")
    manager = EnvManager(settings, Storage(settings))
    with pytest.raises(RegistryUnreachable, match=f"127.0.0.1:{port}"):
        manager.ensure({"trl": "0.19.1"})


def test_failed_build_leaves_nothing_behind(fake):
    fake.touch("fail")
    with pytest.raises(EnvBuildFailed, match="pip install failed:\nERROR: ResolutionImpossible: simulated"):
        fake.manager().ensure(LEGACY)
    assert [p.name for p in fake.settings.envs_dir.iterdir()] == [".locks"]
    assert fake.manager().cached() == []


def test_half_built_env_is_rebuilt_not_used(fake):
    manager = fake.manager()
    env = manager.ensure(LEGACY)
    (env.path / MARKER).unlink()  # as if the process died before finishing
    again = fake.manager().ensure(LEGACY)
    assert again.built and (again.path / MARKER).exists()
    assert len(fake.calls("install")) == 2


def test_two_processes_build_the_same_env_once(fake):
    fake.touch("install_seconds", "1.5")
    results, errors = [], []

    def build():
        try:
            results.append(fake.manager().ensure(LEGACY))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.built for r in results) == [False, True]
    assert results[0].path == results[1].path
    assert len(fake.calls("install")) == 1


def test_file_lock_is_exclusive(tmp_path):
    lock = tmp_path / "x.lock"
    waited = []
    done = threading.Event()

    def second_holder():
        with file_lock(lock, on_wait=lambda: waited.append(1)):
            done.set()

    with file_lock(lock):
        assert is_locked(lock)
        thread = threading.Thread(target=second_holder)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set() and waited == [1]
    thread.join(5)
    assert done.is_set() and not is_locked(lock)


def test_evict_removes_least_recently_used_past_budget(fake):
    manager = fake.manager()
    a = manager.ensure({"trl": "0.19.1", "transformers": "4.55.4"})
    b = manager.ensure({"trl": "0.20.0", "transformers": "4.55.4"})
    c = manager.ensure({"trl": "0.19.1", "transformers": "4.55.3"})
    time.sleep(0.01)
    manager.ensure({"trl": "0.19.1", "transformers": "4.55.4"})  # a is now the most recently used
    size = max(m["size_bytes"] for m in manager.cached())
    removed = manager.evict(budget_gb=2.5 * size / 1e9)
    assert removed == [b.key]
    assert not b.path.exists() and a.path.exists() and c.path.exists()
    assert [m["key"] for m in manager.cached()] == [c.key, a.key]
    assert manager.evict(budget_gb=0, keep=(a.key,)) == [c.key]
    assert [m["key"] for m in manager.cached()] == [a.key]


def test_evict_skips_an_env_being_built(fake):
    manager = fake.manager()
    env = manager.ensure(LEGACY)
    with file_lock(manager.root / ".locks" / f"{env.key}.lock"):
        assert manager.evict(budget_gb=0) == []
    assert manager.evict(budget_gb=0) == [env.key]


def test_env_over_budget_is_evicted_after_a_new_build(fake):
    fake.settings = Settings(home=fake.settings.home, env_disk_budget_gb=150_000 / 1e9)  # room for one env
    manager = fake.manager()
    old = manager.ensure(LEGACY)
    new = manager.ensure({"trl": "0.20.0"})
    assert not old.path.exists() and new.path.exists()


def test_installed_stack_is_used_when_it_already_matches(fake):
    here = installed_versions()
    env = fake.manager().ensure({"trl": here["trl"], "transformers": here["transformers"]})
    assert env.installed_stack and env.key == "installed" and env.python == Path(sys.executable)
    assert env.versions["trl"] == here["trl"]
    assert fake.calls() == []


# --- real builds ------------------------------------------------------------------------------

TEST_HOME = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))


def legacy_manager() -> EnvManager:
    settings = Settings(home=TEST_HOME, env_disk_budget_gb=8.0)
    return EnvManager(settings, Storage(settings))


@pytest.mark.slow
def test_real_legacy_env_has_the_requested_versions():
    lines = []
    started = time.monotonic()
    env = legacy_manager().ensure(LEGACY, progress=lines.append)
    print(f"legacy env: built={env.built} {time.monotonic() - started:.1f}s {lines}")
    assert {name: env.versions[name] for name in LEGACY} == LEGACY
    assert env.versions["torch"].startswith("2.13.0")
    probe = legacy_manager()._probe(env.python, legacy_manager().pip_env())
    assert probe == env.versions
    again = legacy_manager().ensure(LEGACY)
    assert not again.built and again.path == env.path


@pytest.mark.slow
def test_real_nonexistent_version_is_refused():
    with pytest.raises(VersionNotFound, match=r"trl==0\.19\.99"):
        legacy_manager().ensure({"trl": "0.19.99"})


GC_LORA = dict(lora=True, gradient_checkpointing=True, labels_mode="input_ids", collator="DataCollatorForSeq2Seq")
SEED_CASE = dict(trainer="SFTTrainer", collator="DataCollatorForSeq2Seq", dataset_format="text")


def scenario_runs() -> list[dict]:
    from reproducer.scenario import Scenario

    return [
        {"fix": None, "scenario": Scenario(**GC_LORA, use_reentrant=True).model_dump()},
        {"fix": None, "scenario": Scenario(**GC_LORA, use_reentrant=None).model_dump()},
        {"fix": "enable_input_require_grads",
         "scenario": Scenario(**GC_LORA, use_reentrant=True, enable_input_require_grads=True).model_dump()},
        {"fix": None, "scenario": Scenario(**SEED_CASE).model_dump()},
    ]


def trains(record: dict) -> bool:
    loss = record["loss"]
    return record["ok"] and loss is not None and 0 < loss < float("inf") and record["params_changed"]


@pytest.mark.slow
@pytest.mark.sandbox
def test_real_legacy_env_reproduces_what_the_current_stack_does_not():
    """GC + LoRA fails on transformers 4.55 and the seed case on trl 0.19; both train on the current stack."""
    from reproducer.runner import run_batch

    env = legacy_manager().ensure(LEGACY)
    legacy = run_batch(scenario_runs(), python=str(env.python), warm=False)
    assert {name: legacy["versions"][name] for name in LEGACY} == LEGACY  # what the child imported
    assert all({n: r["versions"][n] for n in LEGACY} == LEGACY for r in legacy["runs"])
    gc_reentrant, gc_default, gc_fix, seed = legacy["runs"]
    for record in (gc_reentrant, gc_default):
        assert record["exception"]["type"] == "RuntimeError"
        assert "element 0 of tensors does not require grad" in record["exception"]["message"]
    assert trains(gc_fix)
    assert seed["exception"]["type"] == "ValueError"
    assert "did not return a loss" in seed["exception"]["message"]

    current = run_batch(scenario_runs())
    assert current["versions"]["transformers"] == installed_versions()["transformers"]
    assert all(trains(record) for record in current["runs"]), [r["exception"] for r in current["runs"]]
