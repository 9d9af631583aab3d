"""Tiny, offline stand-ins for a user's setup: tokenizer, model, dataset and collator.

Everything is built from code in milliseconds, with no download. This module imports only
the standard library and the training stack (torch, transformers, trl, datasets, peft,
tokenizers) and works on the current releases and on older ones (transformers 4.55 /
trl 0.19): where their APIs differ it checks what is installed. A scenario arrives as a
plain dict, `reproducer.scenario.Scenario.model_dump()`.

`reproducer.script` copies this file verbatim into the standalone scripts it writes, so
it must not import anything from lossdoctor.
"""

from __future__ import annotations

import importlib.metadata
import random
import warnings

IGNORE_INDEX = -100
PADDED_LENGTH = 64
"""Row length of a scenario whose rows are padded to one length without a max_length."""
DEFAULT_RESPONSE_TEMPLATE = "\n### Answer:"
"""Marker between prompt and response in text rows when the scenario names none."""
INSTRUCTION_PREFIX = "### Question:"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_RESPONSE_MARKER = "<|assistant|>\n"
"""What starts an assistant turn in the chat template: the marker for chat rows."""
LIBRARIES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers")

WORDS = (
    "the a cat dog sun moon river tree stone cloud bird fish house road city light rain wind "
    "fire water green blue red small large quick slow happy bright dark old new warm cold "
    "runs jumps sings reads writes sees finds makes takes gives walks swims flies grows "
    "and or but with from over under near far into onto about after before because "
    "what where when why how which who is are was were will can may must should"
).split()
IMAGE_SIZE = 32
"""Side of the tiny contrastive model's square images (4 x 4 patches of 8 pixels)."""
LABEL_NAMES = ["negative", "positive", "neutral", "mixed", "unknown", "other", "spam", "ham"]

_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\n' }}{GEN_OPEN}{{ message['content'] + '<|end|>' }}{GEN_CLOSE}{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)
CHAT_TEMPLATE_WITH_GENERATION = _CHAT_TEMPLATE.replace("{GEN_OPEN}", "{% generation %}").replace(
    "{GEN_CLOSE}", "{% endgeneration %}"
)
CHAT_TEMPLATE_PLAIN = _CHAT_TEMPLATE.replace("{GEN_OPEN}", "").replace("{GEN_CLOSE}", "")


def version_of(package: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


_VERSIONS: dict[str, str] = {}


def installed_versions() -> dict[str, str]:
    """Versions of the training stack, as importlib.metadata sees them (read once per process)."""
    if not _VERSIONS:
        _VERSIONS.update({name: v for name in LIBRARIES if (v := version_of(name)) is not None})
    return dict(_VERSIONS)


def _major_minor(version: str | None) -> tuple[int, int]:
    if not version:
        return (0, 0)
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


# --------------------------------------------------------------------------- tokenizer

_TRAINED_TOKENIZER = None


def _corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".")
    for _ in range(100):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(f"{INSTRUCTION_PREFIX} {prompt}{DEFAULT_RESPONSE_TEMPLATE} {answer}")
    lines += LABEL_NAMES
    return lines


def _trained_tokenizer():
    """A byte-level BPE (vocab ~500) trained once per process on generated sentences."""
    global _TRAINED_TOKENIZER
    if _TRAINED_TOKENIZER is None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>", *CHAT_TOKENS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_corpus(), trainer=trainer)
        _TRAINED_TOKENIZER = tok.to_str()
    return _TRAINED_TOKENIZER


def build_tokenizer(*, generation_markers: bool = True, has_pad: bool = True):
    """A fresh `PreTrainedTokenizerFast` over the cached trained BPE.

    Special tokens: pad ``<pad>`` (unless ``has_pad`` is False), bos ``<s>``, eos ``</s>``,
    unk ``<unk>``, mask ``<mask>`` and the chat tokens. The chat template has ``{% generation %}`` markers
    when ``generation_markers`` is True. Same ids in every process.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        pad_token="<pad>" if has_pad else None,
        additional_special_tokens=list(CHAT_TOKENS),
        model_max_length=256,
    )
    tok.chat_template = CHAT_TEMPLATE_WITH_GENERATION if generation_markers else CHAT_TEMPLATE_PLAIN
    return tok


def tokenizer_for(s: dict):
    return build_tokenizer(
        generation_markers=s["chat_template_generation_markers"], has_pad=s["tokenizer_has_pad"]
    )


# --------------------------------------------------------------------------- rows and markers


def response_template_text(s: dict) -> str:
    """The marker as the user wrote it; for chat rows the assistant turn header."""
    if s["response_template"] is not None:
        return s["response_template"]
    if s["dataset_format"] == "messages":
        return CHAT_RESPONSE_MARKER
    return DEFAULT_RESPONSE_TEMPLATE


def _split_row(s: dict, prompt: str, response: str) -> tuple[str, str]:
    """Prompt part (question, newline, marker) and response part of a text row.

    The data holds the marker without surrounding whitespace on its own line (or, with
    ``response_template_context='mid_line'``, after a space), followed by one space and
    the response. A marker that the user wrote with other
    whitespace (a leading space, a trailing space) is then tokenised differently on its
    own than in context, as happens with real BPE tokenizers.
    """
    marker = response_template_text(s).strip()
    before = " " if s.get("response_template_context") == "mid_line" else "\n"
    return f"{INSTRUCTION_PREFIX} {prompt}{before}{marker}", f" {response}"


def _prompts_and_responses(s: dict) -> list[tuple[str, str]]:
    """Variable-length prompt/response word strings, the same for the same seed."""
    rng = random.Random(s["seed"])
    pairs = []
    for i in range(s["num_rows"]):
        prompt = " ".join(rng.choice(WORDS) for _ in range(s["prompt_words"] + i % 3))
        response = " ".join(rng.choice(WORDS) for _ in range(s["response_words"] + (2 * i) % 5))
        pairs.append((prompt, response))
    return pairs


def marker_ids(s: dict, tok) -> list[int]:
    """Token ids of the response marker as they appear inside a row (in context)."""
    if s["dataset_format"] == "messages":
        return tok.encode(CHAT_RESPONSE_MARKER, add_special_tokens=False)
    prompt_part, response_part = _split_row(s, "the cat", "the dog")
    marker = response_template_text(s).strip()
    text = prompt_part + response_part
    start = len(prompt_part) - len(marker)
    end = len(prompt_part)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [i for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if a >= start and b <= end]


# --------------------------------------------------------------------------- dataset


def _class_labels(s: dict) -> list:
    values = s["class_label_values"] or list(range(s["num_labels"]))
    ids = [values[i % len(values)] for i in range(s["num_rows"])]
    kind = s["class_label_kind"]
    if kind == "str":
        return [LABEL_NAMES[v % len(LABEL_NAMES)] if v >= 0 else "unknown" for v in ids]
    if kind == "float":
        return [float(v) for v in ids]
    return [int(v) for v in ids]


def _truncate(ids: list[int], s: dict) -> list[int]:
    return ids[: s["max_length"]] if s["max_length"] else ids


def _tokenized_row(s: dict, tok, prompt_part: str, response_part: str) -> dict:
    prompt_ids = tok.encode(prompt_part, add_special_tokens=False)
    response_ids = tok.encode(response_part, add_special_tokens=False) + [tok.eos_token_id]
    mode = s["labels_mode"]
    if s["head"] == "seq2seq":
        input_ids = _truncate(prompt_ids, s)
        target = _truncate(response_ids, s)
        labels = [IGNORE_INDEX] * len(target) if mode == "all_masked" else target
    else:
        input_ids = _truncate(prompt_ids + response_ids, s)
        labels = {
            "none": None,
            "input_ids": list(input_ids),
            "prompt_masked": _truncate([IGNORE_INDEX] * len(prompt_ids) + response_ids, s),
            "response_only": response_ids,
            "all_masked": [IGNORE_INDEX] * len(input_ids),
        }[mode]
    row = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
    if mode != "none":
        row[s["label_column"]] = labels
    if s.get("padded_rows"):
        _pad_row(row, s, tok)
    if s["keep_text_column"]:
        row["text"] = prompt_part + response_part
    return row


def _pad_row(row: dict, s: dict, tok) -> None:
    """Right-pad a tokenised row to ``max_length`` (or PADDED_LENGTH): pad ids, mask 0, labels -100."""
    length = s["max_length"] or PADDED_LENGTH
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    fill = {"input_ids": pad, "attention_mask": 0}
    for key, value in list(row.items()):
        if isinstance(value, list) and key not in ("text", "pixel_values"):
            row[key] = (value + [fill.get(key, IGNORE_INDEX)] * length)[:length]


def _image_text_row(s: dict, tok, caption: str, rng: random.Random) -> dict:
    """A tokenised caption and a random image (channels x IMAGE_SIZE x IMAGE_SIZE), as a processor returns them."""
    ids = _truncate(tok.encode(caption, add_special_tokens=False), s)
    pixels = [[[rng.random() for _ in range(IMAGE_SIZE)] for _ in range(IMAGE_SIZE)] for _ in range(3)]
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "pixel_values": pixels}
    if s.get("padded_rows"):
        _pad_row(row, s, tok)
    return row


def build_rows(s: dict, tok) -> list[dict]:
    """The synthetic dataset rows for the scenario's `dataset_format`."""
    rows = []
    pairs = _prompts_and_responses(s)
    if s["dataset_format"] == "image_text":
        rng = random.Random(s["seed"])
        return [_image_text_row(s, tok, prompt, rng) for prompt, _ in pairs]
    if s["dataset_format"] == "classification":
        for (prompt, _), label in zip(pairs, _class_labels(s)):
            ids = _truncate(tok.encode(prompt, add_special_tokens=False), s)
            row = {"input_ids": ids, "attention_mask": [1] * len(ids), s["label_column"]: label}
            if s["keep_text_column"]:
                row["text"] = prompt
            if s.get("padded_rows"):
                _pad_row(row, s, tok)
            rows.append(row)
        return rows
    for prompt, response in pairs:
        if s["dataset_format"] == "messages":
            rows.append(
                {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}
            )
            continue
        prompt_part, response_part = _split_row(s, prompt, response)
        if s["dataset_format"] == "text":
            rows.append({"text": prompt_part + response_part})
        elif s["dataset_format"] == "prompt_completion":
            rows.append({"prompt": prompt_part, "completion": response_part})
        else:
            rows.append(_tokenized_row(s, tok, prompt_part, response_part))
    return rows


def build_dataset(s: dict, tok):
    from datasets import Dataset

    return Dataset.from_list(build_rows(s, tok))


# --------------------------------------------------------------------------- model

_LORA_TARGETS = {
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "t5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "clip": ["q_proj", "v_proj"],
}
_LORA_TASK = {"causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM", "base": "FEATURE_EXTRACTION"}


def build_config(s: dict, tok):
    """A tiny config (hidden 64, 2 layers) for the scenario's model family."""
    import transformers as tf

    ids = {
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id if s["pad_token_in_config"] else None,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    decoder = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    encoder = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    }
    family = s["family"]
    if family in ("llama", "qwen2", "mistral"):
        cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}[family]
        config = cls(**decoder, tie_word_embeddings=True, **ids)
    elif family == "gemma":
        config = tf.GemmaConfig(**decoder, head_dim=16, **ids)
    elif family == "phi3":
        config = tf.Phi3Config(**decoder, **ids)
    elif family == "gpt2":
        config = tf.GPT2Config(n_positions=256, n_embd=64, n_layer=2, n_head=4, **ids)
    elif family == "gpt_neox":
        config = tf.GPTNeoXConfig(**encoder, **ids)
    elif family == "t5":
        config = tf.T5Config(
            d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
            decoder_start_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0, **ids,
        )
    elif family == "bart":
        config = tf.BartConfig(
            d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
            max_position_embeddings=256, decoder_start_token_id=tok.eos_token_id, **ids,
        )
    elif family == "bert":
        config = tf.BertConfig(**encoder, **ids)
    elif family == "roberta":
        config = tf.RobertaConfig(**{**encoder, "max_position_embeddings": 258}, **ids)
    elif family == "clip":
        vision = {**encoder, "image_size": IMAGE_SIZE, "patch_size": 8}
        del vision["max_position_embeddings"]
        config = tf.CLIPConfig(text_config={**encoder, **ids}, vision_config=vision, projection_dim=32)
    else:
        raise ValueError(f"unknown model family {family!r}")
    if s["head"] == "seq_cls":
        config.num_labels = s["num_labels"]
        if s["problem_type"]:
            config.problem_type = s["problem_type"]
    return config


def build_model(s: dict, tok):
    """The tiny model with the scenario's head, optionally wrapped in LoRA (r=4)."""
    import torch
    import transformers as tf

    config = build_config(s, tok)
    auto = {
        "causal_lm": tf.AutoModelForCausalLM,
        "base": tf.AutoModel,
        "seq_cls": tf.AutoModelForSequenceClassification,
        "seq2seq": tf.AutoModelForSeq2SeqLM,
        "masked_lm": tf.AutoModelForMaskedLM,
        "pretraining": tf.AutoModelForPreTraining,
    }[s["head"]]
    torch.manual_seed(s["seed"])
    kwargs = {"attn_implementation": s["attn_implementation"]} if s["attn_implementation"] else {}
    model = auto.from_config(config, **kwargs)
    if s.get("freeze_embeddings"):
        embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
        embeddings.requires_grad_(False)
    if s["enable_input_require_grads"] is True:
        model.enable_input_require_grads()
    elif s["enable_input_require_grads"] is False:
        _never_require_input_grads(model)
    if s["lora"]:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=_LORA_TARGETS[s["family"]],
            task_type=_LORA_TASK.get(s["head"]),
        )
        model = get_peft_model(model, lora)
    return model


def _never_require_input_grads(model) -> None:
    """Remove the input-embedding hook and stop transformers from installing it again.

    transformers 5.x installs it inside `gradient_checkpointing_enable`, which hides the
    reentrant-checkpointing failure that older releases show through Trainer.
    """
    if getattr(model, "_require_grads_hook", None) is not None or getattr(model, "_require_grads_hooks", None):
        model.disable_input_require_grads()
    model.enable_input_require_grads = lambda *args, **kwargs: None


# --------------------------------------------------------------------------- collators


def has_trl_completion_collator() -> bool:
    """trl < 0.20 ships DataCollatorForCompletionOnlyLM; later releases removed it."""
    return _major_minor(version_of("trl")) < (0, 20)


def completion_only_collator_class():
    """The real TRL class on trl < 0.20, else the faithful re-implementation below."""
    if has_trl_completion_collator():
        from trl import DataCollatorForCompletionOnlyLM

        return DataCollatorForCompletionOnlyLM
    return _reimplemented_completion_only_collator()


def _reimplemented_completion_only_collator():
    import numpy as np
    from transformers import DataCollatorForLanguageModeling

    class DataCollatorForCompletionOnlyLM(DataCollatorForLanguageModeling):
        """trl 0.19's DataCollatorForCompletionOnlyLM (response template only), re-implemented.

        Same token-id search and the same warning as the removed TRL class: every token up
        to the end of the response template is masked; a row without the template is
        masked entirely.
        """

        def __init__(self, response_template, *args, mlm=False, ignore_index=IGNORE_INDEX, **kwargs):
            super().__init__(*args, mlm=mlm, **kwargs)
            self.response_template = response_template
            if isinstance(response_template, str):
                self.response_token_ids = self.tokenizer.encode(response_template, add_special_tokens=False)
            else:
                self.response_token_ids = response_template
            self.ignore_index = ignore_index

        def torch_call(self, examples):
            # trl 0.19's SFTTrainer fed this collator input_ids and attention_mask only; newer
            # SFTTrainers add labels/completion_mask columns, which the parent class cannot pad.
            if examples and isinstance(examples[0], dict):
                examples = [{k: v for k, v in e.items() if k in ("input_ids", "attention_mask")} for e in examples]
            batch = super().torch_call(examples)
            for i in range(len(examples)):
                start = None
                for idx in np.where(batch["labels"][i] == self.response_token_ids[0])[0]:
                    if self.response_token_ids == batch["labels"][i][idx : idx + len(self.response_token_ids)].tolist():
                        start = idx
                if start is None:
                    warnings.warn(
                        f"Could not find response key `{self.response_template}` in the following instance: "
                        f"{self.tokenizer.decode(batch['input_ids'][i])}. This instance will be ignored in loss "
                        "calculation. Note, if this happens often, consider increasing the `max_length`.",
                        UserWarning,
                    )
                    batch["labels"][i, :] = self.ignore_index
                else:
                    batch["labels"][i, : start + len(self.response_token_ids)] = self.ignore_index
            return batch

    return DataCollatorForCompletionOnlyLM


def _collate_drop_labels(tok):
    """A hand-written collator that pads input_ids/attention_mask and forgets labels."""

    def collate(features):
        batch = tok.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    return collate


def _collate_reads_text(tok, max_length):
    """A hand-written collator that tokenises the raw 'text' column itself; rows that carry a class label (an
    integer 'labels' / 'label', as a classification dataset's transform writes it) keep it, others get LM labels."""

    import torch

    def collate(features):
        batch = tok(
            [f["text"] for f in features], padding=True, truncation=bool(max_length),
            max_length=max_length, return_tensors="pt",
        )
        key = next((k for k in ("labels", "label") if isinstance(features[0].get(k), int)), None)
        if key is not None:
            labels = torch.tensor([f[key] for f in features])
        else:
            labels = batch["input_ids"].clone()
            labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}

    return collate


def _with_return_loss(collate):
    """``collate`` whose batches also carry return_loss=True (what contrastive models need for a loss)."""

    def collate_with_return_loss(features):
        batch = collate(features)
        batch["return_loss"] = True
        return batch

    return collate_with_return_loss


def build_collator(s: dict, tok, model):
    """The scenario's data collator (None: let the trainer choose) and a note on which one.

    With ``return_loss`` the collator (or, for 'default', the one Trainer would pick) adds
    return_loss=True to every batch, as the transformers contrastive example's collate_fn does.
    """
    import transformers as tf

    collator, note = _named_collator(s, tok, model)
    if not s.get("return_loss"):
        return collator, note
    if collator is None:
        collator = tf.DataCollatorWithPadding(tok) if s["pass_processing_class"] else tf.default_data_collator
    return _with_return_loss(collator), note


def _named_collator(s: dict, tok, model):
    import transformers as tf

    name = s["collator"]
    kwargs = dict(s["collator_kwargs"])
    if name == "default":
        return None, None
    if name == "DataCollatorWithPadding":
        return tf.DataCollatorWithPadding(tok, **kwargs), None
    if name == "DataCollatorForSeq2Seq":
        if s["head"] == "seq2seq":
            kwargs.setdefault("model", model)
        return tf.DataCollatorForSeq2Seq(tok, **kwargs), None
    if name == "DataCollatorForLanguageModeling":
        kwargs.setdefault("mlm", s["head"] in ("masked_lm", "pretraining"))
        return tf.DataCollatorForLanguageModeling(tok, **kwargs), None
    if name == "DataCollatorForCompletionOnlyLM":
        template = marker_ids(s, tok) if s["response_template_in_context"] else response_template_text(s)
        cls = completion_only_collator_class()
        if has_trl_completion_collator():
            note = f"DataCollatorForCompletionOnlyLM: trl {version_of('trl')}'s own class"
        else:
            note = (
                f"DataCollatorForCompletionOnlyLM: lossdoctor's re-implementation of trl 0.19's class "
                f"(trl {version_of('trl')} removed it)"
            )
        return cls(template, tokenizer=tok, **kwargs), note
    if name == "default_data_collator":
        return tf.default_data_collator, None
    if name == "custom_drop_labels":
        return _collate_drop_labels(tok), None
    if name == "custom_reads_text":
        return _collate_reads_text(tok, s["max_length"]), None
    raise ValueError(f"unknown collator {name!r}")
