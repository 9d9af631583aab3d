"""The data that flows through lossdoctor: a parsed `Report` in, a `Diagnosis` out.

Everything here is plain pydantic with ``extra="forbid"`` so that a typo in a field
name fails loudly. No module in `bot.models` imports torch, transformers or langchain.
"""


from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Verdict = Literal["verified", "reproduced", "matched", "unknown"]
FixStatus = Literal["verified", "failed", "not_run"]
FlagValue = str | int | float | bool | None


def _list() -> list:
    return []


def _dict() -> dict:
    return {}


# `_list`/`_dict` rather than the builtins `list`/`dict`: building a model's schema, pydantic
# reads each default factory's signature, and a builtin's is parsed from its text signature
# with `tokenize` (about 0.5 ms each, some 30 on the `diagnose` path). Same defaults.


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ExceptionInfo(Strict):
    """One exception of a chain, as printed: ``ValueError: message``."""

    type: str
    """Exception class name as printed, without module (``ValueError``, ``OutOfMemoryError``)."""
    message: str = ""


class Frame(Strict):
    """One traceback frame."""

    file: str
    line: int | None = None
    function: str | None = None
    library: str | None = None
    """Top-level package the file belongs to (``transformers``, ``trl``...), None for user code."""


class Report(Strict):
    """Everything lossdoctor could read from what the user pasted. Built by `bot.parse`."""

    text: str = ""
    """The whole paste, normalised (no ANSI codes, no chat formatting) and redacted."""
    narrative: str | None = None
    """`text` without the pasted set-up (code and config blocks, environment rows, package pins): prose,
    tracebacks, logs, warnings. None when the paste has no set-up part (then it is `text`)."""
    sections: list[str] = Field(default_factory=_list)
    """Kinds of content recognised: traceback, code, log, warnings, pip, env, config, prose."""
    exceptions: list[ExceptionInfo] = Field(default_factory=_list)
    """Exception chain in the order printed: the cause first, the one finally raised last."""
    frames: list[Frame] = Field(default_factory=_list)
    returned_keys: list[str] | None = None
    """Keys the model returned, from 'did not return a loss ... only the following keys: ...'."""
    received_inputs: list[str] | None = None
    """Inputs the model received, from '... the inputs it received are ...'."""
    losses: list[float] = Field(default_factory=_list)
    """Training losses seen in Trainer log lines (nan kept as float('nan'))."""
    eval_losses: list[float] = Field(default_factory=_list)
    grad_norms: list[float] = Field(default_factory=_list)
    warnings: list[str] = Field(default_factory=_list)
    versions: dict[str, str] = Field(default_factory=_dict)
    """Library name (lower-case, normalised like pip) -> version string."""
    model_classes: list[str] = Field(default_factory=_list)
    """Model classes / loaders used: AutoModelForCausalLM, LlamaModel, FastLanguageModel..."""
    model_names: list[str] = Field(default_factory=_list)
    """Checkpoint names or paths: 'unsloth/llama-3-8b-bnb-4bit'."""
    model_type: str | None = None
    """Architecture family when known: llama, qwen2, mistral, gemma, gpt2, t5, bert..."""
    trainer: str | None = None
    """Trainer class: Trainer, Seq2SeqTrainer, SFTTrainer, DPOTrainer, GRPOTrainer, or a user subclass name."""
    trainer_bases: list[str] = Field(default_factory=_list)
    """Base classes of a user-defined trainer subclass."""
    collator: str | None = None
    """Data collator class: DataCollatorForSeq2Seq, DataCollatorWithPadding, ..."""
    collator_kwargs: dict[str, str] = Field(default_factory=_dict)
    """Keyword arguments of the collator call, as source text."""
    dataset_columns: list[str] = Field(default_factory=_list)
    dataset_format: str | None = None
    """text | messages | prompt_completion | tokenized | tokenized_with_labels | classification | preference"""
    calls: list[str] = Field(default_factory=_list)
    """Notable function/method names called in pasted code (train_on_responses_only, get_peft_model...)."""
    defined_functions: list[str] = Field(default_factory=_list)
    """Signatures of functions defined in pasted code, e.g. 'compute_loss(self, model, inputs, return_outputs)'."""
    flags: dict[str, FlagValue] = Field(default_factory=_dict)
    """Training flags that matter, from code or configs: remove_unused_columns, fp16, bf16,
    gradient_checkpointing, use_reentrant, gradient_accumulation_steps, max_length, packing,
    completion_only_loss, assistant_only_loss, response_template, num_labels, ..."""
    uses_peft: bool = False
    redacted: list[str] = Field(default_factory=_list)
    """Kinds of secrets removed from the paste (hf_token, openai_key, ...)."""
    notes: list[str] = Field(default_factory=_list)
    """Things the parser wants the user to know (input truncated, binary bytes dropped...)."""


class Candidate(Strict):
    entry: str
    failure_class: str
    title: str = ""
    score: float
    why: list[str] = Field(default_factory=_list)


class RunRecord(Strict):
    """What one sandboxed training run showed."""

    ok: bool
    """True when training finished without an exception."""
    fix: str | None = None
    loss: float | None = None
    losses: list[float] = Field(default_factory=_list)
    supervised_tokens: int | None = None
    prompt_tokens_supervised: int | None = None
    grad_norm: float | None = None
    params_changed: bool | None = None
    exception: ExceptionInfo | None = None
    warnings: list[str] = Field(default_factory=_list)
    seconds: float = 0.0
    versions: dict[str, str] = Field(default_factory=_dict)
    device: str | None = None
    seed: int | None = None
    verdict: str | None = None
    """For a baseline: 'reproduced' or why not. For a fix: 'verified' or why not."""


class Reproduction(Strict):
    reproduced: bool
    versions: dict[str, str] = Field(default_factory=_dict)
    device: str = "cpu"
    sandbox: str = ""
    entry: str | None = None
    baseline: RunRecord | None = None
    runs: list[RunRecord] = Field(default_factory=_list)
    seconds: float = 0.0
    scenario: dict[str, Any] = Field(default_factory=_dict)
    field_sources: dict[str, str] = Field(default_factory=_dict)
    """Scenario field -> 'report' or 'default': where each setting came from."""
    note: str | None = None
    """Why the reproduction differs from the report, when it does."""


class FixOutcome(Strict):
    id: str
    title: str
    entry: str
    ops: list[str] = Field(default_factory=_list)
    status: FixStatus = "not_run"
    evidence: dict[str, Any] = Field(default_factory=_dict)
    snippet: str | None = None


class Diagnosis(Strict):
    schema_version: int = SCHEMA_VERSION
    verdict: Verdict
    failure_class: str | None
    abstain_reason: str | None = None
    candidates: list[Candidate] = Field(default_factory=_list)
    fixes: list[FixOutcome] = Field(default_factory=_list)
    reproduction: Reproduction | None = None
    question: str | None = None
    reply: str = ""
    redacted: list[str] = Field(default_factory=_list)
