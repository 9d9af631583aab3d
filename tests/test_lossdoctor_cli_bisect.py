"""`lossdoctor bisect` on the bundled Unsloth seed report: the failure (SFTTrainer +
DataCollatorForSeq2Seq on a text dataset) disappears when trl's SFTTrainer starts building
labels itself. Builds (or reuses) one environment per probed trl release."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))


@pytest.mark.slow
def test_bisect_finds_the_trl_release_that_fixed_the_seed_report():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lossdoctor"), "bisect", str(ROOT / "examples" / "unsloth-seq2seq-collator.txt"),
         "--package", "trl", "--versions", "1.6.0,1.7.0,1.16.0", "--entry", "seq2seq-collator-creates-no-labels",
         "--expect", "did not return a loss"],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "LOSSDOCTOR_HOME": str(TEST_HOME)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fixed in 1.7.0" in proc.stdout, proc.stdout
    assert "environments built" in proc.stdout or "built" in proc.stdout


def test_bisect_refuses_an_unreadable_report(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lossdoctor"), "bisect", str(tmp_path / "missing.txt"), "--package", "trl", "--versions", "1.0.0,1.1.0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4 and "cannot read" in proc.stderr
