"""Ops on the labels: which tokens are supervised, the labels column, class ids."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario

# collators that would drop, overwrite or fail on a labels column the dataset already has
_LABEL_UNSAFE_COLLATORS = {
    "DataCollatorWithPadding",
    "DataCollatorForLanguageModeling",
    "DataCollatorForCompletionOnlyLM",
    "default_data_collator",
    "custom_drop_labels",
    "custom_reads_text",
}


def _tokenized(scenario: Scenario) -> str:
    return "tokenized" if scenario.dataset_format in ("text", "messages", "prompt_completion") else scenario.dataset_format


# -- fixes


@register
def mask_prompt_labels(scenario: Scenario) -> Scenario:
    """Fix: labels = [-100]*len(prompt) + response ids at tokenisation (train on responses only).

    Models Unsloth's train_on_responses_only or a hand-written tokenize function. The labels
    are padded by DataCollatorForSeq2Seq, since the padding and LM collators would fail on
    them or overwrite them (the default collator is kept for SFTTrainer).
    """
    collator = scenario.collator
    if collator in _LABEL_UNSAFE_COLLATORS or (collator == "default" and scenario.trainer != "SFTTrainer"):
        collator = "DataCollatorForSeq2Seq"
    return changed(
        scenario, dataset_format=_tokenized(scenario), labels_mode="prompt_masked", collator=collator,
        collator_kwargs={} if collator != scenario.collator else scenario.collator_kwargs,
    )


@register
def labels_from_input_ids(scenario: Scenario) -> Scenario:
    """Fix: add a labels column equal to input_ids when tokenising (the collator is unchanged)."""
    return changed(scenario, dataset_format=_tokenized(scenario), labels_mode="input_ids", label_column="labels")


@register
def rename_column_to_labels(scenario: Scenario) -> Scenario:
    """Fix: name the labels column 'labels', the name the model's forward takes."""
    return changed(scenario, label_column="labels")


@register
def align_causal_labels(scenario: Scenario) -> Scenario:
    """Fix: causal-LM labels aligned with input_ids (prompt masked) instead of the response ids alone."""
    return changed(scenario, labels_mode="prompt_masked")


@register
def map_string_labels_to_ids(scenario: Scenario) -> Scenario:
    """Fix: encode class names as integer ids (label2id / datasets ClassLabel)."""
    return changed(scenario, class_label_kind="int")


@register
def cast_labels_to_int(scenario: Scenario) -> Scenario:
    """Fix: float class labels (0.0, 1.0, 2.0) cast to int for single-label classification."""
    return changed(scenario, class_label_kind="int")


@register
def set_float_labels(scenario: Scenario) -> Scenario:
    """Fix: float labels, as regression and multi-label classification need."""
    return changed(scenario, class_label_kind="float")


@register
def set_num_labels(scenario: Scenario, num_labels: int | None = None) -> Scenario:
    """Fix: num_labels set to ``num_labels``, or to cover every class id in the data."""
    if num_labels is None:
        values = scenario.class_label_values or list(range(scenario.num_labels))
        num_labels = max(max(values) + 1, scenario.num_labels)
    return changed(scenario, num_labels=num_labels)


@register
def remap_labels_in_range(scenario: Scenario) -> Scenario:
    """Fix: class ids remapped to 0..k-1 (and num_labels raised to k if needed)."""
    values = scenario.class_label_values
    if not values:
        return scenario
    index = {v: i for i, v in enumerate(sorted(set(values)))}
    return changed(
        scenario, class_label_values=[index[v] for v in values], num_labels=max(scenario.num_labels, len(index))
    )


# -- faults


@register
def drop_labels(scenario: Scenario) -> Scenario:
    """Fault: the tokenised dataset has no labels column."""
    return changed(scenario, dataset_format=_tokenized(scenario), labels_mode="none")


@register
def mask_all_labels(scenario: Scenario) -> Scenario:
    """Fault: every label is -100 (e.g. a masking bug), so no token is supervised."""
    return changed(scenario, dataset_format=_tokenized(scenario), labels_mode="all_masked")


@register
def misname_labels_column(scenario: Scenario, column: str = "target_ids") -> Scenario:
    """Fault: the labels live in a column the model does not take, which Trainer drops silently."""
    mode = scenario.labels_mode if scenario.labels_mode != "none" else "prompt_masked"
    return changed(scenario, dataset_format=_tokenized(scenario), labels_mode=mode, label_column=column)


@register
def response_only_labels(scenario: Scenario) -> Scenario:
    """Fault: causal-LM labels are the response ids alone, not aligned with input_ids (seq2seq habit)."""
    return changed(scenario, dataset_format=_tokenized(scenario), labels_mode="response_only")


@register
def string_labels(scenario: Scenario) -> Scenario:
    """Fault: class labels are strings ('positive', 'negative') instead of ids."""
    return changed(scenario, class_label_kind="str")


@register
def float_class_labels(scenario: Scenario) -> Scenario:
    """Fault: class ids stored as floats, so transformers infers multi-label classification."""
    return changed(scenario, class_label_kind="float")


@register
def labels_out_of_range(scenario: Scenario, values: list[int] | None = None) -> Scenario:
    """Fault: a class id >= num_labels appears in the data (default: 0, 1, num_labels + 1)."""
    return changed(scenario, class_label_values=values or [0, 1, scenario.num_labels + 1])
