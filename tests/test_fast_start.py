"""The cold-start shortcuts of ``diagnose --no-repro`` change nothing but its speed.

- the compiled-regex snapshot (`bot.regex_snapshot`) rebuilds patterns equal, code included,
  to what ``re`` compiles itself;
- the output is byte for byte the same with and without snapshots (KB and regexes), and the
  same as ``Diagnosis.model_dump_json()`` of an in-process run (full pydantic validation);
- the fast path imports neither the training stack nor what it does not need.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bot import regex_snapshot

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.txt"))
EVAL_SAMPLES = 150
"""Eval lines taken across all eval/*.jsonl (every n-th line of them together) besides the bundled examples."""


def _python(code: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOSSDOCTOR_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=120, cwd=ROOT)


def _diagnose(home: Path, path: Path) -> subprocess.CompletedProcess:
    code = "from bot.cli import diagnose_main\ndiagnose_main()"
    return _python(code, home, "--no-repro", "--json", str(path))


def _reports(tmp_path: Path) -> list[Path]:
    """The bundled examples and EVAL_SAMPLES eval lines spread evenly over all the sets (a fixed number,
    so the test does not grow with the eval sets: each report costs two cold subprocess runs)."""
    paths = list(EXAMPLES)
    lines = [(source.stem, number, line) for source in sorted((ROOT / "eval").glob("*.jsonl"))
             for number, line in enumerate(source.read_text(encoding="utf-8").splitlines())]
    step = max(1, len(lines) // EVAL_SAMPLES)
    for stem, number, line in lines[::step][:EVAL_SAMPLES]:
        try:  # eval sets are checked by test_eval_set; a line being written right now is skipped
            text = json.loads(line)["user_text"]
        except (ValueError, KeyError, TypeError):
            continue
        path = tmp_path / f"{stem}-{number}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


@pytest.mark.skipif(not regex_snapshot.supported(), reason="needs CPython's re internals")
def test_regex_snapshot_patterns_equal_fresh_compiles(tmp_path):
    home = tmp_path / "home"
    for _ in range(2):  # the first run builds the KB snapshot, the second records its regexes
        run = _diagnose(home, EXAMPLES[0])
        assert run.returncode == 0, run.stderr
    snapshot = home / "cache" / regex_snapshot.file_name()
    rows = pickle.loads(snapshot.read_bytes())
    assert len(rows) > 100  # the parser's, the redactor's and the matched entries' patterns
    check = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from bot import regex_snapshot\n"
        "added = regex_snapshot.seed(Path(sys.argv[1]))\n"
        "assert added > 100, added\n"
        "import bot.parse, bot.core\n"
        "bad = []\n"
        "for (kind, pattern, flags), compiled in list(re._cache.items()):\n"
        "    if (pattern, flags) in regex_snapshot._loaded:\n"
        "        fresh = re._compiler.compile(pattern, flags)\n"
        "        if fresh != compiled or fresh.groupindex != compiled.groupindex or fresh.flags != compiled.flags:\n"
        "            bad.append(pattern)\n"
        "print(added, len(bad))\n"
        "assert not bad, bad[:3]\n"
    )
    proc = _python(check, home, str(home / "cache"))
    assert proc.returncode == 0, proc.stderr.decode()


def test_output_is_the_same_with_and_without_snapshots_and_equals_model_dump_json(tmp_path):
    from bot.core import diagnose
    from bot.parse import parse_files

    home = tmp_path / "home"
    for path in _reports(tmp_path):
        cold = _diagnose(home, path)  # the first report: no snapshot at all; later: KB snapshot, growing regex one
        warm = _diagnose(home, path)  # snapshots written by the run before
        assert cold.returncode in (0, 3), cold.stderr
        assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), path.name
        expected = diagnose(parse_files([(str(path), path.read_bytes())])).model_dump_json() + "\n"
        assert cold.stdout.decode() == expected, path.name
    assert (home / "cache" / regex_snapshot.file_name()).exists() or not regex_snapshot.supported()


def test_unreadable_or_foreign_snapshot_is_ignored(tmp_path):
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / regex_snapshot.file_name()).write_bytes(b"not a pickle")
    proc = _diagnose(home, EXAMPLES[0])
    assert proc.returncode == 0, proc.stderr
    (home / "cache" / regex_snapshot.file_name()).write_bytes(pickle.dumps([("x", 0, 0, "bad code", 0, {}, ())]))
    again = _diagnose(home, EXAMPLES[0])
    assert (again.returncode, again.stdout) == (proc.returncode, proc.stdout)


def test_fast_path_imports(tmp_path):
    home = tmp_path / "home"
    code = (
        "import sys\n"
        "from bot.cli import diagnose_main\n"
        "try:\n    diagnose_main()\nexcept SystemExit:\n    pass\n"
        "names = ('torch', 'transformers', 'datasets', 'langchain', 'trl', 'yaml', 'sqlite3', 'importlib.metadata')\n"
        "sys.stderr.write('LOADED=' + ','.join(m for m in names if m in sys.modules))\n"
    )
    _python(code, home, "--no-repro", "--json", str(EXAMPLES[0]))  # writes the snapshots (imports yaml)
    proc = _python(code, home, "--no-repro", "--json", str(EXAMPLES[0]))
    assert proc.stderr.decode().split("LOADED=")[1].strip() == ""


def test_default_cache_dir_is_the_settings_one(monkeypatch, tmp_path):
    from bot.settings import get_settings
    from bot.storage import cache_dir

    for home in (None, str(tmp_path / "elsewhere")):
        if home is None:
            monkeypatch.delenv("LOSSDOCTOR_HOME", raising=False)
        else:
            monkeypatch.setenv("LOSSDOCTOR_HOME", home)
        get_settings.cache_clear()
        try:
            assert regex_snapshot.default_cache_dir() == cache_dir(get_settings())
        finally:
            get_settings.cache_clear()
