"""End to end on the user's own versions: `diagnose` builds (or reuses) an environment with the
report's library versions when the installed stack does not reproduce it.

Slow: a cold environment build downloads and installs the stack (about 2 minutes, 1.5 GB);
environments are cached under LOSSDOCTOR_TEST_ENVS (default ~/.cache/lossdoctor-test-envs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_HOME = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))

pytestmark = pytest.mark.slow


def diagnose_json(path: Path) -> dict:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "diagnose"), "--json", str(path)],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "LOSSDOCTOR_HOME": str(TEST_HOME)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_unsloth_seed_report_is_verified_on_its_own_trl_release():
    d = diagnose_json(ROOT / "examples" / "unsloth-seq2seq-collator.txt")
    assert d["verdict"] == "verified"
    assert d["failure_class"] == "collator_does_not_create_labels"
    repro = d["reproduction"]
    # the baseline ran on the versions the report states (unsloth itself mapped onto TRL)
    assert repro["versions"]["trl"] == "0.15.2" and repro["versions"]["transformers"] == "4.48.3"
    assert "did not return a loss" in repro["baseline"]["exception"]["message"]
    assert "unsloth" in repro["note"] and "not installed" in repro["note"]
    status = {f["id"]: f for f in d["fixes"]}
    assert status["drop-seq2seq-collator-in-sfttrainer"]["status"] == "verified"  # remove the collator
    assert status["mask-prompt-in-labels"]["status"] == "verified"  # train on responses only
    upgrade = status["upgrade-trl"]
    assert upgrade["status"] == "verified"
    assert upgrade["evidence"]["versions"]["trl"] != "0.15.2"  # it ran on the upgraded release


def test_lora_gradient_checkpointing_reproduces_on_transformers_4_55_and_not_on_current():
    example = ROOT / "examples" / "lora-gradient-checkpointing-4.55.txt"
    d = diagnose_json(example)
    assert d["verdict"] == "verified"
    assert d["failure_class"] == "no_grad_gradient_checkpointing"
    repro = d["reproduction"]
    assert repro["versions"]["transformers"] == "4.55.4"
    assert "element 0 of tensors does not require grad" in repro["baseline"]["exception"]["message"]
    status = {f["id"]: f for f in d["fixes"]}
    assert status["enable-input-require-grads"]["status"] == "verified"
    assert status["upgrade-transformers"]["status"] == "verified"
    assert status["upgrade-transformers"]["evidence"]["versions"]["transformers"] != "4.55.4"

    # the same scenario on the installed (current) stack does not fail, and lossdoctor says so
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "diagnose"), "--json", "--no-build-envs", str(example)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LOSSDOCTOR_HOME": str(TEST_HOME)},
    )
    current = json.loads(proc.stdout)
    assert current["verdict"] == "matched"
    assert current["reproduction"]["reproduced"] is False
    assert current["reproduction"]["baseline"]["ok"] is True
    assert "4.55.4" in current["reproduction"]["note"]
