"""Ops on the model: its head, pad token and attention kernel."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario

_ENCODERS = ("bert", "roberta")
_ENCODER_DECODERS = ("t5", "bart")

# -- fixes


@register
def use_causal_lm_head(scenario: Scenario) -> Scenario:
    """Fix: load AutoModelForCausalLM (an LM head that computes the loss) instead of the bare model."""
    return changed(scenario, head="causal_lm")


@register
def use_matching_head(scenario: Scenario) -> Scenario:
    """Fix: the head that fits the data: seq_cls for class labels, else an LM head for the family."""
    if scenario.dataset_format == "classification":
        head = "seq_cls"
    elif scenario.family in _ENCODERS:
        head = "masked_lm"
    elif scenario.family in _ENCODER_DECODERS:
        head = "seq2seq"
    else:
        head = "causal_lm"
    return changed(scenario, head=head)


@register
def set_pad_token(scenario: Scenario) -> Scenario:
    """Fix: the tokenizer has a pad token and model.config.pad_token_id is set to it."""
    return changed(scenario, tokenizer_has_pad=True, pad_token_in_config=True)


@register
def use_eager_attention(scenario: Scenario) -> Scenario:
    """Fix: attn_implementation='eager' instead of SDPA / flash attention."""
    return changed(scenario, attn_implementation="eager")


# -- faults


@register
def use_base_model(scenario: Scenario) -> Scenario:
    """Fault: AutoModel (the backbone without a head), which returns no loss."""
    return changed(scenario, head="base")


@register
def no_pad_token(scenario: Scenario, tokenizer: bool = False) -> Scenario:
    """Fault: model.config.pad_token_id is None (as decoder LLMs ship); with ``tokenizer``, no pad token at all."""
    if tokenizer:
        return changed(scenario, pad_token_in_config=False, tokenizer_has_pad=False)
    return changed(scenario, pad_token_in_config=False)


@register
def use_classification_head(scenario: Scenario, num_labels: int | None = None) -> Scenario:
    """Fault: a sequence-classification head trained on token-level (LM) data."""
    return changed(scenario, head="seq_cls", num_labels=num_labels or scenario.num_labels)
