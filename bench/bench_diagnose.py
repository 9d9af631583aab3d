"""Speed of the parse + match path (``diagnose --no-repro``), beside baselines from the same run.

    python bench/bench_diagnose.py [--repeat 7]

Targets (issue 3): cold ``diagnose --no-repro`` on a 20 KB report <= 0.4 s (its usual run:
bytecode caches and the knowledge-base and regex snapshots in LOSSDOCTOR_HOME written by an
earlier run; the first run is printed beside it); in-process
parse + match p50 <= 20 ms; parse time linear in size up to 10 MB (1 MB <= 1 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "trainer-seq2seq-collator.txt"


def report_of_size(size: int) -> str:
    """The bundled example padded with realistic noise (log lines, warnings) to `size` characters."""
    base = EXAMPLE.read_text()
    noise = (
        "{'loss': 2.3456, 'grad_norm': 1.234, 'learning_rate': 1.9e-05, 'epoch': 0.12}\n"
        "/usr/lib/python3/site-packages/torch/utils/checkpoint.py:86: UserWarning: None of the inputs have requires_grad=True\n"
        " 12%|█▏        | 120/1000 [01:02<07:40,  1.91it/s]\n"
    )
    text = base
    while len(text) < size:
        text += noise
    return text[:size]


def timed(commands: dict[str, list[str]], repeat: int, fresh_home: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Wall time of each command, `repeat` rounds, each round running every command once, so
    that the load of other processes on the machine weighs on all of them alike.

    LOSSDOCTOR_HOME is a private one, so that other processes cannot touch its snapshots:
    kept across runs after two warm-up rounds (the first writes the knowledge-base snapshot,
    the second the regex one), or, for the commands named in `fresh_home`, empty for each run
    (what a first run pays)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    # as installed for real: bytecode caches are written (pip compiles them at install time);
    # this machine sets PYTHONDONTWRITEBYTECODE, which would recompile our modules on every start
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    with tempfile.TemporaryDirectory() as kept:
        env["LOSSDOCTOR_HOME"] = kept
        for _ in range(2):  # warm-up
            for cmd in commands.values():
                subprocess.run(cmd, env=env, **quiet)
        for _ in range(repeat):
            for name, cmd in commands.items():
                with tempfile.TemporaryDirectory() as home:
                    run_env = {**env, "LOSSDOCTOR_HOME": home} if name in fresh_home else env
                    t0 = time.perf_counter()
                    subprocess.run(cmd, env=run_env, **quiet)
                    times[name].append(time.perf_counter() - t0)
    return times


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1000:7.1f} ms  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, n={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    diagnose = str(Path(py).with_name("diagnose"))
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} cores")

    print("\n== cold process (subprocess wall time, commands interleaved)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(report_of_size(20_000))
    command = [diagnose, "--no-repro", "--json", handle.name]
    # `import pydantic` is lazy; defining a model pulls in the rest, the floor of any pydantic CLI
    floor = "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 0"
    rows = {
        "baseline  python -c pass            ": [py, "-c", "pass"],
        "baseline  python -c 'import pydantic'": [py, "-c", "import pydantic"],
        "baseline  pydantic BaseModel defined ": [py, "-c", floor],
        "diagnose --no-repro --json 20 KB     ": command,
        "  same, first run (empty home)       ": command,
    }
    notes = {
        "diagnose --no-repro --json 20 KB     ": "   target <= 400 ms",
        "  same, first run (empty home)       ": "   validates the YAML, builds the KB snapshot",
    }
    results = timed(rows, args.repeat, fresh_home=("  same, first run (empty home)       ",))
    for name, times in results.items():
        print(f"{name} {fmt(times)}{notes.get(name, '')}")
    os.unlink(handle.name)

    print("\n== in process")
    from bot.core import diagnose as run_diagnose
    from bot.parse import parse_text
    from knowledge.kb import default_kb
    from knowledge.matcher import rank

    kb = default_kb()
    text = report_of_size(20_000)
    rank(parse_text(text), kb)  # warm: KB loaded, lexical index built
    samples = []
    for _ in range(50):
        t0 = time.perf_counter()
        rank(parse_text(text), kb)
        samples.append(time.perf_counter() - t0)
    print(f"parse + match, 20 KB report          {fmt(samples)}   target p50 <= 20 ms")
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        run_diagnose(parse_text(text), kb)
        samples.append(time.perf_counter() - t0)
    print(f"parse + diagnose (no repro), 20 KB   {fmt(samples)}")

    print("\n== parse time by size (linear?)")
    for size in (10_000, 100_000, 1_000_000, 10_000_000):
        text = report_of_size(size)
        t0 = time.perf_counter()
        parse_text(text)
        dt = time.perf_counter() - t0
        print(f"parse {size / 1e6:6.2f} MB: {dt * 1000:9.1f} ms  ({dt / (size / 1e6):.3f} s/MB)")

    print("\n== pathological pastes by size (s/MB should stay flat)")
    shapes = {
        "repeated key lines": "features: [" + "'a', " * 400 + "]\n",
        "distinct key lines": None,
        "launch flags": "--fp16 --x " + "y" * 290 + " ",
        "unclosed braces": "{\n",
    }
    for name, unit in shapes.items():
        for size in (1_000_000, 4_000_000):
            if unit is None:
                parts, total, i = [], 0, 0
                while total < size:
                    parts.append(f"key{i}: [\n")
                    total += len(parts[-1])
                    i += 1
                text = "".join(parts)
            else:
                text = unit * (size // len(unit))
            t0 = time.perf_counter()
            parse_text(text)
            dt = time.perf_counter() - t0
            print(f"{name:20s} {size / 1e6:4.1f} MB: {dt * 1000:9.1f} ms  ({dt / (size / 1e6):.3f} s/MB)")


if __name__ == "__main__":
    main()
