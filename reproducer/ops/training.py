"""Ops on the training flags: checkpointing, precision, packing, compute_loss signature."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario

# -- fixes


@register
def set_remove_unused_columns_false(scenario: Scenario) -> Scenario:
    """Fix: TrainingArguments(remove_unused_columns=False) keeps columns the collator needs."""
    return changed(scenario, remove_unused_columns=False)


@register
def enable_input_require_grads(scenario: Scenario) -> Scenario:
    """Fix: model.enable_input_require_grads() before get_peft_model."""
    return changed(scenario, enable_input_require_grads=True)


@register
def use_non_reentrant_checkpointing(scenario: Scenario) -> Scenario:
    """Fix: gradient_checkpointing_kwargs={'use_reentrant': False}."""
    return changed(scenario, use_reentrant=False)


@register
def use_bf16_or_fp32(scenario: Scenario) -> Scenario:
    """Fix: no fp16; bf16 where the scenario already had it, else fp32."""
    return changed(scenario, fp16=False)


@register
def raise_max_length(scenario: Scenario, max_length: int = 1024) -> Scenario:
    """Fix: a max_length long enough that truncation keeps the completion."""
    return changed(scenario, max_length=max_length)


@register
def disable_packing(scenario: Scenario) -> Scenario:
    """Fix: SFTConfig(packing=False)."""
    return changed(scenario, packing=False)


@register
def accept_num_items_in_batch(scenario: Scenario) -> Scenario:
    """Fix: compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None)."""
    return changed(scenario, compute_loss_signature="current")


@register
def show_nan_losses(scenario: Scenario) -> Scenario:
    """Diagnostic: logging_nan_inf_filter=False, so Trainer logs NaN instead of 0.0."""
    return changed(scenario, logging_nan_inf_filter=False)


# -- faults


@register
def disable_input_require_grads(scenario: Scenario) -> Scenario:
    """Fault: no input-embedding grad hook (transformers < 5 with PEFT, or the hook removed)."""
    return changed(scenario, enable_input_require_grads=False)


@register
def reentrant_checkpointing(scenario: Scenario) -> Scenario:
    """Fault: gradient checkpointing with use_reentrant=True, on a LoRA model."""
    return changed(scenario, gradient_checkpointing=True, use_reentrant=True, lora=True)


@register
def use_fp16(scenario: Scenario) -> Scenario:
    """Fault: fp16 mixed precision (overflows for bf16-trained models; CPU runs show what torch does)."""
    return changed(scenario, fp16=True, bf16=False)


@register
def legacy_compute_loss_signature(scenario: Scenario) -> Scenario:
    """Fault: a Trainer subclass with compute_loss(self, model, inputs, return_outputs=False)."""
    return changed(scenario, compute_loss_signature="legacy_no_kwargs")


@register
def enable_packing(scenario: Scenario) -> Scenario:
    """Fault: SFTConfig(packing=True)."""
    return changed(scenario, packing=True)
