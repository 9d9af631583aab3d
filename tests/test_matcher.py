"""The matcher's semantics, on hand-built reports and a small knowledge base in tmp_path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from bot.models import ExceptionInfo, Frame, Report
from knowledge.kb import load_kb
from knowledge.matcher import ALTERNATIVE, holds, lexical_index, rank
from knowledge.schema import Condition

NO_LOSS = ExceptionInfo(type="ValueError", message="The model did not return a loss from the inputs, only the following keys: logits.")


def entry(id_, cls, evidence, **extra):
    data = {
        "id": id_, "failure_class": cls, "title": f"{id_} title", "root_cause": f"{id_} root cause.",
        "evidence": evidence, "references": ["https://github.com/huggingface/transformers/issues/1"],
        "reproduce": {"reproducible": False, "reason": "test"},
        "fixes": [] if cls == "out_of_scope" else [{"id": "f", "title": "t", "explanation": "e"}],
    }
    data.update(extra)
    return data


def write_kb(tmp_path: Path, entries: list[dict]):
    for e in entries:
        d = tmp_path / e["id"]
        d.mkdir()
        (d / "entry.yaml").write_text(yaml.safe_dump(e))
    return load_kb(tmp_path)


@pytest.mark.parametrize(
    ("cond", "report", "expected"),
    [
        ({"exception": "did not return a loss"}, Report(exceptions=[NO_LOSS]), True),
        ({"exception": "did not return a loss"}, Report(), False),
        ({"exception_type": ["KeyError"]}, Report(exceptions=[NO_LOSS]), False),
        ({"received_inputs_exclude": ["labels"]}, Report(received_inputs=["input_ids", "attention_mask"]), True),
        ({"received_inputs_exclude": ["labels"]}, Report(received_inputs=["input_ids", "labels"]), False),
        ({"received_inputs_exclude": ["labels"]}, Report(), False),  # unknown inputs prove nothing
        ({"received_inputs_include": ["labels"]}, Report(received_inputs=["labels", "input_ids"]), True),
        ({"returned_keys": ["last_hidden_state"]}, Report(returned_keys=["last_hidden_state"]), True),
        ({"collator": ["DataCollatorForSeq2Seq"]}, Report(collator="DataCollatorForSeq2Seq"), True),
        ({"trainer": ["Trainer"]}, Report(trainer="MyTrainer", trainer_bases=["Trainer"]), True),
        ({"model_class": "^AutoModel$"}, Report(model_classes=["AutoModelForCausalLM"]), False),
        ({"flag": {"fp16": True}}, Report(flags={"fp16": "True"}), True),
        ({"flag": {"fp16": True}}, Report(flags={"fp16": False}), False),
        ({"flag": {"max_length": "*"}}, Report(flags={"max_length": 512}), True),
        ({"flag": {"gradient_accumulation_steps": 8}}, Report(flags={"gradient_accumulation_steps": "8"}), True),
        ({"flag_absent": ["bf16"]}, Report(flags={"fp16": True}), True),
        ({"metric": "loss_zero"}, Report(losses=[1.2, 0.0]), True),
        ({"metric": "grad_norm_nan"}, Report(grad_norms=[math.nan]), True),
        ({"metric": "loss_nan"}, Report(losses=[0.0]), False),
        ({"metric": "grad_norm_inf"}, Report(grad_norms=[1.5, math.inf]), True),
        ({"metric": "eval_loss_constant"}, Report(eval_losses=[2.3419, 2.3419, 2.3419]), True),
        ({"metric": "eval_loss_constant"}, Report(eval_losses=[2.3419, 2.3419]), False),  # two evaluations can agree by chance
        ({"metric": "eval_loss_constant"}, Report(eval_losses=[2.3419, 2.3419, 2.3402]), False),
        ({"metric": "eval_loss_constant"}, Report(eval_losses=[math.nan, math.nan, math.nan]), False),  # NaN has its own metric
        ({"metric": "loss_falls"}, Report(losses=[1.62, 1.21, 1.17, 1.16]), True),
        ({"metric": "loss_falls"}, Report(losses=[1.62, 1.6, 1.61]), False),  # flat: not learning
        ({"metric": "loss_falls"}, Report(losses=[1.62, 1.2, 0.0]), False),  # a collapse to 0 is a failure, not learning
        ({"metric": "loss_falls"}, Report(losses=[1.62, 1.2, math.nan]), False),
        ({"metric": "loss_falls"}, Report(losses=[1.62, 1.2]), False),  # two values say little
        ({"metric": "grad_norm_inf"}, Report(grad_norms=[math.nan]), False),
        ({"metric": "loss_inf"}, Report(losses=[math.inf]), True),
        ({"version": {"trl": ">=0.15,<0.20"}}, Report(versions={"trl": "0.19.1"}), True),
        ({"version": {"trl": ">=0.15,<0.20"}}, Report(versions={"trl": "1.16.0"}), False),
        ({"version": {"trl": ">=0.15"}}, Report(), False),
        ({"version": {"torch": ">=2.5"}}, Report(versions={"torch": "2.5.1+cu124"}), True),
        ({"frame": "unsloth_zoo.*train_on"}, Report(frames=[Frame(file="/x/unsloth_zoo/a.py", function="train_on_responses_only")]), True),
        ({"text": "all labels .* -100", "peft": True}, Report(text="Unsloth: All labels in your dataset are -100", uses_peft=True), True),
        ({"text": "all labels .* -100", "peft": True}, Report(text="Unsloth: All labels in your dataset are -100"), False),
        ({"call": ["train_on_responses_only"]}, Report(calls=["get_peft_model", "train_on_responses_only"]), True),
        ({"section": ["pip"]}, Report(sections=["traceback"]), False),
        ({"dataset_column": ["label", "labels"]}, Report(dataset_columns=["text", "label"]), True),
        ({"dataset_column": ["labels"]}, Report(dataset_columns=["text", "input_ids"]), False),
        ({"defined_function": r"^compute_loss\((?!.*num_items)"}, Report(defined_functions=["compute_loss(self, model, inputs, return_outputs)"]), True),
        ({"defined_function": r"^compute_loss\((?!.*num_items)"}, Report(defined_functions=["compute_loss(self, model, inputs, num_items_in_batch=None)"]), False),
        ({"collator_given": False}, Report(trainer="SFTTrainer"), True),
        ({"collator_given": False}, Report(collator="DataCollatorWithPadding"), False),
        ({"collator_given": True}, Report(collator="DataCollatorWithPadding"), True),
    ],
)
def test_condition(cond, report, expected):
    assert holds(Condition.model_validate(cond), report) is expected


def test_empty_condition_is_rejected():
    with pytest.raises(ValueError):
        Condition.model_validate({})


def test_bad_regex_is_rejected():
    with pytest.raises(ValueError, match="invalid regular expression"):
        Condition.model_validate({"text": "(unclosed"})


def test_ranking_uses_evidence_requires_and_excludes(tmp_path):
    kb = write_kb(tmp_path, [
        entry("no-labels", "labels_missing_in_dataset", [
            {"why": "no loss", "when": {"exception": "did not return a loss"}, "weight": 2},
            {"why": "no labels in inputs", "when": {"received_inputs_exclude": ["labels"]}, "weight": 3},
        ]),
        entry("seq2seq", "collator_does_not_create_labels", [
            {"why": "no loss", "when": {"exception": "did not return a loss"}, "weight": 2},
            {"why": "seq2seq collator", "when": {"collator": ["DataCollatorForSeq2Seq"]}, "weight": 3},
        ]),
        entry("gated", "labels_missing_in_dataset", [{"why": "w", "when": {"text": "loss"}, "weight": 9}],
              excludes=[{"exception": "did not return"}]),
        entry("needs-peft", "labels_missing_in_dataset", [{"why": "w", "when": {"text": "loss"}, "weight": 9}],
              requires=[{"peft": True}]),
    ])
    report = Report(text="did not return a loss", exceptions=[NO_LOSS], received_inputs=["input_ids", "attention_mask"])
    ranked = rank(report, kb, lexical=False)
    assert [c.entry for c in ranked] == ["no-labels", "seq2seq"]
    assert ranked[0].why == ["no loss", "no labels in inputs"]
    assert ranked[0].score == 5 and ranked[1].score == 2

    report2 = report.model_copy(update={"collator": "DataCollatorForSeq2Seq", "received_inputs": ["input_ids", "labels"]})
    assert [c.entry for c in rank(report2, kb, lexical=False)][0] == "seq2seq"


def test_min_score_and_negative_weights(tmp_path):
    kb = write_kb(tmp_path, [
        entry("weak", "fp16_overflow_nan", [
            {"why": "nan", "when": {"metric": "grad_norm_nan"}, "weight": 1.5},
            {"why": "bf16 used", "when": {"flag": {"bf16": True}}, "weight": -3},
        ]),
    ])
    below = rank(Report(grad_norms=[math.nan]), kb, lexical=False)  # 1.5 < min_score 2: at most "also possible"
    assert all(c.why[-1] == ALTERNATIVE for c in below)
    (tmp_path / "x").mkdir()
    kb2 = write_kb(tmp_path / "x", [
        entry("weak", "fp16_overflow_nan", [
            {"why": "nan", "when": {"metric": "grad_norm_nan"}, "weight": 2.5},
            {"why": "bf16 used", "when": {"flag": {"bf16": True}}, "weight": -3},
        ]),
    ])
    assert [c.entry for c in rank(Report(grad_norms=[math.nan]), kb2, lexical=False)] == ["weak"]
    assert rank(Report(grad_norms=[math.nan], flags={"bf16": True}), kb2, lexical=False) == []


FILLER = [
    "pad token padding batch size tokenizer", "fp16 overflow nan half precision", "gradient checkpointing reentrant grad_fn",
    "deepspeed zero stage overlap comm", "classification labels dtype long float", "num items in batch signature compute",
    "special tokens untrained embedding", "packing collator incompatible", "distributed multi gpu rank",
    "bisect versions upgrade regression",
]


def test_lexical_fallback_for_prose(tmp_path):
    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found",
              [{"why": "w", "when": {"warning": "Could not find response key"}, "weight": 5}],
              keywords="response template completion only collator marker tokenized differently loss zero"),
        entry("oom", "out_of_scope", [{"why": "w", "when": {"exception_type": ["OutOfMemoryError"]}, "weight": 5}],
              keywords="cuda out of memory gpu memory batch size"),
        # unrelated entries make the corpus realistic for BM25's document frequencies
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    prose = "my loss is zero when I use the completion only collator, is the response template tokenized differently?"
    ranked = rank(Report(text=prose), kb)
    assert ranked and ranked[0].entry == "template"
    assert "wording" in ranked[0].why[-1]
    assert rank(Report(text="hello there, thanks for the great library"), kb) == []


def test_kb_rejects_unknown_keys_and_mismatched_dir(tmp_path):
    from bot.errors import KnowledgeBaseError

    bad = entry("a", "pad_token_missing", [{"why": "w", "when": {"text": "x"}}])
    bad["colour"] = "blue"
    with pytest.raises(KnowledgeBaseError, match="colour"):
        write_kb(tmp_path, [bad])
    d = tmp_path / "other"
    d.mkdir()
    (d / "entry.yaml").write_text(yaml.safe_dump(entry("b", "pad_token_missing", [{"why": "w", "when": {"text": "x"}}])))
    root = tmp_path / "only"
    root.mkdir()
    d.rename(root / d.name)
    with pytest.raises(KnowledgeBaseError, match="does not match its directory"):
        load_kb(root)


def test_first_places_name_distinct_classes(tmp_path):
    """A second entry of the class already listed, or an out-of-scope look-alike, waits behind other classes."""
    nan = {"metric": "grad_norm_nan"}
    kb = write_kb(tmp_path, [
        entry("fp16-a", "fp16_overflow_nan", [{"why": "a", "when": nan, "weight": 6}]),
        entry("fp16-b", "fp16_overflow_nan", [{"why": "b", "when": nan, "weight": 5}]),
        entry("oom", "out_of_scope", [{"why": "c", "when": nan, "weight": 4.5}]),
        entry("flash", "attention_kernel_nan", [{"why": "d", "when": nan, "weight": 4}]),
        entry("zero2", "deepspeed_zero2_nan", [{"why": "e", "when": nan, "weight": 3}]),
    ])
    ranked = rank(Report(grad_norms=[math.nan]), kb, lexical=False)
    assert [c.entry for c in ranked] == ["fp16-a", "flash", "zero2", "fp16-b", "oom"]
    assert [c.score for c in ranked[:3]] == [6, 4, 3]  # each part stays in score order

    # an out-of-scope entry that leads keeps the first place (the diagnosis abstains on it)
    (tmp_path / "y").mkdir()
    kb = write_kb(tmp_path / "y", [
        entry("oom", "out_of_scope", [{"why": "c", "when": nan, "weight": 9}]),
        entry("fp16-a", "fp16_overflow_nan", [{"why": "a", "when": nan, "weight": 6}]),
    ])
    assert [c.entry for c in rank(Report(grad_norms=[math.nan]), kb, lexical=False)] == ["oom", "fp16-a"]


@pytest.mark.parametrize(
    ("echo_evidence", "echo_extra", "ruled_out"),
    [
        # its `requires` fails: the report rules it out
        ([{"why": "w", "when": {"text": "max_length"}, "weight": 5}], {"requires": [{"text": "truncat"}]}, True),
        # its evidence argues against it (score < 0)
        ([{"why": "the report argues against it", "when": {"text": "collator"}, "weight": -2}], {}, False),
    ],
    ids=["ruled-out", "evidence-against"],
)
def test_an_entry_ruled_out_or_argued_against_does_not_raise_the_lexical_bar(tmp_path, echo_evidence, echo_extra,
                                                                              ruled_out):
    """Wording is compared among the entries the report leaves in and does not argue against: such an
    entry cannot, by echoing the report's words best, push the others below the lexical-only bar."""
    prose = "my loss is zero when I use the completion only collator, is the response template tokenized differently?"
    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found",
              [{"why": "w", "when": {"warning": "Could not find response key"}, "weight": 5}],
              keywords="response template completion tokenized differently marker"),
        entry("echo", "all_labels_masked_truncation", echo_evidence,
              keywords=" ".join([prose] * 6) + " differently tokenized differently", **echo_extra),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    words = dict(zip((e.id for e in kb.entries), lexical_index(kb).scores(prose)))
    assert words["echo"] > 1.6 * words["template"]  # "echo" fits the wording best
    ranked = rank(Report(text=prose), kb)
    assert ranked and ranked[0].entry == "template"
    if ruled_out:
        assert "echo" not in [c.entry for c in ranked]


def test_lexical_text_drops_traceback_frames_and_keeps_the_rest():
    from knowledge.matcher import lexical_text

    text = (
        "my run dies at step 1\n"
        "Traceback (most recent call last):\n"
        '  File "/x/site-packages/transformers/trainer.py", line 2123, in train\n'
        "    return inner_training_loop(\n"
        "[rank1]:   File \"/x/site-packages/torch/nn/modules/module.py\", line 1501, in _call_impl\n"
        "[rank1]:     return forward_call(*args, **kwargs)\n"
        "File ~/miniconda3/lib/python3.10/site-packages/transformers/trainer.py:1539, in Trainer.train(self)\n"
        "           ^^^^^^^^^^^^^^^^^^^^^\n"
        "ValueError: The model did not return a loss from the inputs\n"
        "    indented prose under an exception stays\n"
    )
    kept = lexical_text(text)
    assert "inner_training_loop" not in kept and "forward_call" not in kept and "_call_impl" not in kept
    assert "site-packages" not in kept and "^^^" not in kept and "Traceback" not in kept
    assert kept.startswith("my run dies at step 1\n")
    assert "ValueError: The model did not return a loss" in kept and "indented prose" in kept
    assert lexical_text("no traceback here") == "no traceback here"


def test_alternatives_include_entries_whose_examples_show_the_same_symptom(tmp_path):
    """Evidence names one cause of a zero loss; an entry with no matching evidence but whose own match
    examples log the same symptom is listed as 'also possible', one whose examples show another is not."""
    kb = write_kb(tmp_path, [
        entry("truncation", "all_labels_masked_truncation", [{"why": "w", "when": {"text": "max_length"}, "weight": 4}]),
        entry("zero2", "deepspeed_zero2_nan", [{"why": "w", "when": {"text": "overlap_comm"}, "weight": 4}]),
        entry("kernel", "attention_kernel_nan", [{"why": "w", "when": {"text": "sdpa"}, "weight": 4}]),
    ])
    for id_, log in [("zero2", "{'loss': 0.0, 'grad_norm': nan, 'epoch': 0.1}"),
                     ("kernel", "{'loss': 3.2, 'grad_norm': 1.1, 'epoch': 0.1}\nIndexError: index out of range")]:
        (tmp_path / id_ / "match").mkdir()
        (tmp_path / id_ / "match" / "a.txt").write_text(log)
    kb = load_kb(tmp_path)
    report = Report(text="max_length=512 and the loss is 0", losses=[0.0], grad_norms=[math.nan])
    ranked = rank(report, kb, lexical=False)
    assert [c.entry for c in ranked] == ["truncation", "zero2"]
    assert "its own examples show the same symptom" in ranked[1].why
    assert ranked[1].score <= ranked[0].score - 2.5  # listed, never in play


def test_an_entry_with_most_of_its_evidence_joins_a_lexical_only_list(tmp_path):
    """No entry reaches its min_score; one has 3 of the 3.5 it needs but few shared words. It is listed
    beside the wording matches (an entry with less evidence and as few words is not)."""
    prose = "my loss is zero when I use the completion only collator, is the response template tokenized differently?"
    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}],
              keywords="response template completion only collator marker tokenized differently loss zero"),
        entry("near", "fp16_overflow_nan", [{"why": "nan grads", "when": {"metric": "grad_norm_nan"}, "weight": 3}],
              min_score=3.5, keywords="half precision"),
        entry("far", "deepspeed_zero2_nan", [{"why": "nan grads", "when": {"metric": "grad_norm_nan"}, "weight": 2}],
              min_score=3.5, keywords="half precision"),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    ranked = {c.entry: c for c in rank(Report(text=prose, grad_norms=[math.nan]), kb)}
    assert next(iter(ranked)) == "template"
    assert any("no decisive evidence" in w for w in ranked["near"].why)  # in the list on its own account
    assert "far" not in ranked or any("a weaker alternative" in w for w in ranked["far"].why)


def test_evidence_cancelled_by_evidence_against_is_not_a_diagnosis(tmp_path):
    """An entry whose reasons for and against sum to nothing stays on the list on its wording, but as
    a guess: the report is not diagnosed on it. With the reason against gone, the same wording and
    symptom make it a (weak) diagnosis."""
    from knowledge.matcher import OUTWEIGHED, is_guess

    prose = "CUDA error: device-side assert triggered while fine-tuning my token classification model on invoices"
    evidence = [
        {"why": "a device-side assert", "when": {"text": "device-side assert"}, "weight": 1.5},
        {"why": "an input outside its embedding table", "when": {"text": "bbox"}, "weight": -1.5},
    ]
    kb = write_kb(tmp_path, [
        entry("labels", "label_out_of_bounds", evidence, min_score=3,
              keywords="device-side assert token classification label ids num_labels invoices fine-tuning"),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    cancelled = rank(Report(text=prose + ", some bbox values are negative"), kb)[0]
    assert cancelled.entry == "labels" and is_guess(cancelled)
    assert f"a device-side assert ({OUTWEIGHED})" in cancelled.why
    counted = rank(Report(text=prose), kb)[0]
    assert counted.entry == "labels" and not is_guess(counted)


def test_a_set_up_that_fits_is_not_evidence_without_a_sign_of_the_failure(tmp_path):
    """Flags, versions and the model say what was run, not what went wrong: alone they name no cause;
    with a sign of the failure (here the checkpoint warning) they add to it."""
    kb = write_kb(tmp_path, [
        entry("checkpointing", "no_grad_gradient_checkpointing", [
            {"why": "checkpointing on", "when": {"flag": {"gradient_checkpointing": True}}, "weight": 2},
            {"why": "lora", "when": {"peft": True}, "weight": 2},
            {"why": "the warning", "when": {"warning": "None of the inputs have requires_grad"}, "weight": 1},
        ]),
    ])
    set_up = {"flags": {"gradient_checkpointing": True}, "uses_peft": True}
    assert rank(Report(**set_up), kb, lexical=False) == []
    warned = rank(Report(**set_up, warnings=["UserWarning: None of the inputs have requires_grad=True"]), kb, lexical=False)
    assert [c.entry for c in warned] == ["checkpointing"] and warned[0].score == 5


def test_wording_inside_pasted_code_is_set_up_not_a_sign_of_the_failure(tmp_path):
    """A `text` signal that matches only inside a pasted code block counts as set-up."""
    from bot.parse import parse_text

    kb = write_kb(tmp_path, [
        entry("checkpointing", "no_grad_gradient_checkpointing",
              [{"why": "checkpointing named", "when": {"text": "gradient_checkpointing"}, "weight": 3}]),
    ])
    in_code = parse_text("My script:\n```python\nargs = TrainingArguments(gradient_checkpointing=True)\n```\nloss is nan\n")
    in_prose = parse_text("I turned on gradient_checkpointing and the loss is nan\n")
    assert in_code.narrative is not None and "TrainingArguments" not in in_code.narrative
    assert rank(in_code, kb, lexical=False) == []
    assert [c.entry for c in rank(in_prose, kb, lexical=False)] == ["checkpointing"]


def test_a_signal_marked_setup_counts_as_set_up_even_in_prose(tmp_path):
    """`use_cache=True is incompatible with gradient checkpointing` says checkpointing is on, not that it failed."""
    evidence = [{"why": "checkpointing named", "when": {"text": "gradient checkpointing"}, "weight": 4}]
    kb = write_kb(tmp_path, [
        entry("marked", "no_grad_gradient_checkpointing", [{**evidence[0], "setup": True}]),
        entry("unmarked", "fp16_overflow_nan", evidence),
    ])
    warned = Report(text="`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.")
    assert [c.entry for c in rank(warned, kb, lexical=False)] == ["unmarked"]


def test_lexical_text_drops_routine_notices():
    from knowledge.matcher import lexical_text

    text = ("/x/training_args.py:1559: FutureWarning: `evaluation_strategy` is deprecated\n  warnings.warn(\n"
            "wandb: Currently logged in as: someone\n"
            "`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.\nthe loss is nan\n")
    assert lexical_text(text) == "the loss is nan\n"


@pytest.mark.parametrize(("look_alike_words", "leads"), [
    ("response template completion only collator marker tokenized differently loss zero question", True),
    ("cuda out of memory gpu batch size allocation", False),
])
def test_a_wording_only_guess_does_not_beat_a_look_alike_that_fits_as_well(tmp_path, look_alike_words, leads):
    """No decisive evidence anywhere: when an out-of-scope look-alike's wording fits about as well as the
    best in-scope guess, the look-alike leads (the diagnosis abstains) and the guess stays listed."""
    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}],
              keywords="response template completion only collator marker tokenized differently loss zero"),
        entry("look-alike", "out_of_scope", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}],
              keywords=look_alike_words),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    prose = "my loss is zero when I use the completion only collator, is the response template tokenized differently?"
    ranked = [c.entry for c in rank(Report(text=prose), kb)]
    assert "template" in ranked
    assert (ranked[0] == "look-alike") is leads


@pytest.mark.parametrize(("look_alike_example", "leads"), [
    ("IndexError: index 7 is out of bounds for dimension 0 with size 3\n", True),
    ("ImportError: cannot import name 'SFTConfig' from 'trl'\n", False),
])
def test_a_look_alike_leads_on_wording_only_when_its_examples_show_that_kind_of_failure(
        tmp_path, look_alike_example, leads):
    """A report with an IndexError is not 'most like' an entry whose examples are all ImportErrors, however
    close the words: the look-alike leads a wording-only guess only if its examples fail the same way."""
    words = "response template completion only collator marker tokenized differently loss zero"
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    write_kb(kb_dir, [
        entry("template", "response_template_not_found", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}],
              keywords=words),
        entry("look-alike", "out_of_scope", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}], keywords=words),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=fill)
          for i, fill in enumerate(FILLER)],
    ])
    (kb_dir / "look-alike" / "match").mkdir()
    (kb_dir / "look-alike" / "match" / "example.txt").write_text(look_alike_example + words + "\n")
    kb = load_kb(kb_dir)
    report = Report(text="completion only collator, is the response template tokenized differently? loss zero",
                    exceptions=[ExceptionInfo(type="IndexError", message="index -100 is out of bounds for dimension 0")])
    ranked = [c.entry for c in rank(report, kb)]
    assert "template" in ranked
    assert (ranked[0] == "look-alike") is leads


def test_a_look_alike_on_wording_alone_does_not_lead_a_candidate_with_some_evidence(tmp_path):
    """The best in-scope candidate has part of its evidence (below min_score); an out-of-scope look-alike
    whose words fit as well, with no evidence of its own, stays behind it."""
    words = "response template completion only collator marker tokenized differently loss zero question"
    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found",
              [{"why": "the collator is named", "when": {"text": "completion only collator"}, "weight": 0.4}],
              keywords=words.replace(" question", ""), min_score=4),
        entry("look-alike", "out_of_scope", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}], keywords=words),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=fill)
          for i, fill in enumerate(FILLER)],
    ])
    prose = "question: with the completion only collator, is the response template tokenized differently? loss"
    ranked = rank(Report(text=prose), kb)
    assert ranked[0].entry == "template" and "the collator is named" in ranked[0].why
    assert "look-alike" in [c.entry for c in ranked]


def test_words_of_pasted_code_are_used_when_the_prose_says_too_little(tmp_path):
    """Word statistics prefer the prose; a paste that is nearly all code falls back to the whole text."""
    from bot.parse import parse_text

    kb = write_kb(tmp_path, [
        entry("template", "response_template_not_found", [{"why": "w", "when": {"text": "zzz"}, "weight": 5}],
              keywords="response template completion only collator marker tokenized differently loss zero"),
        *[entry(f"filler-{i}", "pad_token_missing", [{"why": "w", "when": {"text": f"zzz{i}"}}], keywords=words)
          for i, words in enumerate(FILLER)],
    ])
    report = parse_text(
        "help?\n```python\n# my loss is zero with the completion only collator: is the response template\n"
        "# tokenized differently?\ncollator = make_collator(tokenizer)\n```\n"
    )
    assert report.narrative is not None and "template" not in report.narrative
    assert [c.entry for c in rank(report, kb)][:1] == ["template"]


def test_untested_evidence_lists_the_signals_no_match_example_fires(tmp_path):
    """`lossdoctor kb coverage`: evidence that no match/ example exercises is listed (a rule no test checks);
    evidence an example fires, and evidence against the entry, are not."""
    from knowledge.check import untested_evidence

    write_kb(tmp_path, [entry("e", "pad_token_missing", [
        {"why": "fired", "when": {"text": "pad token"}, "weight": 2},
        {"why": "never fired", "when": {"text": "eos token"}, "weight": 2},
        {"why": "against", "when": {"text": "bos token"}, "weight": -2},
    ])])
    (tmp_path / "e" / "match").mkdir()
    (tmp_path / "e" / "match" / "one.txt").write_text("the tokenizer has no pad token\n")
    assert [(u.entry, u.why) for u in untested_evidence(load_kb(tmp_path))] == [("e", "never fired")]
