"""reproducer.script: a standalone script that shows the failure and each fix, in a fresh process."""

from __future__ import annotations

import ast
import subprocess
import sys

from knowledge.schema import Op
from reproducer.ops import apply_ops
from reproducer.scenario import Scenario
from reproducer.script import script_text, write_script

BASELINE = Scenario(labels_mode="none", collator="DataCollatorForSeq2Seq")
RUNS = [
    ("baseline", BASELINE.model_dump()),
    ("use-lm-collator", apply_ops(BASELINE, [Op(op="use_lm_collator")]).model_dump()),
    ("keep-train-on-responses-only", apply_ops(BASELINE, [Op(op="mask_prompt_labels")]).model_dump()),
]
# after the script, no module of lossdoctor may be loaded
CHECK = (
    "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__');"
    "print('lossdoctor modules:', sorted({m.split('.')[0] for m in sys.modules} & {'reproducer', 'bot', 'knowledge'}))"
)


def test_script_is_plain_python_without_lossdoctor_imports():
    text = script_text(RUNS, name="repro.py")
    tree = ast.parse(text)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"reproducer", "bot", "knowledge", "pydantic"}
    assert text.count("from __future__ import annotations") == 1
    assert "standalone-script" not in text and "if __name__ == \"__main__\":\n    sys.exit(main())" not in text


def test_script_runs_in_a_fresh_process_and_shows_the_failure_then_each_fix(tmp_path):
    path = write_script(RUNS, tmp_path / "repro_seq2seq.py")
    assert path.exists() and path.stat().st_mode & 0o100
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    sections = out.stdout.split("== ")
    assert sections[0].startswith("versions: {'torch'")
    baseline, lm, masked = sections[1:4]
    assert baseline.startswith("baseline\n   failed: ValueError: The model did not return a loss from the inputs")
    assert "inputs it received are input_ids,attention_mask,labels." in baseline
    assert lm.startswith("use-lm-collator\n   ok: trained, loss ") and "weights changed: True" in lm
    assert masked.startswith("keep-train-on-responses-only\n   ok: trained") and "prompt tokens supervised: 0," in masked
    assert out.stdout.rstrip().endswith("lossdoctor modules: []")
