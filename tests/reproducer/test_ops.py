"""reproducer.ops: named fault and fix operations on a Scenario."""

from __future__ import annotations

import gc
import inspect
from pathlib import Path

import pytest

from knowledge.kb import load_kb
from knowledge.schema import Expect, Op
from reproducer.checks import baseline_reproduces, fix_verified
from reproducer.child import run_scenario
from reproducer.ops import OPS, UnknownOpError, apply_op, apply_ops
from reproducer.scenario import Scenario

ENTRIES = Path(__file__).resolve().parents[2] / "knowledge" / "entries"
FIX_OPS_OF_THE_BRIEF = """remove_data_collator use_lm_collator use_seq2seq_collator mask_prompt_labels
labels_from_input_ids rename_column_to_labels set_remove_unused_columns_false use_causal_lm_head
align_causal_labels map_string_labels_to_ids set_num_labels remap_labels_in_range set_pad_token
response_template_in_context add_generation_markers enable_input_require_grads
use_non_reentrant_checkpointing use_bf16_or_fp32 raise_max_length remove_raw_text_column disable_packing
accept_num_items_in_batch use_eager_attention set_float_labels use_matching_head upgrade""".split()
FAULT_OPS = """drop_labels mask_all_labels misname_labels_column use_base_model standalone_response_template
remove_generation_markers disable_input_require_grads reentrant_checkpointing string_labels labels_out_of_range
no_pad_token response_only_labels legacy_compute_loss_signature truncate_completions keep_text_column""".split()
REQUIRED_ARGS = {"upgrade": {"package": "trl", "version": "0.19.1"}}
CLASSIFICATION = Scenario(head="seq_cls", dataset_format="classification", num_labels=3)


def _kb_op_names() -> set[str]:
    names = set()
    for entry in load_kb(ENTRIES).entries:
        names |= {op.op for fix in entry.fixes for op in fix.ops}
        names |= {op.op for op in entry.reproduce.faults}
    return names


def test_every_op_of_the_brief_is_registered():
    assert not set(FIX_OPS_OF_THE_BRIEF + FAULT_OPS) - set(OPS)


def test_every_op_a_knowledge_entry_names_is_registered():
    names = _kb_op_names()
    assert names, "no knowledge entry names an op"
    assert not names - set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_returns_a_valid_new_scenario_and_leaves_its_input_alone(name):
    fn = OPS[name]
    assert fn.__doc__ and fn.__doc__.split(":")[0] in ("Fix", "Fault", "Fault setup", "Diagnostic")
    for start in (Scenario(), CLASSIFICATION):
        before = start.model_dump()
        result = apply_op(start, name, REQUIRED_ARGS.get(name))
        assert isinstance(result, Scenario)
        assert start.model_dump() == before
        Scenario.model_validate(result.model_dump())


def test_ops_take_the_scenario_first_and_only_keyword_args():
    for name, fn in OPS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].name == "scenario", name


def test_unknown_op_is_a_clear_error():
    with pytest.raises(UnknownOpError) as info:
        apply_ops(Scenario(), [Op(op="make_it_work")])
    assert "unknown reproducer operation 'make_it_work'" in str(info.value)
    assert "use_lm_collator" in str(info.value)


def test_bad_argument_value_fails_validation():
    with pytest.raises(ValueError):
        apply_op(Scenario(), "set_num_labels", {"num_labels": "many"})


def test_apply_ops_in_order_with_args_and_plain_names():
    result = apply_ops(Scenario(), [Op(op="misname_labels_column", args={"column": "answer_ids"}), "use_seq2seq_collator"])
    assert (result.label_column, result.labels_mode, result.collator) == ("answer_ids", "prompt_masked", "DataCollatorForSeq2Seq")
    assert apply_ops(result, [Op(op="rename_column_to_labels")]).label_column == "labels"


def test_mask_prompt_labels_uses_a_collator_that_keeps_labels():
    completion = Scenario(collator="DataCollatorForCompletionOnlyLM", dataset_format="text")
    fixed = apply_op(completion, "mask_prompt_labels")
    assert (fixed.dataset_format, fixed.labels_mode, fixed.collator) == ("tokenized", "prompt_masked", "DataCollatorForSeq2Seq")
    seq2seq = Scenario(collator="DataCollatorForSeq2Seq", collator_kwargs={"padding": True})
    assert apply_op(seq2seq, "mask_prompt_labels").collator_kwargs == {"padding": True}
    sft = Scenario(trainer="SFTTrainer")
    assert apply_op(sft, "mask_prompt_labels").collator == "default"


def test_use_lm_collator_drops_the_labels_column():
    fixed = apply_op(Scenario(labels_mode="prompt_masked", collator="DataCollatorWithPadding"), "use_lm_collator")
    assert (fixed.collator, fixed.collator_kwargs, fixed.labels_mode) == ("DataCollatorForLanguageModeling", {"mlm": False}, "none")


def test_class_label_ops():
    out_of_range = apply_op(CLASSIFICATION, "labels_out_of_range")
    assert out_of_range.class_label_values == [0, 1, 4]
    assert apply_op(out_of_range, "remap_labels_in_range").class_label_values == [0, 1, 2]
    assert apply_op(out_of_range, "set_num_labels").num_labels == 5
    assert apply_op(out_of_range, "set_num_labels", {"num_labels": 7}).num_labels == 7
    negative = CLASSIFICATION.model_copy(update={"class_label_values": [0, 1, -1]})
    assert apply_op(negative, "remap_labels_in_range").class_label_values == [1, 2, 0]
    assert apply_op(apply_op(CLASSIFICATION, "string_labels"), "map_string_labels_to_ids").class_label_kind == "int"


def test_use_matching_head_follows_the_data_and_family():
    assert apply_op(Scenario(family="bert", head="seq_cls"), "use_matching_head").head == "masked_lm"
    assert apply_op(Scenario(family="t5", head="base"), "use_matching_head").head == "seq2seq"
    assert apply_op(Scenario(head="seq_cls"), "use_matching_head").head == "causal_lm"
    assert apply_op(CLASSIFICATION.model_copy(update={"head": "causal_lm"}), "use_matching_head").head == "seq_cls"


def test_upgrade_records_the_requested_version():
    upgraded = apply_ops(Scenario(), [Op(op="upgrade", args={"package": "trl", "version": "0.19.1"})])
    upgraded = apply_op(upgraded, "upgrade", {"package": "transformers", "version": "4.55.4"})
    assert upgraded.versions == {"trl": "0.19.1", "transformers": "4.55.4"}
    assert Scenario().versions == {}


def test_standalone_response_template_adds_whitespace_the_data_does_not_have():
    faulty = apply_op(Scenario(), "standalone_response_template")
    assert faulty.response_template == " ### Answer:" and not faulty.response_template_in_context
    assert apply_op(faulty, "response_template_in_context").response_template_in_context


def test_truncate_completions_cuts_inside_the_prompt():
    assert apply_op(Scenario(prompt_words=6), "truncate_completions").max_length == 10
    assert apply_op(Scenario(), "raise_max_length").max_length == 1024


# -- faults and fixes as real runs: a fault breaks a working scenario, its fix mends it

WORKING = Scenario(labels_mode="prompt_masked", collator="DataCollatorForSeq2Seq")
ROUND_TRIPS = [
    # (fault ops, expectation, fix ops, responses_only)
    (["drop_labels"], Expect(exception_type="ValueError", message="did not return a loss"), ["labels_from_input_ids"], False),
    (["mask_all_labels"], Expect(symptom="loss_zero_or_nan"), ["mask_prompt_labels"], True),
    (["mask_all_labels"], Expect(symptom="no_supervised_tokens"), ["mask_prompt_labels"], True),
    (["misname_labels_column"], Expect(exception_type="ValueError", message="received are input_ids,attention_mask,labels"), ["set_remove_unused_columns_false", "rename_column_to_labels"], True),
    (["use_base_model"], Expect(exception_type="ValueError", message="last_hidden_state"), ["use_causal_lm_head"], True),
    (["response_only_labels"], Expect(exception_type="ValueError", message="Expected input batch_size"), ["align_causal_labels"], True),
    (["collator_drops_labels"], Expect(exception_type="ValueError", message="received are input_ids,attention_mask\\.$"), ["use_seq2seq_collator"], True),
    (["padding_collator"], Expect(exception_type="ValueError", message="excessive nesting"), ["use_seq2seq_collator"], True),
    (["reentrant_checkpointing", "disable_input_require_grads"], Expect(exception_type="RuntimeError", message="does not require grad"), ["use_non_reentrant_checkpointing"], True),
    (["legacy_compute_loss_signature"], Expect(exception_type="TypeError", message="num_items_in_batch"), ["accept_num_items_in_batch"], True),
    (["use_completion_only_collator", "standalone_response_template"], Expect(symptom="loss_zero_or_nan"), ["response_template_in_context"], True),
    (["truncate_completions"], Expect(symptom="loss_zero_or_nan"), ["raise_max_length"], True),
    (["no_pad_token"], Expect(), ["set_pad_token"], True),
]  # fmt: skip


@pytest.fixture(scope="module")
def frozen_imports():
    run_scenario(WORKING.model_dump())
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.parametrize(("faults", "expect", "fixes", "responses_only"), ROUND_TRIPS, ids=["+".join(t[0]) for t in ROUND_TRIPS])
def test_fault_breaks_and_fix_mends(frozen_imports, faults, expect, fixes, responses_only):
    broken = apply_ops(WORKING, faults)
    record = run_scenario(broken.model_dump())
    if expect == Expect():  # the fault alone must not break this run (Trainer patches the pad token)
        assert record["ok"], record["exception"]
    else:
        reproduced, reason = baseline_reproduces(record, expect, None)
        assert reproduced, reason
    mended = run_scenario(apply_ops(broken, fixes).model_dump())
    verified, reason = fix_verified(mended, responses_only=responses_only)
    assert verified, reason


def test_fault_on_classification(frozen_imports):
    record = run_scenario(apply_ops(CLASSIFICATION, ["string_labels"]).model_dump())
    assert record["exception"]["type"] == "ValueError"
    record = run_scenario(apply_ops(CLASSIFICATION, ["float_class_labels"]).model_dump())
    assert "Target size" in record["exception"]["message"]
    record = run_scenario(apply_ops(CLASSIFICATION, ["float_class_labels", "cast_labels_to_int"]).model_dump())
    assert fix_verified(record, responses_only=False)[0]


def test_seq2seq_collator_fix_keeps_the_padding_collator_for_class_labels():
    assert apply_ops(Scenario(), ["use_seq2seq_collator"]).collator == "DataCollatorForSeq2Seq"
    classification = Scenario(head="seq_cls", dataset_format="classification", collator="DataCollatorWithPadding")
    assert apply_ops(classification, ["use_seq2seq_collator"]).collator == "DataCollatorWithPadding"
