"""Checks on the evaluation sets ``eval/*.jsonl`` (dev, test and the held-out fresh-* sets).

Every line must parse, carry the four fields, name a canonical failure class and an
http(s) source; the class counts must meet the minimums the set was built for; and no
report may copy a long run of words from a knowledge-base example (the set has to stay
disjoint from ``knowledge/entries/*/match`` and ``no-match``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from knowledge.schema import FAILURE_CLASSES

ROOT = Path(__file__).resolve().parent.parent
EVAL_FILES = sorted((ROOT / "eval").glob("*.jsonl"))  # dev, test and the later held-out fresh-* sets
ENTRIES_DIR = ROOT / "knowledge" / "entries"

FIELDS = ("user_text", "failure_class", "source", "note")

COMMON_CLASSES = (
    "collator_does_not_create_labels",
    "labels_missing_in_dataset",
    "response_template_not_found",
    "no_grad_gradient_checkpointing",
    "gradient_accumulation_loss_scaling",
    "remove_unused_columns_drops_columns",
    "num_items_in_batch_signature",
    "classification_label_dtype",
    "label_out_of_bounds",
    "pad_token_missing",
    "base_model_without_head",
    "fp16_overflow_nan",
    "all_labels_masked_truncation",
)
MIN_COMMON = 4
MIN_OTHER = 3
MIN_OUT_OF_SCOPE = 20
MIN_LINES = 100

# A shared run of this many words means text was copied; library error messages
# (the longest are about 60 words) may legitimately appear in both.
SHINGLE_WORDS = 70


def load_rows() -> list[dict]:
    rows = []
    for path in EVAL_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert line.strip(), f"{path.name} line {number} is blank"
            rows.append(json.loads(line))
    return rows


ROWS = load_rows()


def test_file_has_enough_lines():
    assert len(EVAL_FILES) >= 2
    assert len(ROWS) >= MIN_LINES


@pytest.mark.parametrize("number,row", list(enumerate(ROWS, start=1)))
def test_row_shape(number, row):
    assert isinstance(row, dict), f"line {number} is not an object"
    assert set(row) == set(FIELDS), f"line {number} has fields {sorted(row)}"
    for field in FIELDS:
        assert isinstance(row[field], str) and row[field].strip(), f"line {number}: empty {field}"
    assert row["failure_class"] in FAILURE_CLASSES, f"line {number}: unknown class {row['failure_class']!r}"
    assert re.match(r"https?://\S+$", row["source"]), f"line {number}: source {row['source']!r}"
    assert "\n" not in row["note"], f"line {number}: note must be one line"


def test_sources_are_unique():
    repeated = [source for source, count in Counter(r["source"] for r in ROWS).items() if count > 1]
    assert not repeated


def test_class_counts_meet_minimums():
    counts = Counter(r["failure_class"] for r in ROWS)
    short = {}
    for name in FAILURE_CLASSES:
        if name == "out_of_scope":
            need = MIN_OUT_OF_SCOPE
        elif name in COMMON_CLASSES:
            need = MIN_COMMON
        else:
            need = MIN_OTHER
        if counts[name] < need:
            short[name] = (counts[name], need)
    assert not short, f"classes below their minimum (have, need): {short}"


def word_shingles(text: str, size: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\S+", text.lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def knowledge_example_files() -> list[Path]:
    if not ENTRIES_DIR.is_dir():
        return []
    files = []
    for folder in ("match", "no-match"):
        for path in ENTRIES_DIR.glob(f"*/{folder}/*"):
            if path.is_file():
                files.append(path)
    return files


def test_disjoint_from_knowledge_examples():
    examples = knowledge_example_files()
    if not examples:
        pytest.skip("no knowledge-base examples present")
    seen: dict[tuple[str, ...], Path] = {}
    for path in examples:
        for shingle in word_shingles(path.read_text(encoding="utf-8", errors="replace"), SHINGLE_WORDS):
            seen.setdefault(shingle, path)
    overlaps = []
    for number, row in enumerate(ROWS, start=1):
        hits = {seen[s] for s in word_shingles(row["user_text"], SHINGLE_WORDS) if s in seen}
        if hits:
            overlaps.append((number, sorted(str(p.relative_to(ROOT)) for p in hits)))
    assert not overlaps, f"eval lines sharing a {SHINGLE_WORDS}-word run with KB examples: {overlaps}"
