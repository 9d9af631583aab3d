"""Write a standalone reproduction script: the failure and each fix, runnable anywhere.

The script inlines the source of `reproducer.tiny` and `reproducer.child` (which import
nothing of lossdoctor) and the scenarios as plain data, so it needs only the training
stack (torch, transformers, trl, datasets, peft, tokenizers) and no network.
"""

from __future__ import annotations

import pprint
from pathlib import Path

from reproducer import child, tiny

DROP_BEGIN = "# standalone-script: drop begin"
DROP_END = "# standalone-script: drop end"
FUTURE = "from __future__ import annotations"

HEADER = '''#!/usr/bin/env python
"""Tiny reproduction written by lossdoctor: {summary}.

Each run trains a tiny model built offline from a config (no download) for a few steps
and prints whether it failed, the loss, how many label tokens were supervised and
whether the weights changed. Run it with the libraries of your own training:

    python {name}

It needs torch, transformers, trl, datasets, peft and tokenizers, and no network.
"""

from __future__ import annotations
'''

MAIN = '''

RUNS = {runs}


def report(name: str, record: dict) -> None:
    print(f"== {{name}}")
    if record["ok"]:
        print(f"   ok: trained, loss {{record['loss']}}, step losses {{record['losses']}}")
    else:
        exc = record["exception"] or {{}}
        print(f"   failed: {{exc.get('type')}}: {{exc.get('message')}}")
    print(
        f"   supervised tokens: {{record['supervised_tokens']}}, prompt tokens supervised: "
        f"{{record['prompt_tokens_supervised']}}, weights changed: {{record['params_changed']}} "
        f"({{record['seconds']:.2f}} s)"
    )
    for warning in record["warnings"][:5]:
        print(f"   warning: {{warning[:300]}}")


def main() -> None:
    import gc

    import torch, transformers  # noqa: E401,F401  (imported before the first run so timings are fair)

    gc.collect()
    gc.freeze()  # Trainer runs gc.collect() on every train(); frozen imports make that cheap
    print("versions:", installed_versions())
    for name, scenario in RUNS:
        report(name, run_scenario(scenario, fix=None if name == "baseline" else name))


if __name__ == "__main__":
    main()
'''


def _module_source(module) -> str:
    """A module's source without `from __future__` and without its marked drop blocks."""
    lines, dropping = [], False
    for line in Path(module.__file__).read_text().splitlines():
        stripped = line.strip()
        if stripped == DROP_BEGIN:
            dropping = True
        elif stripped == DROP_END:
            dropping = False
        elif not dropping and stripped != FUTURE:
            lines.append(line)
    return "\n".join(lines)


def script_text(runs: list[tuple[str, dict]], name: str = "repro.py") -> str:
    """The standalone script for ``runs``: (name, scenario dict) pairs, the baseline first."""
    summary = f"{runs[0][0]} and {len(runs) - 1} fix(es)" if runs else "no runs"
    parts = [
        HEADER.format(summary=summary, name=name),
        f"# ---- reproducer/tiny.py (lossdoctor) {'-' * 40}",
        _module_source(tiny),
        f"# ---- reproducer/child.py (lossdoctor) {'-' * 39}",
        _module_source(child),
        MAIN.format(runs=pprint.pformat([(n, dict(s)) for n, s in runs], width=110, sort_dicts=False)),
    ]
    return "\n".join(parts)


def write_script(runs: list[tuple[str, dict]], path: str | Path) -> Path:
    """Write the standalone script for ``runs`` to ``path`` and return the path."""
    path = Path(path)
    path.write_text(script_text(runs, name=path.name))
    path.chmod(0o755)
    return path
