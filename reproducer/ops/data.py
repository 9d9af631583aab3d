"""Ops on the dataset and its chat template: columns, truncation, generation markers."""

from __future__ import annotations

from reproducer.ops import changed, register
from reproducer.scenario import Scenario

MAX_PROMPT_WORDS = 200

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
    """Fault: max_length shorter than the prompt, so truncation removes every response token.

    With a max_length already set (the user's), the prompts are made longer than it instead
    (at most MAX_PROMPT_WORDS words, within the tiny model's 256 positions).
    """
    if max_length is None and scenario.max_length is not None:
        if scenario.max_length + 4 > MAX_PROMPT_WORDS:
            return scenario
        return changed(scenario, prompt_words=max(scenario.prompt_words, scenario.max_length + 4))
    return changed(scenario, max_length=max_length or scenario.prompt_words + 4)
