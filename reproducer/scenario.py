"""`Scenario`: the user's training setup as data, at tiny scale.

A scenario is built from a `Report` plus a knowledge entry's defaults (never by running
pasted code), changed by named operations (`reproducer.ops`), and realised by
`reproducer.child` inside the sandbox. The child receives ``scenario.model_dump()`` as
JSON, so every field must be plain data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from knowledge.schema import Head

# clip: a tiny CLIPModel (text and vision towers); it stands in for other contrastive models (CLAP, SigLIP)
Family = Literal["llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "gpt_neox", "t5", "bart", "bert", "roberta", "clip"]
TrainerName = Literal["Trainer", "Seq2SeqTrainer", "SFTTrainer"]
Collator = Literal[
    "default",  # no data_collator argument: Trainer/SFTTrainer picks its own
    "DataCollatorWithPadding",
    "DataCollatorForSeq2Seq",
    "DataCollatorForLanguageModeling",
    "DataCollatorForCompletionOnlyLM",  # legacy TRL class, or lossdoctor's faithful re-implementation on new TRL
    "default_data_collator",
    "custom_drop_labels",  # a hand-written collator that pads input_ids/attention_mask only
    "custom_reads_text",  # a hand-written collator that tokenises the raw 'text' column itself
]
DatasetFormat = Literal["text", "messages", "prompt_completion", "tokenized", "classification", "image_text"]
"""`image_text`: tokenised captions with `pixel_values`, the image-text pairs a contrastive model trains on."""
LabelsMode = Literal[
    "none",  # no labels column
    "input_ids",  # labels = input_ids (same length)
    "prompt_masked",  # labels = [-100]*len(prompt) + response ids (same length as input_ids)
    "response_only",  # labels = response ids only (NOT aligned with input_ids)
    "all_masked",  # every label -100
]


class Scenario(BaseModel):
    """A tiny, synthetic stand-in for the user's training run."""

    model_config = ConfigDict(extra="forbid")

    # model
    family: Family = "llama"
    head: Head = "causal_lm"
    num_labels: int = 2
    """Classification heads only."""
    problem_type: str | None = None
    pad_token_in_config: bool = True
    """False: model.config.pad_token_id is None (decoder LLMs as shipped)."""
    tokenizer_has_pad: bool = True
    lora: bool = False
    freeze_embeddings: bool = False
    """The embedding layer's parameters have requires_grad=False (frozen by the user)."""
    attn_implementation: str | None = None

    # trainer and collator
    trainer: TrainerName = "Trainer"
    pass_processing_class: bool = True
    """Trainer(processing_class=tokenizer); affects the default collator and pad-token patching."""
    collator: Collator = "default"
    collator_kwargs: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    return_loss: bool = False
    """Every batch carries return_loss=True: contrastive models (CLIP, CLAP, SigLIP) compute their loss only then."""
    response_template: str | None = None
    """Completion-only marker as the user wrote it (text)."""
    response_template_in_context: bool = False
    """True: pass the marker as token ids taken from its in-context tokenisation."""
    response_template_context: Literal["own_line", "mid_line"] = "own_line"
    """What precedes the marker in each text row: a newline (own line) or a space (mid-line)."""
    chat_template_generation_markers: bool = True
    """The tokenizer's chat template has {% generation %} markers."""

    # data
    dataset_format: DatasetFormat = "tokenized"
    labels_mode: LabelsMode = "none"
    label_column: str = "labels"
    """Name of the labels column when present (a misnamed one, e.g. 'target_ids', is dropped by Trainer)."""
    padded_rows: bool = False
    """Tokenised rows padded to one length (tokenizer(..., padding='max_length')), as default_data_collator needs."""
    keep_text_column: bool = False
    """Keep the raw 'text' column beside the tokenised ones."""
    class_label_kind: Literal["int", "str", "float"] = "int"
    class_label_values: list[int] | None = None
    """Explicit class ids for classification rows (e.g. [0, 1, 4] with num_labels=3)."""
    num_rows: int = 8
    prompt_words: int = 6
    response_words: int = 6

    # training flags
    remove_unused_columns: bool = True
    max_length: int | None = None
    packing: bool = False
    completion_only_loss: bool | None = None
    assistant_only_loss: bool = False
    gradient_checkpointing: bool = False
    use_reentrant: bool | None = None
    """gradient_checkpointing_kwargs={'use_reentrant': ...}; None: library default."""
    enable_input_require_grads: bool | None = None
    """None: library default. False: the hook is removed so reentrant checkpointing sees no grad."""
    fp16: bool = False
    bf16: bool = False
    gradient_accumulation_steps: int = 1
    logging_nan_inf_filter: bool = True
    compute_loss_signature: Literal["current", "legacy_no_kwargs"] = "current"
    """legacy_no_kwargs: a Trainer subclass with compute_loss(self, model, inputs, return_outputs=False)."""

    # run
    steps: int = 3
    batch_size: int = 2
    learning_rate: float = 1e-2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    versions: dict[str, str] = Field(default_factory=dict)
    """Library versions to run on (package -> version), set by the `upgrade` op; empty: the installed stack."""
