"""The installed libraries' own messages (read from their source with `ast`, as
`bench/library_messages.py` does) are diagnosed as the knowledge base says. The versions are pinned in
constraints.txt; a release that rewords one of these messages fails here first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bot.core import diagnose
from bot.parse import parse_text
from knowledge.kb import default_kb

SCAN = importlib.util.spec_from_file_location("library_messages", Path(__file__).parents[1] / "bench" / "library_messages.py")
library_messages = importlib.util.module_from_spec(SCAN)
SCAN.loader.exec_module(library_messages)

KB = default_kb()


def installed_messages(package: str, relative: str) -> list[tuple[str, str]]:
    root = library_messages.package_dir(package)
    return [(kind, text) for _, kind, text in library_messages.messages(root / relative)]


@pytest.mark.parametrize(("package", "relative", "start", "expected"), [
    ("transformers", "data/data_collator.py", "You are attempting to pad samples but the tokenizer", "pad_token_missing"),
    ("peft", "utils/other.py", "self.model.config.pad_token_id has to be defined", "pad_token_missing"),
    ("trl", "trainer/sft_trainer.py", "The chat template does not include the assistant turn's end-of-turn token",
     "response_template_not_found"),
    ("trl", "trainer/sft_trainer.py", "You're using `assistant_only_loss=True`, but at least one example has no assistant",
     "response_template_not_found"),
    ("transformers", "trainer.py", "Trainer: `compute_loss_func` is defined but `labels=None`", "labels_missing_in_dataset"),
    ("trl", "trainer/sft_trainer.py", "The tokenized prompt is not a prefix of the tokenized prompt+completion", None),
])  # fmt: skip
def test_an_installed_library_message_gets_its_class(package, relative, start, expected):
    found = [(kind, text) for kind, text in installed_messages(package, relative) if text.startswith(start)]
    assert found, f"{package}/{relative} no longer has a message starting {start!r}"
    kind, text = found[0]
    assert diagnose(parse_text(f"{kind}: {text}"), KB).failure_class == expected


def test_the_scan_reads_fstrings_and_concatenations(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError(f'The labels of {x} are all masked, so the loss is ' + 'zero')\n"
        "    warnings.warn('unrelated notice about something else entirely')\n"
        "    logger.warning_once('padding side is left; the collator pads labels too')\n"
    )
    assert library_messages.messages(source) == [
        (3, "ValueError", "The labels of X are all masked, so the loss is zero"),
        (5, "UserWarning", "padding side is left; the collator pads labels too"),
    ]


def test_the_scan_reads_an_unpacked_release_folder(tmp_path):
    """`bench/library_messages.py DIR` scans packages unpacked under DIR (an older release's wheel)."""
    package = tmp_path / "trl"
    (package / "trainer").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "trainer" / "utils.py").write_text(
        "raise ValueError('Padding is enabled, but the tokenizer is not configured with a padding token. Explicitly set "
        "`tokenizer.pad_token` (e.g. `tokenizer.pad_token = tokenizer.eos_token`) before calling the trainer.')\n"
    )
    assert library_messages.package_dir("trl", [tmp_path]) == package
    assert library_messages.package_dir("peft", [tmp_path]) is None
    (_, kind, text), = library_messages.messages(package / "trainer" / "utils.py")
    assert diagnose(parse_text(f"{kind}: {text}"), KB).failure_class == "pad_token_missing"
