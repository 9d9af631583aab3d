"""Ops on the dataset and its chat template: columns, truncation, generation markers."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario

# -- fixes


@register
def remove_raw_text_column(scenario: Scenario) -> Scenario:
    """Fix: drop the raw 'text' column after tokenising (remove_columns=['text'])."""
    return changed(scenario, keep_text_column=False)


@register
def add_generation_markers(scenario: Scenario) -> Scenario:
    """Fix: a chat template with {% generation %} markers, so assistant tokens can be masked."""
    return changed(scenario, chat_template_generation_markers=True)


# -- faults


@register
def keep_text_column(scenario: Scenario) -> Scenario:
    """Fault: the raw 'text' column stays beside input_ids after tokenising."""
    return changed(scenario, keep_text_column=True)


@register
def remove_generation_markers(scenario: Scenario) -> Scenario:
    """Fault: the chat template has no {% generation %} markers (most shipped templates)."""
    return changed(scenario, chat_template_generation_markers=False)


@register
def truncate_completions(scenario: Scenario, max_length: int | None = None) -> Scenario:
    """Fault: max_length shorter than the prompt, so truncation removes every response token."""
    return changed(scenario, max_length=max_length or scenario.prompt_words + 4)
