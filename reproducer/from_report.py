"""Build the `Scenario` for a report: the user's setup where the report states it, the
knowledge entry's defaults for the gaps, and the entry's faults only where the report is silent.

`build_scenario` also returns where each field came from: a string that starts with
``report`` or ``default`` (with a note in brackets when something was mapped or not
modelled), shown to the user as evidence.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from bot.models import Report
from knowledge.schema import Op, model_head
from reproducer.ops import apply_op
from reproducer.scenario import Scenario

FAMILIES = {
    "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen2", "qwen": "qwen2", "mistral": "mistral",
    "mixtral": "mistral", "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3", "phi": "phi3",
    "gpt2": "gpt2", "gpt_neox": "gpt_neox", "t5": "t5", "mt5": "t5", "bart": "bart", "mbart": "bart",
    "bert": "bert", "distilbert": "bert", "roberta": "roberta", "xlm-roberta": "roberta",
    "clip": "clip", "chinese_clip": "clip", "clap": "clip", "siglip": "clip", "siglip2": "clip", "altclip": "clip",
}  # fmt: skip
_NAME_FAMILIES = [  # (regex on a lower-cased model name or class, family); first match wins
    (r"clip|\bclap|siglip", "clip"), (r"qwen|qwq", "qwen2"), (r"gpt[-_]?neox|pythia", "gpt_neox"), (r"gpt-?2|dialogpt", "gpt2"),
    (r"phi", "phi3"), (r"gemma", "gemma"), (r"mistral|mixtral|zephyr", "mistral"),
    (r"llama|vicuna|alpaca|smollm", "llama"), (r"\bt5|mt5|flan", "t5"), (r"bart", "bart"),
    (r"roberta", "roberta"), (r"bert", "bert"),
]  # fmt: skip
TRAINERS = ("Trainer", "Seq2SeqTrainer", "SFTTrainer")
COLLATORS = {
    "DataCollatorWithPadding": "DataCollatorWithPadding",
    "DataCollatorForSeq2Seq": "DataCollatorForSeq2Seq",
    "DataCollatorForLanguageModeling": "DataCollatorForLanguageModeling",
    "DataCollatorForCompletionOnlyLM": "DataCollatorForCompletionOnlyLM",
    "default_data_collator": "default_data_collator",
    "DefaultDataCollator": "default_data_collator",
}
COLLATOR_KWARGS = {"padding", "pad_to_multiple_of", "label_pad_token_id", "mlm", "mlm_probability", "max_length"}
UNSLOTH_MAPPED = "report (unsloth mapped to trl SFTTrainer)"
MAX_GRADIENT_ACCUMULATION = 4
# report flag -> Scenario field
FLAGS = {
    "remove_unused_columns": "remove_unused_columns", "max_length": "max_length", "max_seq_length": "max_length",
    "packing": "packing", "completion_only_loss": "completion_only_loss",
    "assistant_only_loss": "assistant_only_loss", "gradient_checkpointing": "gradient_checkpointing",
    "use_reentrant": "use_reentrant", "fp16": "fp16", "bf16": "bf16",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "num_labels": "num_labels",
    "problem_type": "problem_type", "logging_nan_inf_filter": "logging_nan_inf_filter",
    "attn_implementation": "attn_implementation",
}  # fmt: skip
_BOOL_TEXT = {"true": True, "false": False, "none": None}
_RETURN_LOSS_TRUE = re.compile(r"""\breturn_loss["']?\s*[=:]\s*True\b""")
_INPUT_ID_COLUMNS = {"input_ids", "token_type_ids", "position_ids", "label_ids", "decoder_input_ids"}
"""Columns ending in _ids that the model or the collators take (label_ids is renamed to labels)."""
_CLASS_TARGET_COLUMNS = ("target", "targets", "sentiment", "category", "class", "label_id", "class_label", "emotion",
                         "rating", "stars", "y", "score")
"""Columns that hold a classification dataset's targets under a name other than label / labels (the
same names as the misnamed-labels-column-dropped entry's evidence; a test keeps them equal)."""
_FROZEN_EMBEDDINGS = re.compile(r"embed\w*(?:\.\w+|\(\))*\.(?:parameters\(\)\s*:\s*\n?\s*\w+\.requires_grad\s*=\s*False|requires_grad_\(\s*False)")
_TARGET_OUT_OF_BOUNDS = re.compile(r"Target (-?\d+) is out of bounds")
_WRITES_LABELS = re.compile(r"""["']labels["']\s*(?:\]\s*=|:)""")
"""Code that writes a labels key: ``{"labels": ...}`` or ``example["labels"] = ...``."""
LABEL_CREATING_COLLATORS = ("DataCollatorForLanguageModeling", "DataCollatorForCompletionOnlyLM")


def build_scenario(report: Report, defaults: dict[str, Any], faults: list[Op]) -> tuple[Scenario, dict[str, str]]:
    """The scenario for ``report`` and, for every field, where its value came from.

    Order: `Scenario()` defaults, then the entry's ``defaults`` (source 'default'), then
    every field the report states (source 'report ...'), then each fault op, whose changes
    are kept only for fields the report did not state.
    """
    base = Scenario()
    values = base.model_dump()
    sources = {name: "default" for name in values}
    values.update(Scenario.model_validate({**values, **defaults}).model_dump())
    for name, (value, source) in _from_report(report, values).items():
        values[name] = value
        sources[name] = source
    scenario = _normalise(Scenario.model_validate(values), sources)
    for fault in faults:
        after = apply_op(scenario, fault.op, fault.args).model_dump()
        kept = {k: v for k, v in after.items() if not sources[k].startswith("report")}
        for name in kept:
            if kept[name] != getattr(scenario, name):
                sources[name] = f"default (fault {fault.op})"
        scenario = Scenario.model_validate({**scenario.model_dump(), **kept})
    return scenario, sources


# -- what the report states


def _from_report(report: Report, current: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Scenario fields the report states, as {field: (value, source)}."""
    found: dict[str, tuple[Any, str]] = {}
    family = _family(report)
    if family:
        found["family"] = family
    head = _head(report, family[0] if family else current["family"])
    if head:
        found["head"] = head
    trainer = _trainer(report)
    if trainer:
        found["trainer"] = trainer
    if _legacy_compute_loss(report):
        found["compute_loss_signature"] = ("legacy_no_kwargs", "report (compute_loss without num_items_in_batch)")
    found.update(_collator(report, current))
    found.update(_dataset(report, current))
    found.update(_flags(report))
    found.update(_class_label_values(report))
    peft = report.uses_peft or {"get_peft_model", "LoraConfig"} & set(report.calls)
    if peft:
        found["lora"] = (True, "report")
    if _FROZEN_EMBEDDINGS.search(report.text):
        found["freeze_embeddings"] = (True, "report (embedding parameters set to requires_grad=False)")
        if not peft:
            found["lora"] = (False, "report (frozen embeddings, no PEFT in the paste)")
    found.update(_consequences(report, found, current))
    return found


def _family(report: Report) -> tuple[str, str] | None:
    if report.model_type:
        key = report.model_type.lower()
        if key in FAMILIES:
            return FAMILIES[key], "report"
        return "llama", f"report (model_type {report.model_type!r} is not modelled: llama-like stand-in)"
    for name in [*report.model_classes, *report.model_names]:
        for pattern, family in _NAME_FAMILIES:
            if re.search(pattern, name.lower()):
                return family, f"report (from {name!r})"
    if report.returned_keys and "pooler_output" in report.returned_keys:
        return "bert", "report (the model returned pooler_output: a BERT-like encoder with a pooler)"
    return None


def _head(report: Report, family: str) -> tuple[str, str] | None:
    for cls in report.model_classes:
        head = model_head(cls, family)
        if head is not None:
            return head, f"report ({cls}: no task head)" if head == "base" else f"report ({cls})"
    return None


def _is_unsloth(report: Report) -> bool:
    return (
        "unsloth" in report.versions
        or bool({"FastLanguageModel", "FastModel"} & set(report.model_classes))
        or any(name.lower().startswith("unsloth/") for name in report.model_names)
        or "train_on_responses_only" in report.calls
        or report.trainer == "UnslothTrainer"
    )


def _trainer(report: Report) -> tuple[str, str] | None:
    name = report.trainer
    if _is_unsloth(report) and name in (None, "SFTTrainer", "UnslothTrainer"):
        return "SFTTrainer", UNSLOTH_MAPPED
    if name in TRAINERS:
        return name, "report"
    for base in report.trainer_bases:
        if base in TRAINERS:
            return base, f"report ({name} subclasses {base})"
        if base == "UnslothTrainer":
            return "SFTTrainer", UNSLOTH_MAPPED
    return None


def _legacy_compute_loss(report: Report) -> bool:
    for signature in report.defined_functions:
        if signature.startswith("compute_loss("):
            return "num_items_in_batch" not in signature and "**" not in signature
    return False


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.strip().lower()
        if lowered in _BOOL_TEXT:
            return _BOOL_TEXT[lowered]
        raise


def _collator(report: Report, current: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    name = report.collator
    if name in COLLATORS:
        found["collator"] = (COLLATORS[name], "report")
        kwargs = {}
        for key, text in report.collator_kwargs.items():
            try:
                value = _literal(text)
            except (ValueError, SyntaxError):
                continue
            if key in COLLATOR_KWARGS and (value is None or isinstance(value, (str, int, float, bool))):
                kwargs[key] = value
        found["collator_kwargs"] = (kwargs, "report")
    elif name and str(current["collator"]).startswith("custom"):
        found["collator"] = (current["collator"], f"default (your collator {name!r} modelled as {current['collator']})")
    template = report.flags.get("response_template")
    if isinstance(template, str) and template:
        found.update(_response_template(template))
    return found


def _response_template(value: str) -> dict[str, tuple[Any, str]]:
    """A literal marker, token ids sliced from an encoding with left context, or a list of ids.

    ``tokenizer.encode("\\n### Answer: ")[2:]`` drops the context's tokens and keeps the
    template's own tokens, whitespace included (a trailing space stays a token of its own):
    it is modelled as the template text without its leading whitespace, tokenised alone.
    Its literal may be a variable defined elsewhere in the paste; then the entry's default
    text stands in. A literal list of ids is taken as the in-context ids.
    """
    if re.fullmatch(r"\[[\d,\s]+\]", value.strip()):
        return {"response_template_in_context": (True, "report (token ids)")}
    if ".encode(" not in value:
        return {"response_template": (value, "report"), "response_template_in_context": (False, "report")}
    found: dict[str, tuple[Any, str]] = {
        "response_template_in_context": (False, "report (ids sliced from an encoding with context: the template's own tokens)")
    }
    literal = re.search(r"""(['"])(.+?)\1""", value)
    if literal:
        text = literal.group(2).encode().decode("unicode_escape").lstrip()
        found["response_template"] = (text, "report (its leading context sliced off)")
    return found


def _dataset(report: Report, current: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    columns = set(report.dataset_columns)
    fmt = report.dataset_format
    if fmt in ("text", "messages", "prompt_completion", "classification"):
        found["dataset_format"] = (fmt, "report")
    elif fmt == "tokenized":
        found["dataset_format"] = ("tokenized", "report")
        found["labels_mode"] = ("none", "report (no labels column)")
    elif fmt == "tokenized_with_labels":
        found["dataset_format"] = ("tokenized", "report")
        has_labels = current["labels_mode"] if current["labels_mode"] != "none" else "input_ids"
        found["labels_mode"] = (has_labels, "report (labels column present)")
    if fmt == "classification" and "labels" not in columns:
        if "label" in columns:
            found["label_column"] = ("label", "report")
        elif target := next((c for c in _CLASS_TARGET_COLUMNS if c in columns), None):
            found["label_column"] = (target, f"report (class targets in column {target!r})")
    misnamed = sorted(c for c in columns if c.endswith("_ids") and c not in _INPUT_ID_COLUMNS)
    if fmt in ("tokenized", "tokenized_with_labels") and misnamed and "labels" not in columns:
        mode = current["labels_mode"] if current["labels_mode"] != "none" else "prompt_masked"
        found["labels_mode"] = (mode, f"report (targets in column {misnamed[0]!r})")
        found["label_column"] = (misnamed[0], "report")
    if fmt == "classification" and "text" in columns and {"with_transform", "set_transform"} & set(report.calls):
        found["keep_text_column"] = (True, "report (a lazy transform tokenises the raw 'text' column)")
    if fmt in ("tokenized", "tokenized_with_labels") and "text" in columns:
        found["keep_text_column"] = (True, "report (raw 'text' column beside input_ids)")
    return found


def _class_label_values(report: Report) -> dict[str, tuple[Any, str]]:
    """'Target 12 is out of bounds': a class id the head cannot take is in the data."""
    for exc in report.exceptions:
        found = _TARGET_OUT_OF_BOUNDS.search(exc.message)
        if found:
            value = int(found.group(1))
            return {"class_label_values": ([0, 1, value], f"report (Target {value} in the error)")}
    return {}


def _consequences(report: Report, found: dict[str, tuple[Any, str]], current: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Fields implied by what the report states, where the report does not state them itself.

    - a collator that builds labels from input_ids (the LM collators) means the dataset holds
      token ids and no labels column;
    - assistant_only_loss works on conversational data only, so the dataset holds messages;
    - default_data_collator cannot pad, so rows that reached the model were padded to one length;
    - a contrastive model (CLIP, CLAP, SigLIP) trains on image-text pairs, with return_loss=True
      where the paste passes it;
    - with SFTTrainer and no collator named, an entry's default LM collator stands for "a collator
      that tensorises every column"; trl >= 1.7 writes a labels column that the LM collator's
      tokenizer.pad cannot pad, so DataCollatorForSeq2Seq (which pads labels with -100) stands in.
    """
    out: dict[str, tuple[Any, str]] = {}
    family, family_source = found.get("family", (current["family"], ""))
    if family == "clip":
        out["dataset_format"] = ("image_text", f"{family_source or 'default'} (a contrastive model trains on image-text pairs)")
        if _RETURN_LOSS_TRUE.search(report.text):
            out["return_loss"] = (True, "report (return_loss=True)")
    collator, source = found.get("collator", (None, ""))
    trainer, trainer_source = found.get("trainer", (None, ""))
    if (trainer == "SFTTrainer" and trainer_source.startswith("report") and collator is None
            and current["collator"] == "DataCollatorForLanguageModeling"):
        out["collator"] = ("DataCollatorForSeq2Seq", "default (stands for an unnamed collator under SFTTrainer, which writes labels)")
    stated_labels = (
        report.dataset_format == "tokenized_with_labels"
        or "labels" in report.dataset_columns
        or _WRITES_LABELS.search(report.text) is not None
    )
    if collator in LABEL_CREATING_COLLATORS and source.startswith("report") and not stated_labels:
        out["labels_mode"] = ("none", f"report ({collator} builds the labels)")
        if found.get("dataset_format", (current["dataset_format"],))[0] == "classification":
            out["dataset_format"] = ("tokenized", f"report ({collator} trains on tokens, not class labels)")
    if found.get("assistant_only_loss", (False,))[0] is True and "dataset_format" not in found:
        out["dataset_format"] = ("messages", "report (assistant_only_loss needs conversational data)")
    ragged = any(re.search("expected sequence of length|Unable to create tensor", e.message) for e in report.exceptions)
    if collator == "default_data_collator" and source.startswith("report") and not ragged:
        out["padded_rows"] = (True, "report (default_data_collator needs rows of one length)")
    return out


def _flags(report: Report) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    fields = Scenario.model_fields
    for flag, field in FLAGS.items():
        if flag not in report.flags or field in found:
            continue
        value = report.flags[flag]
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            value = _BOOL_TEXT[value.strip().lower()]
        source = "report"
        if field == "gradient_accumulation_steps" and isinstance(value, int) and value > MAX_GRADIENT_ACCUMULATION:
            value, source = MAX_GRADIENT_ACCUMULATION, f"report ({report.flags[flag]}, capped at {MAX_GRADIENT_ACCUMULATION})"
        try:
            Scenario.model_validate({field: value})
        except ValueError:
            continue  # not a value the scenario can take (e.g. source text of an expression)
        if field in fields:
            found[field] = (value, source)
    return found


# -- consistency


def _normalise(scenario: Scenario, sources: dict[str, str]) -> Scenario:
    """Adjust combinations the tiny run cannot take literally, and say so in the sources.

    Trainer and Seq2SeqTrainer need token ids: a text, chat or prompt/completion dataset
    reaches them tokenised (unless the collator tokenises raw text itself).
    """
    if (
        scenario.trainer != "SFTTrainer"
        and scenario.dataset_format in ("text", "messages", "prompt_completion")
        and scenario.collator != "custom_reads_text"
    ):
        sources["dataset_format"] = f"{sources['dataset_format']} ({scenario.dataset_format} tokenised for {scenario.trainer})"
        return scenario.model_copy(update={"dataset_format": "tokenized"})
    return scenario
