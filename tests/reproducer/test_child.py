"""reproducer.tiny + reproducer.child: scenarios as real tiny training runs (in process).

The failures of reproduction-facts.md §3 that happen on the current stack must happen the
same way here, and their fixes must train (`fix_verified`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.models import RunRecord
from knowledge.schema import Op
from reproducer import tiny
from reproducer.checks import fix_verified
from reproducer.child import run_scenario
from reproducer.ops import apply_ops
from reproducer.scenario import Scenario

ROOT = Path(__file__).resolve().parents[2]
CLS = {"head": "seq_cls", "dataset_format": "classification", "num_labels": 3, "label_column": "label"}
NO_LOSS = r"The model did not return a loss from the inputs, only the following keys: "
RAGGED = r"Unable to create tensor, .* Perhaps your features \(`{}` in this case\) have excessive nesting"

# id -> scenario fields of a §3 baseline that fails on the current stack
BASELINES = {
    "a_no_labels_default_collator": {"labels_mode": "none"},
    "a_seq2seq_collator_no_labels": {"labels_mode": "none", "collator": "DataCollatorForSeq2Seq"},
    "b1_labels_column_misnamed": {"labels_mode": "prompt_masked", "label_column": "target_ids", "collator": "DataCollatorForSeq2Seq"},
    "b2_custom_collator_drops_labels": {"labels_mode": "prompt_masked", "collator": "custom_drop_labels"},
    "b3_text_column_removed": {"dataset_format": "text", "collator": "custom_reads_text"},
    "b4_text_and_ids_collator_reads_text": {"labels_mode": "input_ids", "keep_text_column": True, "collator": "custom_reads_text"},
    "c1_padding_collator_ragged_labels": {"labels_mode": "prompt_masked", "collator": "DataCollatorWithPadding"},
    "c1_trainer_default_collator_ragged_labels": {"labels_mode": "prompt_masked"},
    "c2_default_data_collator": {"labels_mode": "prompt_masked", "pass_processing_class": False},
    "c3_lm_collator_with_labels": {"labels_mode": "prompt_masked", "collator": "DataCollatorForLanguageModeling"},
    "c4_labels_not_aligned": {"labels_mode": "response_only", "collator": "DataCollatorForSeq2Seq"},
    "d5_assistant_only_without_markers": {"trainer": "SFTTrainer", "dataset_format": "messages", "assistant_only_loss": True, "chat_template_generation_markers": False},
    "d6_completion_truncated_away": {"trainer": "SFTTrainer", "dataset_format": "prompt_completion", "max_length": 8},
    "e_base_model_without_head": {"head": "base", "labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"},
    "f_reentrant_checkpointing_hook_removed": {"lora": True, "gradient_checkpointing": True, "use_reentrant": True, "enable_input_require_grads": False, "labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"},
    "g1_string_labels_padding_collator": {**CLS, "class_label_kind": "str"},
    "g2_string_labels_default_data_collator": {**CLS, "class_label_kind": "str", "collator": "default_data_collator"},
    "g3_label_out_of_range": {**CLS, "class_label_values": [0, 1, 4]},
    "g4_label_negative": {**CLS, "class_label_values": [0, 1, -1]},
    "g5_no_pad_token_id": {**CLS, "pad_token_in_config": False, "pass_processing_class": False, "collator": "DataCollatorWithPadding"},
    "g6_float_labels_multiclass": {**CLS, "class_label_kind": "float"},
}  # fmt: skip

EXPECTED = {
    "a_no_labels_default_collator": ("ValueError", NO_LOSS + r"logits\. For reference, the inputs it received are input_ids,attention_mask\.$"),
    "a_seq2seq_collator_no_labels": ("ValueError", NO_LOSS + r"logits\. For reference, the inputs it received are input_ids,attention_mask,labels\.$"),
    "b1_labels_column_misnamed": ("ValueError", NO_LOSS + r"logits\. For reference, the inputs it received are input_ids,attention_mask,labels\.$"),
    "b2_custom_collator_drops_labels": ("ValueError", NO_LOSS + r"logits\. For reference, the inputs it received are input_ids,attention_mask\.$"),
    "b3_text_column_removed": ("ValueError", r"No columns in the dataset match the model's forward method signature: .* The following columns have been ignored: \[text\]\. .*remove_unused_columns=False"),
    "b4_text_and_ids_collator_reads_text": ("KeyError", r"^'text'$"),
    "c1_padding_collator_ragged_labels": ("ValueError", RAGGED.format("labels")),
    "c1_trainer_default_collator_ragged_labels": ("ValueError", RAGGED.format("labels")),
    "c2_default_data_collator": ("ValueError", r"^expected sequence of length \d+ at dim 1 \(got \d+\)$"),
    "c3_lm_collator_with_labels": ("ValueError", RAGGED.format("labels")),
    "c4_labels_not_aligned": ("ValueError", r"^Expected input batch_size \(\d+\) to match target batch_size \(\d+\)\.$"),
    "d5_assistant_only_without_markers": ("ValueError", r"^The chat template is not training-compatible \(missing prefix-preservation or `\{% generation %\}` markers\)"),
    "d6_completion_truncated_away": ("ValueError", r"^num_samples should be a positive integer value, but got num_samples=0$"),
    "e_base_model_without_head": ("ValueError", NO_LOSS + r"last_hidden_state\. For reference, the inputs it received are input_ids,attention_mask,labels\.$"),
    "f_reentrant_checkpointing_hook_removed": ("RuntimeError", r"^element 0 of tensors does not require grad and does not have a grad_fn$"),
    "g1_string_labels_padding_collator": ("ValueError", RAGGED.format("label")),
    "g2_string_labels_default_data_collator": ("ValueError", r"^too many dimensions 'str'$"),
    "g3_label_out_of_range": ("IndexError", r"^Target 4 is out of bounds\.$"),
    "g4_label_negative": ("IndexError", r"^Target -1 is out of bounds\.$"),
    "g5_no_pad_token_id": ("ValueError", r"^Cannot handle batch sizes > 1 if no padding token is defined\.$"),
    "g6_float_labels_multiclass": ("ValueError", r"^Target size \(torch\.Size\(\[2\]\)\) must be the same as input size \(torch\.Size\(\[2, 3\]\)\)$"),
}  # fmt: skip

# silent failures: training "works" but nothing (or the wrong thing) is learned
SILENT = {
    "d1_all_labels_masked": {"labels_mode": "all_masked", "collator": "DataCollatorForSeq2Seq"},
    "d2_all_labels_masked_no_nan_filter": {"labels_mode": "all_masked", "collator": "DataCollatorForSeq2Seq", "logging_nan_inf_filter": False},
    "d4_response_template_not_found_sft": {"trainer": "SFTTrainer", "dataset_format": "text", "collator": "DataCollatorForCompletionOnlyLM", "response_template": " Answer:"},
    "d4_response_template_not_found_trainer": {"dataset_format": "tokenized", "collator": "DataCollatorForCompletionOnlyLM", "response_template": " Answer:"},
}  # fmt: skip

# (baseline id, fix ops, responses_only)
FIXES = [
    ("a_no_labels_default_collator", ["use_lm_collator"], False),
    ("a_no_labels_default_collator", ["labels_from_input_ids", "use_seq2seq_collator"], False),
    ("a_seq2seq_collator_no_labels", ["use_lm_collator"], False),
    ("a_seq2seq_collator_no_labels", ["mask_prompt_labels"], True),
    ("b1_labels_column_misnamed", ["rename_column_to_labels"], True),
    ("b2_custom_collator_drops_labels", ["use_seq2seq_collator"], True),
    ("b3_text_column_removed", ["set_remove_unused_columns_false"], False),
    ("b4_text_and_ids_collator_reads_text", ["set_remove_unused_columns_false"], False),
    ("c1_padding_collator_ragged_labels", ["use_seq2seq_collator"], True),
    ("c2_default_data_collator", ["use_seq2seq_collator"], True),
    ("c3_lm_collator_with_labels", ["use_seq2seq_collator"], True),
    ("c4_labels_not_aligned", ["align_causal_labels"], True),
    ("d1_all_labels_masked", ["mask_prompt_labels"], True),
    ("d4_response_template_not_found_sft", ["response_template_in_context"], True),
    ("d4_response_template_not_found_trainer", ["response_template_in_context"], True),
    ("d4_response_template_not_found_trainer", ["mask_prompt_labels"], True),
    ("d5_assistant_only_without_markers", ["add_generation_markers"], True),
    ("d6_completion_truncated_away", ["raise_max_length"], True),
    ("e_base_model_without_head", ["use_causal_lm_head"], True),
    ("f_reentrant_checkpointing_hook_removed", ["enable_input_require_grads"], True),
    ("f_reentrant_checkpointing_hook_removed", ["use_non_reentrant_checkpointing"], True),
    ("g1_string_labels_padding_collator", ["map_string_labels_to_ids"], False),
    ("g2_string_labels_default_data_collator", ["map_string_labels_to_ids", "remove_data_collator"], False),
    ("g3_label_out_of_range", ["remap_labels_in_range"], False),
    ("g3_label_out_of_range", ["set_num_labels"], False),
    ("g4_label_negative", ["remap_labels_in_range"], False),
    ("g5_no_pad_token_id", ["set_pad_token"], False),
    ("g6_float_labels_multiclass", ["cast_labels_to_int"], False),
]


def scenario(fields: dict) -> dict:
    return Scenario(**fields).model_dump()


@pytest.fixture(scope="module", autouse=True)
def frozen_imports():
    """Import the stack and freeze it, as the warm pool does: Trainer's gc.collect() then costs ~nothing."""
    run_scenario(scenario({"labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"}))
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.parametrize("case", sorted(BASELINES))
def test_current_stack_failure_reproduces(case):
    record = run_scenario(scenario(BASELINES[case]))
    exc_type, pattern = EXPECTED[case]
    assert record["ok"] is False
    assert record["exception"]["type"] == exc_type, record["exception"]
    assert record["exception"]["message"] and __import__("re").search(pattern, record["exception"]["message"]), record["exception"]


def test_all_masked_labels_are_logged_as_zero_but_are_nan():
    record = run_scenario(scenario(SILENT["d1_all_labels_masked"]))
    assert record["ok"] and record["loss"] == 0.0  # Trainer's logging_nan_inf_filter hides the NaN
    assert record["losses"] and all(math.isnan(x) for x in record["losses"])
    assert record["supervised_tokens"] == 0 and record["params_changed"] is False


def test_all_masked_labels_without_nan_filter_log_nan():
    record = run_scenario(scenario(SILENT["d2_all_labels_masked_no_nan_filter"]))
    assert record["ok"] and math.isnan(record["loss"])


@pytest.mark.parametrize("case", ["d4_response_template_not_found_sft", "d4_response_template_not_found_trainer"])
def test_response_template_not_found_masks_every_label(case):
    record = run_scenario(scenario(SILENT[case]))
    assert record["ok"] and record["supervised_tokens"] == 0
    assert any("Could not find response key ` Answer:`" in w and "ignored in loss calculation" in w for w in record["warnings"])
    assert any("re-implementation" in w or "trl 0.19" in w for w in record["warnings"])  # which collator ran


def test_lm_collator_supervises_prompt_tokens():
    """c5: the LM collator trains on the prompt too, so a responses-only check must fail."""
    record = run_scenario(scenario({"labels_mode": "none", "collator": "DataCollatorForLanguageModeling"}))
    assert record["ok"] and record["prompt_tokens_supervised"] > 0
    assert fix_verified(record, responses_only=False)[0]
    assert not fix_verified(record, responses_only=True)[0]


@pytest.mark.parametrize(("case", "ops", "responses_only"), FIXES, ids=[f"{c}+{'+'.join(o)}" for c, o, _ in FIXES])
def test_fix_trains(case, ops, responses_only):
    base = Scenario(**{**BASELINES, **SILENT}[case])
    record = run_scenario(apply_ops(base, [Op(op=name) for name in ops]).model_dump())
    verified, reason = fix_verified(record, responses_only=responses_only)
    assert verified, (reason, record["exception"])
    assert len(record["losses"]) >= 2  # at least two optimizer steps (LoRA's lora_B starts at zero)


def test_record_has_exactly_the_run_record_fields():
    record = run_scenario(scenario({"labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"}))
    assert set(record) == set(RunRecord.model_fields)
    parsed = RunRecord.model_validate(record)
    assert parsed.ok and parsed.device == "cpu" and parsed.seed == 0
    assert parsed.versions["transformers"] and parsed.versions["trl"] and parsed.grad_norm > 0
    assert parsed.seconds > 0


def test_same_seed_same_result_and_other_seed_other_data():
    fields = {"labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"}
    first, second = run_scenario(scenario(fields)), run_scenario(scenario(fields))
    assert first["losses"] == second["losses"] and first["supervised_tokens"] == second["supervised_tokens"]
    other = run_scenario(scenario({**fields, "seed": 1}))
    assert other["losses"] != first["losses"]


def test_build_errors_go_into_the_record():
    record = run_scenario(scenario({"family": "t5", "head": "causal_lm"}))  # T5 has no causal-LM class
    assert record["ok"] is False and record["exception"]["type"] == "ValueError"
    assert "T5Config" in record["exception"]["message"]


def test_legacy_compute_loss_signature_fails_like_user_code():
    record = run_scenario(scenario({"labels_mode": "input_ids", "collator": "DataCollatorForSeq2Seq", "compute_loss_signature": "legacy_no_kwargs"}))
    assert record["exception"] == {
        "type": "TypeError",
        "message": "CustomTrainer.compute_loss() got an unexpected keyword argument 'num_items_in_batch'",
    }


def test_gradient_accumulation_runs_more_micro_batches():
    fields = {"labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"}
    single = run_scenario(scenario(fields))
    double = run_scenario(scenario({**fields, "gradient_accumulation_steps": 2}))
    assert double["ok"] and len(double["losses"]) == len(single["losses"]) == 3
    assert double["supervised_tokens"] > single["supervised_tokens"]


# -- building blocks


def test_tokenizer_is_deterministic_and_small():
    trained = tiny._trained_tokenizer()
    tiny._TRAINED_TOKENIZER = None
    try:
        assert tiny._trained_tokenizer() == trained
    finally:
        tiny._TRAINED_TOKENIZER = trained
    tok = tiny.build_tokenizer()
    assert 400 <= len(tok) <= 520
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.bos_token == "<s>" and tok.mask_token == "<mask>"
    assert tok.convert_tokens_to_ids("<|assistant|>") != tok.unk_token_id
    assert tiny.build_tokenizer(has_pad=False).pad_token is None


def test_chat_templates_with_and_without_generation_markers():
    messages = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "the dog"}]
    with_markers = tiny.build_tokenizer(generation_markers=True)
    without = tiny.build_tokenizer(generation_markers=False)
    assert "{% generation %}" in with_markers.chat_template and "{% generation %}" not in without.chat_template
    mask = with_markers.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)["assistant_masks"]
    assert 0 < sum(mask) < len(mask)
    assert with_markers.apply_chat_template(messages, tokenize=False) == without.apply_chat_template(messages, tokenize=False)


def test_response_marker_ids_in_context_differ_from_standalone():
    tok = tiny.build_tokenizer()
    fields = scenario({"response_template": " Answer:", "dataset_format": "text"})
    in_context = tiny.marker_ids(fields, tok)
    standalone = tok.encode(" Answer:", add_special_tokens=False)
    assert in_context and in_context != standalone
    row = tok.encode(tiny.build_rows(fields, tok)[0]["text"], add_special_tokens=False)
    assert any(row[i : i + len(in_context)] == in_context for i in range(len(row)))
    assert not any(row[i : i + len(standalone)] == standalone for i in range(len(row)))


def test_rows_have_variable_lengths_and_requested_labels():
    tok = tiny.build_tokenizer()
    rows = tiny.build_rows(scenario({"labels_mode": "prompt_masked", "num_rows": 6}), tok)
    assert len(rows) == 6 and len({len(r["input_ids"]) for r in rows}) > 1
    for row in rows:
        assert len(row["labels"]) == len(row["input_ids"]) and row["labels"][0] == -100 and row["labels"][-1] != -100
    renamed = tiny.build_rows(scenario({"labels_mode": "input_ids", "label_column": "target_ids", "keep_text_column": True}), tok)
    assert set(renamed[0]) == {"input_ids", "attention_mask", "target_ids", "text"}
    classes = tiny.build_rows(scenario({**CLS, "class_label_kind": "str"}), tok)
    assert {type(r["label"]) for r in classes} == {str}


FAMILY_HEADS = [
    *[(f, h) for f in ("llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "gpt_neox") for h in ("causal_lm", "base", "seq_cls")],
    *[(f, h) for f in ("t5", "bart") for h in ("seq2seq", "base")],
    ("bart", "seq_cls"),
    *[(f, h) for f in ("bert", "roberta") for h in ("masked_lm", "base", "seq_cls")],
    ("clip", "base"),
]


@pytest.mark.parametrize(("family", "head"), FAMILY_HEADS)
def test_every_family_and_head_builds_tiny_with_lora(family, head):
    tok = tiny.build_tokenizer()
    fields = scenario({"family": family, "head": head, "lora": head != "masked_lm"})
    config = tiny.build_config(fields, tok)
    config = getattr(config, "text_config", None) or config  # CLIP: the text tower's config (the vision tower's is as small)
    hidden = next(getattr(config, k) for k in ("hidden_size", "d_model", "n_embd") if hasattr(config, k))
    layers = next(getattr(config, k) for k in ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers") if hasattr(config, k))
    assert hidden <= 64 and layers == 2
    model = tiny.build_model(fields, tok)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if fields["lora"]:
        assert any("lora_A" in n for n in trainable)


def test_a_scenario_trains_on_each_family():
    for family in ("qwen2", "gpt2", "gpt_neox", "phi3"):
        record = run_scenario(scenario({"family": family, "labels_mode": "prompt_masked", "collator": "DataCollatorForSeq2Seq"}))
        assert fix_verified(record, responses_only=True)[0], (family, record["exception"])
    for family in ("t5", "bart"):
        record = run_scenario(scenario({"family": family, "head": "seq2seq", "trainer": "Seq2SeqTrainer", "labels_mode": "response_only", "collator": "DataCollatorForSeq2Seq"}))
        assert fix_verified(record, responses_only=False)[0], (family, record["exception"])
    record = run_scenario(scenario({"family": "bert", "head": "masked_lm", "collator": "DataCollatorForLanguageModeling"}))
    assert fix_verified(record, responses_only=False)[0], record["exception"]


# -- the child process


def test_child_modules_import_nothing_of_lossdoctor_nor_pydantic():
    code = (
        "import sys, reproducer.child, reproducer.tiny;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'bot', 'knowledge'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (ROOT / "reproducer" / "__init__.py").read_text().strip() == ""


def test_child_cli_reads_runs_on_stdin_and_writes_one_json_object():
    base = Scenario(labels_mode="none", collator="DataCollatorForSeq2Seq")
    request = {"runs": [
        {"fix": None, "scenario": base.model_dump()},
        {"fix": "use-lm-collator", "scenario": apply_ops(base, [Op(op="use_lm_collator")]).model_dump()},
    ]}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "reproducer.child"], input=json.dumps(request), cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=True,
    )
    answer = json.loads(out.stdout)  # stdout holds the JSON answer and nothing else
    assert set(answer) == {"runs", "versions", "device"}
    assert answer["versions"] == tiny.installed_versions() and answer["device"] == "cpu"
    baseline, fix = (RunRecord.model_validate(r) for r in answer["runs"])
    assert baseline.fix is None and baseline.exception.type == "ValueError"
    assert fix.fix == "use-lm-collator" and fix.ok and fix.params_changed


def legacy_python() -> str:
    """LOSSDOCTOR_LEGACY_PYTHON, else the cached legacy environment (built on first use)."""
    if os.environ.get("LOSSDOCTOR_LEGACY_PYTHON"):
        return os.environ["LOSSDOCTOR_LEGACY_PYTHON"]
    from bot.settings import Settings
    from reproducer.envs import EnvManager

    home = Path(os.environ.get("LOSSDOCTOR_TEST_ENVS", Path.home() / ".cache" / "lossdoctor-test-envs"))
    env = EnvManager(Settings(home=home, env_disk_budget_gb=8.0)).ensure({"transformers": "4.55.4", "trl": "0.19.1"})
    return str(env.python)


@pytest.mark.slow
def test_child_runs_on_the_legacy_stack():
    LEGACY_PYTHON = legacy_python()  # noqa: N806
    seed = Scenario(trainer="SFTTrainer", dataset_format="text", collator="DataCollatorForSeq2Seq")
    gc_lora = Scenario(lora=True, gradient_checkpointing=True, labels_mode="prompt_masked", collator="DataCollatorForSeq2Seq")
    request = {"runs": [{"fix": None, "scenario": seed.model_dump()}, {"fix": None, "scenario": gc_lora.model_dump()}]}
    out = subprocess.run(
        [LEGACY_PYTHON, "-m", "reproducer.child"], input=json.dumps(request), cwd=ROOT,
        capture_output=True, text=True, timeout=600, check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["versions"]["trl"].startswith("0.")
    seed_run, gc_run = answer["runs"]
    assert seed_run["exception"]["message"].startswith(NO_LOSS + "logits,past_key_values. For reference, the inputs it received are input_ids,attention_mask,labels.")
    assert gc_run["exception"]["type"] == "RuntimeError"
