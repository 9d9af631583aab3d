"""Ops on the data collator and the completion-only response template."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario
from reproducer.tiny import DEFAULT_RESPONSE_TEMPLATE

# -- fixes


@register
def remove_data_collator(scenario: Scenario) -> Scenario:
    """Fix: pass no data_collator, so the trainer picks its own (SFTTrainer builds labels)."""
    return changed(scenario, collator="default", collator_kwargs={})


@register
def use_lm_collator(scenario: Scenario) -> Scenario:
    """Fix: DataCollatorForLanguageModeling(mlm=False) builds labels from input_ids.

    It would fail on (or overwrite) a labels column, so the dataset keeps none.
    """
    return changed(
        scenario, collator="DataCollatorForLanguageModeling", collator_kwargs={"mlm": scenario.head in ("masked_lm", "pretraining")},
        labels_mode="none",
    )


@register
def use_seq2seq_collator(scenario: Scenario) -> Scenario:
    """Fix: DataCollatorForSeq2Seq, which pads an existing labels column with -100. Class labels (one integer
    per example) need no padding: there the padding collator already passes them, and is kept."""
    if scenario.dataset_format == "classification":
        return changed(scenario, collator="DataCollatorWithPadding", collator_kwargs={})
    return changed(scenario, collator="DataCollatorForSeq2Seq", collator_kwargs={})


@register
def pass_return_loss(scenario: Scenario) -> Scenario:
    """Fix: every batch carries return_loss=True, so a contrastive model (CLIP, CLAP, SigLIP) computes its loss."""
    return changed(scenario, return_loss=True)


@register
def response_template_in_context(scenario: Scenario) -> Scenario:
    """Fix: give the collator the response template as token ids taken from a tokenised row."""
    return changed(scenario, response_template_in_context=True)


# -- faults


@register
def use_completion_only_collator(scenario: Scenario) -> Scenario:
    """Fault setup: TRL's DataCollatorForCompletionOnlyLM (re-implemented on trl >= 0.20)."""
    return changed(scenario, collator="DataCollatorForCompletionOnlyLM", collator_kwargs={})


@register
def standalone_response_template(scenario: Scenario) -> Scenario:
    """Fault: the response template is written with a leading space and tokenised on its own.

    ' ### Answer:' alone gives other token ids than '\\n### Answer:' inside a row, so the
    completion-only collator never finds it and masks every label.
    """
    marker = (scenario.response_template or DEFAULT_RESPONSE_TEMPLATE).strip()
    return changed(scenario, response_template=f" {marker}", response_template_in_context=False)


@register
def marker_tokenised_apart(scenario: Scenario) -> Scenario:
    """Fault: the rows hold the marker where its standalone tokenisation differs from the row's.

    A marker written without leading whitespace goes mid-line (after a space, which a
    byte-level BPE merges into the first token, as SentencePiece's prefix space does); one
    written with leading whitespace goes on its own line, after a newline.
    """
    template = scenario.response_template or DEFAULT_RESPONSE_TEMPLATE
    context = "own_line" if template[:1].isspace() else "mid_line"
    return changed(scenario, response_template_context=context)


@register
def seq2seq_collator_without_labels(scenario: Scenario) -> Scenario:
    """Fault: DataCollatorForSeq2Seq on rows without labels: it emits labels=None (the Unsloth seed)."""
    return changed(scenario, collator="DataCollatorForSeq2Seq", collator_kwargs={})


@register
def padding_collator(scenario: Scenario) -> Scenario:
    """Fault: DataCollatorWithPadding, which pads input_ids only and creates no labels."""
    return changed(scenario, collator="DataCollatorWithPadding", collator_kwargs={})


@register
def collator_drops_labels(scenario: Scenario) -> Scenario:
    """Fault: a hand-written collator that returns input_ids/attention_mask only."""
    return changed(scenario, collator="custom_drop_labels", collator_kwargs={})
