"""What lossdoctor says of each message the installed training libraries can raise or warn about
labels, padding, collators, packing and the loss: run after a library upgrade to find new messages
the knowledge base does not know yet.

    python bench/library_messages.py            # trl, transformers (trainer, collators, loss), peft
    python bench/library_messages.py DIR...     # the same packages unpacked under DIR (older releases:
                                                #   pip download --no-deps trl==0.12.2 ...; unzip the wheels)

Reads the installed sources with `ast` (nothing is imported from them) and diagnoses each message
quoted as a one-line report ("ValueError: ...", "UserWarning: ..."). Prints one line per message
(the class lossdoctor names, or UNKNOWN, its best candidate, where the message comes from) and a
summary.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import diagnose  # noqa: E402
from bot.parse import parse_text  # noqa: E402
from knowledge.kb import default_kb  # noqa: E402

TOPIC = re.compile(r"label|loss|completion|-100|pad|packing|truncat|collator|assistant|response|gradient|requires_grad|"
                   r"num_items", re.I)
SOURCES = {
    "trl": ["trainer/*.py", "data_utils.py"],
    "transformers": ["trainer*.py", "data/data_collator.py", "loss/*.py"],
    "peft": ["peft_model.py", "utils/other.py"],
}
WARN_CALLS = {"warn", "warning", "warning_once", "warning_advice"}


def package_dir(name: str, roots: list[Path] | None = None) -> Path | None:
    """The package's source folder: under one of `roots` when given, else the installed one."""
    if roots:
        return next((root / name for root in roots if (root / name / "__init__.py").is_file()), None)
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def literal(node: ast.AST) -> str | None:
    """The message's text, with each f-string field written as X."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal(node.left), literal(node.right)
        return (left or "") + (right or "") if (left or right) else None
    return None


def messages(path: Path) -> list[tuple[int, str, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    found = []
    for node in ast.walk(tree):
        kind, args = None, []
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            kind = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", "Exception"))
            args = node.exc.args
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in WARN_CALLS:
            kind, args = "UserWarning", node.args
        text = literal(args[0]) if kind and args else None
        if text and len(text) > 25 and TOPIC.search(text):
            found.append((node.lineno, kind, " ".join(text.split())))
    return found


def main(*dirs: str) -> None:
    roots = [Path(d) for d in dirs]
    kb = default_kb()
    seen: set[str] = set()
    tally: Counter[str] = Counter()
    for package, patterns in SOURCES.items():
        root = package_dir(package, roots)
        if root is None:
            print(f"{package}: not found")
            continue
        for pattern in patterns:
            for path in sorted(root.glob(pattern)):
                for line, kind, text in messages(path):
                    if text in seen:
                        continue
                    seen.add(text)
                    diagnosis = diagnose(parse_text(f"{kind}: {text}"), kb)
                    named = diagnosis.failure_class or "UNKNOWN"
                    best = diagnosis.candidates[0].entry if diagnosis.candidates else "-"
                    tally["named a class" if diagnosis.failure_class else "abstained"] += 1
                    print(f"{named:36} {best:44} {package}/{path.relative_to(root)}:{line} {kind}: {text[:120]}")
    print(f"\n{len(seen)} distinct messages: {tally['named a class']} named a class, {tally['abstained']} abstained "
          "(most abstentions are configuration errors outside the loss classes; read the list for new loss messages)")


if __name__ == "__main__":
    main(*sys.argv[1:])
