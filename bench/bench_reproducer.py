"""Speed and memory of the sandboxed reproducer: warm pool beside a fresh subprocess, same run.

    python bench/bench_reproducer.py [--repeat 7] [--fresh-repeat 3]

A batch is the seed's baseline (Trainer on tokenized data without labels: no loss) plus three
fixes. Targets (issue 4 §5): warm baseline + 3 fixes <= 1.5 s; peak RSS <= 1.5 GB.
Peak RSS is sampled every 50 ms (in a separate pass: reading smaps costs CPU) over the whole process tree this script starts (bwrap, the
pool parent, its forked children): the sum of RSS counts pages shared copy-on-write by the
parent and its children once per process, the sum of PSS splits them (the real footprint).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from reproducer.pool import WarmPool  # noqa: E402
from reproducer.runner import run_batch  # noqa: E402
from reproducer.scenario import Scenario  # noqa: E402


def batch() -> list[dict]:
    baseline = Scenario()
    fixes = {
        "use-lm-collator": Scenario(collator="DataCollatorForLanguageModeling"),
        "labels-from-input-ids": Scenario(labels_mode="input_ids", collator="DataCollatorForSeq2Seq"),
        "mask-prompt-labels": Scenario(labels_mode="prompt_masked", collator="DataCollatorForSeq2Seq"),
    }
    return [{"fix": None, "scenario": baseline.model_dump()}] + [
        {"fix": name, "scenario": s.model_dump()} for name, s in fixes.items()
    ]


class TreeMemory:
    """Peak of the summed RSS and PSS of every descendant of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            rss = pss = 0
            for proc in me.children(recursive=True):
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            time.sleep(self.interval)

    def text(self) -> str:
        return f"peak tree RSS {self.peak_rss / 2**20:6.0f} MB, PSS {self.peak_pss / 2**20:6.0f} MB"


def timed(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):6.3f} s  (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"


def outcome(records: list[dict]) -> str:
    parts = []
    for r in records:
        result = f"loss {r['loss']:.4f}" if r["ok"] and r["loss"] is not None else (r["exception"] or {}).get("type")
        parts.append(f"{r['fix'] or 'baseline'}: {result}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7, help="warm batches per pool")
    parser.add_argument("--fresh-repeat", type=int, default=3, help="fresh subprocess batches")
    args = parser.parse_args()
    runs = batch()
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f}")

    print("\n== baselines (subprocess wall time)")
    print(f"python -c pass                          {fmt(timed([sys.executable, '-c', 'pass'], args.repeat))}")
    print(f"python -c 'import torch'                {fmt(timed([sys.executable, '-c', 'import torch'], args.repeat))}")

    print("\n== fresh sandboxed subprocess: baseline + 3 fixes in one `python -m reproducer.child`")
    fresh_times = []
    for _ in range(args.fresh_repeat):
        result = run_batch(runs, warm=False)
        fresh_times.append(result["seconds"])
    with TreeMemory() as fresh_memory:  # a separate pass: sampling smaps costs CPU
        run_batch(runs, warm=False)
    print(f"sandbox: {result['sandbox']}; device {result['device']}")
    print(f"fresh baseline + 3 fixes                {fmt(fresh_times)}")
    print(f"  {fresh_memory.text()}")
    print(f"  {outcome(result['runs'])}")

    for workers in (1, 2):
        print(f"\n== warm pool, {workers} worker(s): a forked child per run")
        start = time.perf_counter()
        pool = WarmPool(workers=workers)
        pool.start()
        cold = time.perf_counter() - start
        warm_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            records = pool.run(runs)
            warm_times.append(time.perf_counter() - start)
        with TreeMemory() as memory:
            pool.run(runs)
        stats, hello = dict(pool.last), dict(pool.hello)
        pool.close()
        print(f"cold start (imports + tokenizer)        {cold:6.3f} s  (parent's own count {hello['startup_s']:.3f} s)")
        print(f"warm baseline + 3 fixes                 {fmt(warm_times)}   target <= 1.5 s")
        per_run = ", ".join(f"{r['seconds']:.3f}" for r in records)
        print(f"  child seconds per run (last batch)    {per_run}")
        print(f"  {memory.text()}   target <= 1.5 GB")
        print(f"  parent peak RSS {stats['parent_peak_rss_mb']:.0f} MB, largest child peak RSS "
              f"{stats['child_peak_rss_mb']:.0f} MB (getrusage / wait4)")  # fmt: skip
        print(f"  threads in the parent before fork: python {hello['python_threads']}, native "
              f"{hello['native_threads']}, torch intra-op {hello['torch_threads']}; gc frozen {hello['gc_frozen']}")  # fmt: skip
        print(f"  {outcome(records)}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} (other work on this machine inflates every figure)")


if __name__ == "__main__":
    main()
