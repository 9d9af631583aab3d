"""reproducer.from_report: the user's setup from the report, entry defaults for the gaps."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from bot.models import ExceptionInfo, Report
from knowledge.kb import load_entry
from knowledge.schema import Entry, Op
from reproducer.checks import baseline_reproduces, fix_verified
from reproducer.child import run_scenario
from reproducer.from_report import UNSLOTH_MAPPED, build_scenario
from reproducer.ops import apply_ops
from reproducer.scenario import Scenario

ENTRIES = Path(__file__).resolve().parents[2] / "knowledge" / "entries"
SEQ2SEQ_DEFAULTS = {
    "trainer": "Trainer", "head": "causal_lm", "collator": "DataCollatorForSeq2Seq",
    "dataset_format": "tokenized", "labels_mode": "none",
}  # fmt: skip


def build(report: Report, defaults: dict | None = None, faults: list[Op] | None = None):
    return build_scenario(report, defaults or {}, faults or [])


def test_empty_report_gives_the_entry_defaults():
    scenario, sources = build(Report(), SEQ2SEQ_DEFAULTS)
    assert scenario == Scenario(**SEQ2SEQ_DEFAULTS)
    assert set(sources) == set(Scenario.model_fields) and set(sources.values()) == {"default"}


@pytest.mark.parametrize(
    ("model_type", "family"),
    [("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen2"), ("mixtral", "mistral"), ("gemma2", "gemma"),
     ("phi3", "phi3"), ("gpt2", "gpt2"), ("gpt_neox", "gpt_neox"), ("t5", "t5"), ("bart", "bart"),
     ("distilbert", "bert"), ("roberta", "roberta")],
)  # fmt: skip
def test_model_type_gives_the_family(model_type, family):
    scenario, sources = build(Report(model_type=model_type))
    assert scenario.family == family and sources["family"] == "report"


def test_unknown_model_type_is_a_llama_stand_in_said_in_the_sources():
    scenario, sources = build(Report(model_type="falcon"))
    assert scenario.family == "llama"
    assert sources["family"] == "report (model_type 'falcon' is not modelled: llama-like stand-in)"


def test_family_from_the_model_name_when_no_model_type():
    scenario, sources = build(Report(model_names=["Qwen/Qwen2.5-0.5B-Instruct"]))
    assert scenario.family == "qwen2" and sources["family"] == "report (from 'Qwen/Qwen2.5-0.5B-Instruct')"


def test_pooler_output_in_the_returned_keys_means_a_bert_like_encoder():
    report = Report(model_names=["sentence-transformers/LaBSE"], returned_keys=["last_hidden_state", "pooler_output"])
    scenario, sources = build(report)
    assert scenario.family == "bert" and "pooler_output" in sources["family"]
    # a name that says the family wins over the keys
    scenario, _ = build(Report(model_names=["roberta-base"], returned_keys=["last_hidden_state", "pooler_output"]))
    assert scenario.family == "roberta"


@pytest.mark.parametrize(
    ("classes", "head"),
    [(["AutoModel"], "base"), (["LlamaModel"], "base"), (["AutoModelForCausalLM"], "causal_lm"),
     (["FastLanguageModel"], "causal_lm"), (["GPT2LMHeadModel"], "causal_lm"),
     (["AutoModelForSequenceClassification"], "seq_cls"), (["AutoModelForSeq2SeqLM"], "seq2seq"),
     (["BertForMaskedLM"], "masked_lm"), (["PeftModel", "AutoModelForCausalLM"], "causal_lm"),
     (["BertForPreTraining"], "pretraining"), (["AlbertForPreTraining"], "pretraining")],
)  # fmt: skip
def test_model_class_gives_the_head(classes, head):
    scenario, sources = build(Report(model_classes=classes))
    assert scenario.head == head and sources["head"].startswith("report")


def test_t5_conditional_generation_is_seq2seq():
    scenario, _ = build(Report(model_type="t5", model_classes=["T5ForConditionalGeneration"]))
    assert (scenario.family, scenario.head) == ("t5", "seq2seq")


def test_trainer_user_subclass_maps_to_its_base():
    scenario, sources = build(Report(trainer="WeightedTrainer", trainer_bases=["Trainer"]))
    assert scenario.trainer == "Trainer" and sources["trainer"] == "report (WeightedTrainer subclasses Trainer)"
    scenario, sources = build(Report(trainer="Seq2SeqTrainer"))
    assert scenario.trainer == "Seq2SeqTrainer" and sources["trainer"] == "report"


def test_unsloth_setup_maps_to_trl_sfttrainer():
    report = Report(
        trainer="SFTTrainer", model_classes=["FastLanguageModel"], model_names=["unsloth/llama-3-8b-bnb-4bit"],
        versions={"unsloth": "2025.2.15", "trl": "0.15.2"}, collator="DataCollatorForSeq2Seq", dataset_format="text",
    )  # fmt: skip
    scenario, sources = build(report, SEQ2SEQ_DEFAULTS)
    assert (scenario.trainer, scenario.family, scenario.head) == ("SFTTrainer", "llama", "causal_lm")
    assert sources["trainer"] == UNSLOTH_MAPPED == "report (unsloth mapped to trl SFTTrainer)"
    assert (scenario.collator, scenario.dataset_format) == ("DataCollatorForSeq2Seq", "text")


def test_collator_and_its_literal_kwargs():
    report = Report(
        collator="DataCollatorForSeq2Seq",
        collator_kwargs={"tokenizer": "tokenizer", "padding": "True", "pad_to_multiple_of": "8", "model": "model"},
    )
    scenario, sources = build(report, {"collator": "DataCollatorWithPadding", "collator_kwargs": {"padding": "longest"}})
    assert scenario.collator == "DataCollatorForSeq2Seq"
    assert scenario.collator_kwargs == {"padding": True, "pad_to_multiple_of": 8}
    assert sources["collator"] == sources["collator_kwargs"] == "report"


def test_custom_collator_keeps_the_entrys_model_of_it():
    scenario, sources = build(Report(collator="collate_fn"), {"collator": "custom_drop_labels"})
    assert scenario.collator == "custom_drop_labels"
    assert sources["collator"] == "default (your collator 'collate_fn' modelled as custom_drop_labels)"


def test_response_template_literal_or_token_ids_with_context():
    scenario, _ = build(Report(flags={"response_template": "### Answer:"}))
    assert (scenario.response_template, scenario.response_template_in_context) == ("### Answer:", False)
    encoded = Report(flags={"response_template": "tokenizer.encode('\\n### Answer:', add_special_tokens=False)[2:]"})
    scenario, sources = build(encoded)
    # ids sliced from an encoding with context are the template's own tokens, not the row's
    assert not scenario.response_template_in_context and scenario.response_template == "### Answer:"
    assert sources["response_template_in_context"].startswith("report (ids sliced from an encoding with context")
    scenario, _ = build(Report(flags={"response_template": "[22559, 25, 220]"}))
    assert scenario.response_template_in_context


def test_out_of_bounds_target_in_the_error_is_a_class_id_in_the_data():
    report = Report(flags={"num_labels": 12}, exceptions=[ExceptionInfo(type="IndexError", message="Target 12 is out of bounds.")])
    scenario, sources = build(report, {"head": "seq_cls", "dataset_format": "classification"}, [Op(op="labels_out_of_range")])
    assert (scenario.num_labels, scenario.class_label_values) == (12, [0, 1, 12])
    assert sources["class_label_values"] == "report (Target 12 in the error)"
    scenario, _ = build(Report(flags={"num_labels": 10}), {"head": "seq_cls"}, [Op(op="labels_out_of_range")])
    assert scenario.class_label_values == [0, 1, 11]  # the fault, on the report's num_labels


def test_lm_collator_means_token_data_without_labels():
    report = Report(collator="DataCollatorForLanguageModeling", dataset_format="classification")
    scenario, sources = build(report, {"labels_mode": "input_ids"})
    assert (scenario.dataset_format, scenario.labels_mode) == ("tokenized", "none")
    assert sources["labels_mode"] == "report (DataCollatorForLanguageModeling builds the labels)"
    scenario, _ = build(Report(collator="DataCollatorForLanguageModeling", dataset_format="tokenized_with_labels"))
    assert scenario.labels_mode != "none"
    writes_labels = Report(collator="DataCollatorForLanguageModeling", text='return {"input_ids": ids, "labels": labels}')
    assert build(writes_labels, {"labels_mode": "prompt_masked"})[0].labels_mode == "prompt_masked"


def test_assistant_only_loss_means_conversational_data():
    scenario, sources = build(Report(flags={"assistant_only_loss": True}), {"trainer": "SFTTrainer", "dataset_format": "prompt_completion"})
    assert scenario.dataset_format == "messages" and sources["dataset_format"].startswith("report")


def test_default_data_collator_means_rows_of_one_length_unless_the_error_says_otherwise():
    scenario, _ = build(Report(collator="default_data_collator"))
    assert scenario.padded_rows
    ragged = Report(collator="default_data_collator", exceptions=[ExceptionInfo(type="ValueError", message="expected sequence of length 24 at dim 1 (got 27)")])
    assert not build(ragged)[0].padded_rows


def test_column_ending_in_ids_holds_the_misnamed_targets():
    report = Report(dataset_format="tokenized", dataset_columns=["input_ids", "attention_mask", "target_ids", "prompt"])
    scenario, sources = build(report)
    assert (scenario.label_column, scenario.labels_mode) == ("target_ids", "prompt_masked")
    assert sources["label_column"] == "report"


def test_frozen_embeddings_without_peft():
    text = "for p in model.bert.embeddings.parameters():\n    p.requires_grad = False\nmodel.gradient_checkpointing_enable()"
    scenario, _ = build(Report(text=text), {"lora": True})
    assert scenario.freeze_embeddings and not scenario.lora
    scenario, _ = build(Report(text="model.get_input_embeddings().requires_grad_(False)", uses_peft=True))
    assert scenario.freeze_embeddings and scenario.lora


def test_dataset_format_and_labels_column():
    scenario, sources = build(Report(dataset_format="tokenized"), {"labels_mode": "prompt_masked"})
    assert (scenario.dataset_format, scenario.labels_mode) == ("tokenized", "none")
    assert sources["labels_mode"] == "report (no labels column)"
    scenario, _ = build(Report(dataset_format="tokenized_with_labels"), {"labels_mode": "none"})
    assert scenario.labels_mode == "input_ids"
    scenario, _ = build(Report(dataset_format="tokenized_with_labels"), {"labels_mode": "response_only"})
    assert scenario.labels_mode == "response_only"  # the entry says which labels, the report that there are some
    scenario, _ = build(Report(dataset_format="classification", dataset_columns=["text", "label"]))
    assert (scenario.dataset_format, scenario.label_column) == ("classification", "label")
    scenario, sources = build(Report(dataset_format="tokenized", dataset_columns=["text", "input_ids"]))
    assert scenario.keep_text_column and sources["keep_text_column"].startswith("report")


def test_trainer_gets_raw_text_tokenised_unless_the_collator_tokenises_it():
    scenario, sources = build(Report(trainer="Trainer", dataset_format="text"))
    assert scenario.dataset_format == "tokenized" and sources["dataset_format"] == "report (text tokenised for Trainer)"
    scenario, _ = build(Report(trainer="Trainer", dataset_format="text"), {"collator": "custom_reads_text"})
    assert scenario.dataset_format == "text"
    scenario, _ = build(Report(trainer="SFTTrainer", dataset_format="messages"))
    assert scenario.dataset_format == "messages"


def test_flags_override_defaults_with_their_types():
    report = Report(
        flags={
            "remove_unused_columns": False, "max_seq_length": 2048, "packing": "True", "fp16": True, "bf16": "false",
            "gradient_checkpointing": True, "use_reentrant": True, "gradient_accumulation_steps": 16,
            "num_labels": 5, "completion_only_loss": None, "max_length": "tokenizer.model_max_length",
        },
        uses_peft=True,
    )  # fmt: skip
    scenario, sources = build(report, {"remove_unused_columns": True, "fp16": False})
    assert scenario.remove_unused_columns is False and scenario.max_length == 2048 and scenario.packing is True
    assert scenario.fp16 is True and scenario.bf16 is False and scenario.gradient_checkpointing and scenario.use_reentrant
    assert scenario.num_labels == 5 and scenario.lora and sources["lora"] == "report"
    assert scenario.gradient_accumulation_steps == 4 and sources["gradient_accumulation_steps"] == "report (16, capped at 4)"
    assert sources["max_length"] == "report" and sources["fp16"] == "report"


def test_old_compute_loss_signature_from_defined_functions():
    old = Report(defined_functions=["compute_loss(self, model, inputs, return_outputs=False)"])
    assert build(old)[0].compute_loss_signature == "legacy_no_kwargs"
    new = Report(defined_functions=["compute_loss(self, model, inputs, return_outputs=False, **kwargs)"])
    assert build(new)[0].compute_loss_signature == "current"


def test_faults_change_only_what_the_report_does_not_state():
    faults = [Op(op="drop_labels"), Op(op="padding_collator")]
    scenario, sources = build(Report(), {"labels_mode": "prompt_masked"}, faults)
    assert (scenario.labels_mode, scenario.collator) == ("none", "DataCollatorWithPadding")
    assert sources["labels_mode"] == "default (fault drop_labels)"
    assert sources["collator"] == "default (fault padding_collator)"
    stated = Report(dataset_format="tokenized_with_labels", collator="DataCollatorForSeq2Seq")
    scenario, sources = build(stated, {"labels_mode": "prompt_masked"}, faults)
    assert (scenario.labels_mode, scenario.collator) == ("prompt_masked", "DataCollatorForSeq2Seq")
    assert sources["labels_mode"].startswith("report") and sources["collator"] == "report"


def test_two_reports_of_one_entry_with_other_collators_or_data_give_other_scenarios():
    entry = _entry("seq2seq-collator-creates-no-labels")
    defaults, faults = entry.reproduce.scenario, entry.reproduce.faults
    seq2seq = Report(trainer="Trainer", collator="DataCollatorForSeq2Seq", dataset_format="tokenized")
    padding = Report(trainer="Trainer", collator="DataCollatorWithPadding", dataset_format="tokenized")
    sft_text = Report(trainer="SFTTrainer", collator="DataCollatorForSeq2Seq", dataset_format="text")
    scenarios = [build_scenario(r, defaults, faults)[0] for r in (seq2seq, padding, sft_text)]
    assert scenarios[0] != scenarios[1] and scenarios[0] != scenarios[2] and scenarios[1] != scenarios[2]
    assert scenarios[1].collator == "DataCollatorWithPadding"
    assert (scenarios[2].trainer, scenarios[2].dataset_format) == ("SFTTrainer", "text")


def _entry(entry_id: str) -> Entry:
    return load_entry(ENTRIES / entry_id / "entry.yaml")


@pytest.fixture(scope="module")
def frozen_imports():
    run_scenario(Scenario(labels_mode="prompt_masked", collator="DataCollatorForSeq2Seq").model_dump())
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def test_seed_mechanism_on_the_current_stack_reproduces_and_both_fixes_verify(frozen_imports):
    """Trainer + DataCollatorForSeq2Seq on tokenized chat data without labels (issue 4, 'Done when')."""
    report = Report(
        trainer="Trainer", model_classes=["AutoModelForCausalLM"], model_names=["Qwen/Qwen2.5-0.5B-Instruct"],
        collator="DataCollatorForSeq2Seq", dataset_format="tokenized", dataset_columns=["input_ids", "attention_mask"],
        returned_keys=["logits"], received_inputs=["input_ids", "attention_mask", "labels"],
    )  # fmt: skip
    entry = _entry("seq2seq-collator-creates-no-labels")
    scenario, sources = build_scenario(report, entry.reproduce.scenario, entry.reproduce.faults)
    assert scenario.family == "qwen2" and sources["collator"] == "report"
    baseline = run_scenario(scenario.model_dump())
    reproduced, reason = baseline_reproduces(baseline, entry.reproduce.expect, report)
    assert reproduced, reason
    assert "same keys returned and inputs received" in reason
    for fix_id in ("use-lm-collator", "keep-train-on-responses-only"):
        fix = next(f for f in entry.fixes if f.id == fix_id)
        record = run_scenario(apply_ops(scenario, fix.ops).model_dump())
        verified, why = fix_verified(record, responses_only=fix.responses_only)
        assert verified, (fix_id, why)


def test_unsloth_seed_report_trains_on_trl_1_16_so_it_does_not_reproduce_here(frozen_imports):
    """trl 1.16's SFTTrainer builds labels itself: the seed failure needs trl < 0.20 (issue 5)."""
    report = Report(
        trainer="SFTTrainer", model_classes=["FastLanguageModel"], collator="DataCollatorForSeq2Seq",
        dataset_format="text", returned_keys=["logits"], received_inputs=["input_ids", "attention_mask", "labels"],
    )  # fmt: skip
    entry = _entry("seq2seq-collator-creates-no-labels")
    scenario, sources = build_scenario(report, entry.reproduce.scenario, entry.reproduce.faults)
    assert sources["trainer"] == UNSLOTH_MAPPED
    baseline = run_scenario(scenario.model_dump())
    reproduced, reason = baseline_reproduces(baseline, entry.reproduce.expect, report)
    assert not reproduced and "trained without an exception" in reason


@pytest.mark.parametrize(
    "report",
    [Report(model_classes=["CLIPModel"], model_names=["openai/clip-vit-base-patch32"]),
     Report(model_classes=["ClapModel"], model_names=["laion/clap-htsat-unfused"]),
     Report(model_type="siglip"), Report(model_classes=["AutoModel"], model_names=["google/siglip-base-patch16-224"])],
    ids=["clip", "clap", "siglip-type", "siglip-name"],
)  # fmt: skip
def test_a_contrastive_model_is_the_tiny_clip_on_image_text_pairs(report):
    scenario, sources = build(report, {"dataset_format": "tokenized"})
    assert (scenario.family, scenario.dataset_format) == ("clip", "image_text")
    assert sources["family"].startswith("report") and "image-text pairs" in sources["dataset_format"]
    assert scenario.head in ("base", "causal_lm") and not scenario.return_loss


def test_return_loss_true_in_the_paste_is_kept():
    collate = 'def collate_fn(ex):\n    return {"pixel_values": px, "input_ids": ids, "return_loss": True}'
    scenario, sources = build(Report(model_classes=["CLIPModel"], text=collate))
    assert scenario.return_loss and sources["return_loss"] == "report (return_loss=True)"
    assert build(Report(model_classes=["CLIPModel"], text="model(**batch, return_loss=True)"))[0].return_loss
    assert not build(Report(model_classes=["LlamaForCausalLM"], text="return_loss=True"))[0].return_loss


def test_contrastive_baseline_fails_without_return_loss_and_the_fix_trains(frozen_imports):
    entry = _entry("contrastive-model-needs-return-loss")
    report = Report(model_classes=["CLIPModel"], trainer="Trainer", returned_keys=[
        "logits_per_image", "logits_per_text", "text_embeds", "image_embeds", "text_model_output", "vision_model_output"],
        received_inputs=["input_ids", "attention_mask", "pixel_values"])  # fmt: skip
    scenario, _ = build_scenario(report, entry.reproduce.scenario, entry.reproduce.faults)
    baseline = run_scenario(scenario.model_dump())
    reproduced, reason = baseline_reproduces(baseline, entry.reproduce.expect, report)
    assert reproduced and "same keys returned and inputs received" in reason, reason
    fix = next(f for f in entry.fixes if f.id == "pass-return-loss")
    record = run_scenario(apply_ops(scenario, fix.ops).model_dump())
    verified, why = fix_verified(record, responses_only=False)
    assert verified, why
    assert record["supervised_tokens"] == scenario.steps * scenario.batch_size  # one target per image-text pair


def test_class_target_names_are_those_the_misnamed_column_entry_matches():
    from reproducer.from_report import _CLASS_TARGET_COLUMNS

    entry = _entry("misnamed-labels-column-dropped")
    named = [s.when.dataset_column for s in entry.evidence if s.when.dataset_column and "did not return" in (s.when.exception or "")]
    assert named and set(named[0]) == set(_CLASS_TARGET_COLUMNS)


def test_class_targets_under_another_name_become_the_label_column():
    report = Report(dataset_columns=["text", "sentiment"], dataset_format="classification")
    scenario, sources = build(report, {"head": "seq_cls", "dataset_format": "classification"})
    assert scenario.label_column == "sentiment" and "sentiment" in sources["label_column"]
    scenario, _ = build(Report(dataset_columns=["text", "label"], dataset_format="classification"), {"head": "seq_cls"})
    assert scenario.label_column == "label"


def test_a_lazy_transform_keeps_the_raw_text_column_of_a_classification_dataset():
    lazy = Report(dataset_columns=["text", "label"], dataset_format="classification", calls=["set_transform"])
    assert build(lazy, {"head": "seq_cls"})[0].keep_text_column is True
    eager = Report(dataset_columns=["text", "label"], dataset_format="classification", calls=["map"])
    assert build(eager, {"head": "seq_cls"})[0].keep_text_column is False  # the user's map() may have dropped it
