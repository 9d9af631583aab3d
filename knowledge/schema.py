"""Schema of a knowledge-base entry (``knowledge/entries/<id>/entry.yaml``).

An entry is data: what the failure is, the evidence that identifies it in a `Report`,
the fixes (each mapped to reproducer operations), the versions it affects, and how to
reproduce it. Unknown keys are errors.
"""


import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from bot.models import Report

FAILURE_CLASSES = (
    "response_template_not_found",
    "no_grad_gradient_checkpointing",
    "gradient_accumulation_loss_scaling",
    "remove_unused_columns_drops_columns",
    "collator_does_not_create_labels",
    "decoder_labels_length_mismatch",
    "fp16_overflow_nan",
    "labels_not_padded",
    "library_bug_loss_path",
    "num_items_in_batch_signature",
    "untrained_special_tokens",
    "attention_kernel_nan",
    "classification_label_dtype",
    "label_out_of_bounds",
    "labels_missing_in_dataset",
    "model_requires_extra_loss_inputs",
    "raw_text_column_in_batch",
    "all_labels_masked_truncation",
    "base_model_without_head",
    "completion_collator_with_packing",
    "deepspeed_zero2_nan",
    "distributed_setup_issue",
    "fp16_trainable_weights_in_half",
    "labels_kwarg_version_mismatch",
    "library_regression_config_default",
    "pad_token_missing",
    "task_head_mismatch",
    "out_of_scope",
)

Metric = Literal[
    "loss_zero", "loss_nan", "loss_inf", "grad_norm_nan", "grad_norm_inf", "grad_norm_zero", "eval_loss_nan", "loss_high",
    "eval_loss_constant", "loss_falls",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:  # pragma: no cover - message path tested via kb check
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    return value


class Condition(Strict):
    """A test on a `Report`. Every field that is set must hold (logical AND).

    Regexes are Python `re` patterns searched case-insensitively; they must not nest
    unbounded quantifiers (the matcher runs them on untrusted text).
    """

    exception: str | None = None
    """Regex searched in 'Type: message' of each exception of the chain."""
    exception_type: list[str] | None = None
    """Any exception of the chain has one of these type names."""
    text: str | None = None
    """Regex searched in the whole (redacted, normalised) paste."""
    warning: str | None = None
    """Regex searched in each warning line."""
    returned_keys: list[str] | None = None
    """All these keys are among the keys the model returned."""
    received_inputs_include: list[str] | None = None
    """All these names are among the inputs the model received."""
    received_inputs_exclude: list[str] | None = None
    """None of these names are among the inputs the model received (requires the list to be known)."""
    trainer: list[str] | None = None
    """The trainer class (or one of its bases) is one of these."""
    collator: list[str] | None = None
    """The collator class is one of these."""
    model_class: str | None = None
    """Regex matched (search) against each model class / loader name."""
    model_name: str | None = None
    """Regex matched (search) against each checkpoint name."""
    model_type: list[str] | None = None
    flag: dict[str, Any] | None = None
    """Each flag has this value. The special value '*' means: the flag is set to anything."""
    flag_absent: list[str] | None = None
    """None of these flags were found."""
    metric: Metric | None = None
    version: dict[str, str] | None = None
    """Each package's reported version is inside this PEP 440 specifier (e.g. '>=0.15,<0.20')."""
    dataset_format: list[str] | None = None
    frame: str | None = None
    """Regex searched in 'file:function' of each frame."""
    call: list[str] | None = None
    """Any of these names is called in the pasted code."""
    peft: bool | None = None
    dataset_column: list[str] | None = None
    """Any of these names is among the dataset columns read from code or configs."""
    defined_function: str | None = None
    """Regex searched in each signature of a function defined in the pasted code ('compute_loss(self, model, inputs)')."""
    collator_given: bool | None = None
    """True: the report names a data collator; False: it names none (the trainer's default applies)."""
    section: list[str] | None = None
    """Any of these content kinds was recognised in the paste."""

    _regex_fields = ("exception", "text", "warning", "model_class", "model_name", "frame", "defined_function")

    @model_validator(mode="after")
    def _validate(self) -> "Condition":
        for name in self._regex_fields:
            _check_regex(getattr(self, name))
        if not self.model_fields_set:
            raise ValueError("a condition must set at least one field")
        return self


class Signal(Strict):
    """One piece of evidence: when `when` holds, `weight` is added and `why` is reported."""

    why: str
    when: Condition
    weight: float = 1.0
    setup: bool = False
    """The signal describes the set-up (what was run: a collator, a flag, a model), even where its `text`
    is found in prose or a warning. Conditions on versions, flags, models, trainers, collators and
    datasets are set-up without saying so; see `knowledge.matcher.SHOWN_MIN`."""


class Op(Strict):
    """A named reproducer operation with optional arguments (see `reproducer.ops`)."""

    op: str
    args: dict[str, Any] = Field(default_factory=dict)


def _ops(value: Any) -> Any:
    if isinstance(value, list):
        return [{"op": v} if isinstance(v, str) else v for v in value]
    return value


Head = Literal["causal_lm", "base", "seq_cls", "seq2seq", "masked_lm", "pretraining"]
"""The model heads the reproducer builds (`reproducer.scenario.Scenario.head`); `pretraining` is the encoder
pre-training class (BertForPreTraining: masked LM plus next-sentence heads)."""

_ENCODER_DECODER_CLASS = re.compile(r"(TF|Flax)?(M|UM|Long)?T5|(TF|Flax)?(M|PL)?Bart|Pegasus\w*|Marian|Blenderbot\w*|LED|M2M100|Nllb\w*")


def model_head(model_class: str, family: str | None = None) -> Head | None:
    """The head a model class name says it has, or None when the name does not tell (a wrapper, a config).

    `family` is the reproducer's tiny-model family, when one is chosen: a *ForConditionalGeneration class
    is an encoder-decoder only for the t5 and bart families (elsewhere it is a vision-language model);
    without one, the class name's prefix decides."""
    cls = model_class
    if "ForSequenceClassification" in cls:
        return "seq_cls"
    if "ForCausalLM" in cls or cls.endswith("LMHeadModel") or cls in ("FastLanguageModel", "FastModel"):
        return "causal_lm"
    encoder_decoder = (family in ("t5", "bart") if family is not None
                       else bool(_ENCODER_DECODER_CLASS.fullmatch(cls.split("For")[0])))
    if "Seq2SeqLM" in cls or ("ForConditionalGeneration" in cls and encoder_decoder):
        return "seq2seq"
    if "MaskedLM" in cls:
        return "masked_lm"
    if re.fullmatch(r"(TF)?(Bert|Albert|Ernie|MegatronBert|Nezha)ForPreTraining", cls):
        return "pretraining"
    if cls == "AutoModel" or (re.fullmatch(r"[A-Z][A-Za-z0-9]*Model", cls) and not cls.startswith(("Peft", "PreTrained", "Fast"))):
        return "base"
    return None


class Fix(Strict):
    id: str
    title: str
    explanation: str
    snippet: str = ""
    ops: list[Op] = Field(default_factory=list)
    """Reproducer operations that apply this fix to a scenario. Empty: the fix cannot be run."""
    responses_only: bool = False
    """The fix is meant to train on responses only: verification also checks prompt tokens are masked."""
    trainers: list[str] = Field(default_factory=list)
    """Trainer classes this fix is for (e.g. only SFTTrainer); empty: any. Not offered when the report names another."""
    heads: list[Head] = Field(default_factory=list)
    """Model heads this fix is for (e.g. causal_lm); empty: any. Not offered when the report's model class names
    another head; the reproducer does not run it on a tiny model with another head and says so."""

    def applies_to(self, trainer: str | None, bases: list[str] | None = None, head: str | None = None) -> bool:
        """Whether to offer this fix for a report's trainer (and its base classes) and model head; unknown fits."""
        if self.heads and head is not None and head not in self.heads:
            return False
        if not self.trainers or trainer is None:
            return True
        return trainer in self.trainers or any(b in self.trainers for b in bases or [])

    def offered_for(self, report: "Report") -> bool:
        """Whether to offer this fix for the report's trainer and model head (what the report does not name fits)."""
        head = next((h for c in report.model_classes if (h := model_head(c)) is not None), None)
        return self.applies_to(report.trainer, report.trainer_bases, head)

    _coerce_ops = field_validator("ops", mode="before")(_ops)


class Versions(Strict):
    affected: dict[str, str] = Field(default_factory=dict)
    """package -> PEP 440 specifier where the failure happens."""
    fixed: dict[str, str] = Field(default_factory=dict)
    """package -> specifier from which it no longer happens (for version-bound failures)."""
    note: str = ""


class Expect(Strict):
    """What the reproduced baseline must show."""

    exception_type: str | None = None
    """The exception class name, or alternatives (`ValueError|KeyError`) when the failure shows either way."""
    message: str | None = None
    """Regex the exception message must contain."""
    symptom: Literal["loss_zero_or_nan", "no_supervised_tokens", "params_unchanged", "loss_high"] | None = None


class Reproduce(Strict):
    reproducible: bool
    reason: str = ""
    """Why not (when not reproducible), or what limits it (e.g. needs an older stack)."""
    stacks: list[Literal["current", "legacy"]] = Field(default_factory=lambda: ["current"])
    """Library stacks on which the baseline fails: current (pinned) and/or legacy (trl<0.20, transformers<4.56)."""
    scenario: dict[str, Any] = Field(default_factory=dict)
    """Scenario defaults for the fields the report does not give (see `reproducer.scenario.Scenario`)."""
    faults: list[Op] = Field(default_factory=list)
    """Operations that inject this failure into a scenario, applied after the defaults."""
    expect: Expect = Field(default_factory=Expect)
    not_on_current: dict[str, str] = Field(default_factory=dict)
    """match/ example file name -> why that report does not fail on the current stack (e.g. it
    states trl 0.15, and trl >= 1.7 builds the labels itself). The engine must then report it
    as not reproduced there. Keep rare: a report that states no versions and whose setup
    fails on the current stack must reproduce."""

    _coerce_faults = field_validator("faults", mode="before")(_ops)


class Entry(Strict):
    id: str
    failure_class: str
    title: str
    root_cause: str
    evidence: list[Signal]
    requires: list[Condition] = Field(default_factory=list)
    """Every condition must hold for the entry to be a candidate at all."""
    excludes: list[Condition] = Field(default_factory=list)
    """If any condition holds, the entry is not a candidate."""
    min_score: float = 2.0
    """Evidence score below which the entry is not proposed."""
    questions: list[str] = Field(default_factory=list)
    """Questions that tell this failure apart from its neighbours, best first."""
    ask_when_missing: dict[str, str] = Field(default_factory=dict)
    """Report field -> question to ask when that field is unknown and the entry is a candidate."""
    fixes: list[Fix] = Field(default_factory=list)
    versions: Versions = Field(default_factory=Versions)
    references: list[str] = Field(default_factory=list)
    reproduce: Reproduce
    keywords: str = ""
    """Extra words for lexical (BM25) matching of free-form prose."""

    @field_validator("id")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value):
            raise ValueError(f"entry id must be kebab-case, got {value!r}")
        return value

    @field_validator("failure_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        if value not in FAILURE_CLASSES:
            raise ValueError(f"unknown failure_class {value!r}; see shared/taxonomy.md")
        return value

    @model_validator(mode="after")
    def _fixes_unique(self) -> "Entry":
        ids = [f.id for f in self.fixes]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate fix ids in {self.id}")
        if self.failure_class != "out_of_scope" and not self.fixes:
            raise ValueError(f"{self.id}: an entry with a failure class needs at least one fix")
        if not self.references:
            raise ValueError(f"{self.id}: cite at least one real reference (issue or doc URL)")
        return self
