"""The `diagnose` and `lossdoctor` commands as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "trainer-seq2seq-collator.txt"


def run(*args: str, stdin: bytes | None = None, env: dict | None = None, cmd: str = "diagnose") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cmd), *args], input=stdin, capture_output=True, timeout=120,
        env={**os.environ, "LOSSDOCTOR_HOME": str(ROOT / ".pytest_cache" / "ldhome"), **(env or {})},
    )


def test_json_contract_shape():
    proc = run("--no-repro", "--json", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"schema_version", "verdict", "failure_class", "abstain_reason", "candidates", "fixes",
                         "reproduction", "question", "reply", "redacted"}
    assert data["schema_version"] == 1
    assert data["verdict"] == "matched"
    assert data["failure_class"] == "collator_does_not_create_labels"
    assert data["reproduction"] is None
    top = data["candidates"][0]
    assert set(top) == {"entry", "failure_class", "title", "score", "why"} and top["why"]
    assert all(f["status"] == "not_run" for f in data["fixes"])
    assert {"id", "title", "ops", "status", "evidence"} <= set(data["fixes"][0])
    assert "DataCollator" in data["reply"]


def test_stdin_and_several_files(tmp_path):
    tb = tmp_path / "traceback.txt"
    code = tmp_path / "train.py"
    text = EXAMPLE.read_text()
    tb.write_text(text.split("```python")[0] + text.split("```\n\n```")[1])  # the traceback half
    code.write_text(text.split("```python")[1].split("```")[0])  # the code half
    both = json.loads(run("--no-repro", "--json", str(tb), str(code)).stdout)
    assert both["failure_class"] == "collator_does_not_create_labels"
    piped = json.loads(run("--no-repro", "--json", "-", stdin=EXAMPLE.read_bytes()).stdout)
    assert piped["failure_class"] == "collator_does_not_create_labels"


def test_unknown_exits_3_with_reason():
    proc = run("--no-repro", "--json", "-", stdin=b"hello, how do I make pancakes?\n")
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["verdict"] == "unknown" and data["failure_class"] is None and data["abstain_reason"]


def test_out_of_scope_abstains():
    oom = b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which 1.02 GiB is free.\n"
    proc = run("--no-repro", "--json", "-", stdin=oom)
    data = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert data["failure_class"] is None and "not a loss" in data["abstain_reason"]


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["/nonexistent/file.txt"], None, 4, "cannot read /nonexistent/file.txt"),
        (["-"], b"", 4, "empty"),
        (["-"], b"\x00\x01\x02\xff" * 200, 4, "binary"),
        (["--bogus-flag", "x"], None, 2, "unrecognized arguments"),
    ],
)
def test_bad_input_gives_clear_message_and_code(args, stdin, code, message):
    proc = run("--no-repro", *args, stdin=stdin)
    assert proc.returncode == code
    assert message.lower() in proc.stderr.decode().lower()
    assert "Traceback" not in proc.stderr.decode()


def test_directory_and_oversize_input(tmp_path):
    proc = run("--no-repro", str(tmp_path))
    assert proc.returncode == 4 and "directory" in proc.stderr.decode()
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 2048)
    proc = run("--no-repro", str(big), env={"LOSSDOCTOR_MAX_INPUT_BYTES": "1024"})
    assert proc.returncode == 4 and "larger than" in proc.stderr.decode()


def test_secrets_never_reach_output():
    secret = "hf_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"
    paste = EXAMPLE.read_text() + f"\nHF_TOKEN={secret}\n"
    proc = run("--no-repro", "--json", "-", stdin=paste.encode())
    assert secret not in proc.stdout.decode() and secret not in proc.stderr.decode()
    data = json.loads(proc.stdout)
    assert "hf_token" in data["redacted"]
    assert "rotate" in data["reply"]


def test_human_output_is_plain_when_not_a_tty():
    proc = run("--no-repro", str(EXAMPLE))
    out = proc.stdout.decode()
    assert proc.returncode == 0
    assert out.startswith("verdict: matched")
    assert "\x1b[" not in out


def test_no_repro_does_not_import_the_training_stack():
    code = (
        "import sys; sys.argv=['diagnose','--no-repro','--json',%r]\n"
        "from bot.cli import diagnose_main\n"
        "try:\n    diagnose_main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','datasets','langchain','trl') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n" % str(EXAMPLE)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert "HEAVY=" in proc.stderr.decode()
    assert proc.stderr.decode().split("HEAVY=")[1].strip() == ""


def test_lossdoctor_kb_commands():
    listing = run("kb", "list", cmd="lossdoctor")
    assert listing.returncode == 0 and "seq2seq-collator-creates-no-labels" in listing.stdout.decode()
    shown = run("kb", "show", "seq2seq-collator-creates-no-labels", cmd="lossdoctor")
    assert json.loads(shown.stdout)["failure_class"] == "collator_does_not_create_labels"
    missing = run("kb", "show", "no-such-entry", cmd="lossdoctor")
    assert missing.returncode == 2 and "no knowledge entry" in missing.stderr.decode()
    coverage = run("kb", "coverage", cmd="lossdoctor")
    assert coverage.returncode == 0
    assert re.search(r"^\d+ of \d+ evidence items are exercised by a match/ example; \d+ are not$",
                     coverage.stdout.decode(), re.MULTILINE)


def test_lossdoctor_eval(tmp_path):
    rows = tmp_path / "set.jsonl"
    rows.write_text(
        json.dumps({"user_text": EXAMPLE.read_text(), "failure_class": "collator_does_not_create_labels"}) + "\n"
        + json.dumps({"user_text": "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", "failure_class": "out_of_scope"}) + "\n"
    )
    proc = run("eval", str(rows), "--json", cmd="lossdoctor")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["reports"] == 2 and data["top1"] == 1.0 and data["abstain_recall"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    proc = run("eval", str(bad), cmd="lossdoctor")
    assert proc.returncode == 4 and "not valid JSON" in proc.stderr.decode()
    proc = run("eval", str(rows), str(bad), cmd="lossdoctor")
    assert proc.returncode == 4 and "bad.jsonl:1" in proc.stderr.decode()


def test_lossdoctor_eval_scores_several_files_together_and_names_misses_by_file(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"user_text": EXAMPLE.read_text(), "failure_class": "collator_does_not_create_labels"}) + "\n")
    second.write_text(json.dumps({"user_text": EXAMPLE.read_text(), "failure_class": "pad_token_missing"}) + "\n")
    proc = run("eval", str(first), str(second), "--misses", cmd="lossdoctor")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "reports: 2" in out and "top-1: 50.0% (1/2)" in out
    assert f"{second}:1: expected pad_token_missing, got collator_does_not_create_labels" in out


def test_write_repro_writes_a_script_that_shows_failure_then_fixes(tmp_path):
    out = tmp_path / "repro"
    proc = run("--no-repro", "--json", "--write-repro", str(out), str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    scripts = list(out.glob("*.py"))
    assert len(scripts) == 1
    source = scripts[0].read_text()
    assert "import bot" not in source and "from reproducer" not in source and "lossdoctor import" not in source
    # a fresh process, in an empty directory, with nothing of lossdoctor on its path
    done = subprocess.run([sys.executable, "-I", str(scripts[0])], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sections = done.stdout.split("== ")[1:]
    assert sections[0].startswith("baseline") and "failed: ValueError: The model did not return a loss" in sections[0]
    fixes = {s.split("\n", 1)[0].strip(): s for s in sections[1:]}
    assert {"use-lm-collator", "mask-prompt-in-labels"} <= set(fixes)
    for name, text in fixes.items():
        assert "ok: trained" in text and "weights changed: True" in text, name


def test_eval_top3_counts_the_first_three_candidates_as_the_json_lists_them():
    """An out-of-scope candidate in the first three places takes a place, as in the JSON an outside check reads."""
    from bot.models import Candidate, Diagnosis
    from knowledge.evaluate import EvalResult, score

    def cand(cls):
        return Candidate(entry=cls, failure_class=cls, title=cls, score=1.0, why=[])

    listed = [cand("fp16_overflow_nan"), cand("out_of_scope"), cand("deepspeed_zero2_nan"), cand("attention_kernel_nan")]
    diagnosis = Diagnosis(verdict="matched", failure_class="fp16_overflow_nan", candidates=listed)
    result = EvalResult()
    score(diagnosis, "deepspeed_zero2_nan", result, 1)
    score(diagnosis, "attention_kernel_nan", result, 2)  # fourth in the list: not in the first three
    assert (result.top1, result.top3) == (0, 1)
