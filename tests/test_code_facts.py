from pathlib import Path

import pytest

from bot.code_facts import assignment_flag, code_facts, config_facts, config_flags, dataset_format_of, model_type_of

DATA = Path(__file__).parent / "data" / "parse"


def test_completion_only_script():
    facts = code_facts((DATA / "code_completion_only.py").read_text())
    assert facts.parsed
    assert facts.model_classes == ["AutoModelForCausalLM"]
    assert facts.model_names == ["meta-llama/Llama-3.1-8B"]  # resolved through `model_id = ...`
    assert facts.trainer == "SFTTrainer"
    assert facts.collator == "DataCollatorForCompletionOnlyLM"
    assert facts.flags["response_template"] == " ### Answer:"  # positional arg, resolved through a name
    assert facts.flags["pad_token"] == "eos"
    assert facts.flags["max_seq_length"] == 512 and facts.flags["max_length"] == 512
    assert facts.flags["packing"] is False
    assert facts.flags["fp16"] is True
    assert facts.flags["logging_nan_inf_filter"] is False
    assert facts.flags["use_cache"] is False
    assert facts.flags["torch_dtype"] == "torch.float16"
    assert {"instruction", "output"} <= set(facts.dataset_columns)


def test_classification_script():
    facts = code_facts((DATA / "code_classification.py").read_text())
    assert facts.flags["num_labels"] == 3
    assert facts.flags["problem_type"] == "single_label_classification"
    assert facts.flags["label_names"] == "['label']"
    assert facts.flags["remove_unused_columns"] is True
    assert facts.flags["zero_stage"] == 2 and facts.flags["overlap_comm"] is True
    assert facts.collator == "DataCollatorWithPadding"
    assert facts.collator_kwargs == {"padding": "'longest'"}
    assert {"idx", "sentence"} <= set(facts.dataset_columns)
    assert dataset_format_of(facts.dataset_columns, facts.flags) == "classification"


def test_custom_trainer_subclass_and_calls():
    facts = code_facts((DATA / "code_custom_trainer.py").read_text())
    assert facts.trainer == "WeightedLossTrainer"
    assert facts.trainer_bases == ["Seq2SeqTrainer"]
    assert "compute_loss(self, model, inputs, return_outputs=False)" in facts.defined_functions
    assert {"compile", "resize_token_embeddings"} <= set(facts.calls)
    assert facts.model_classes == ["GPT2LMHeadModel"]  # GPT2LMHeadModel(config)
    assert facts.config_classes == ["GPT2Config"]
    assert {"src", "tgt", "labels"} <= set(facts.dataset_columns)  # from the function given to .map()


def test_unsloth_notebook_with_responses_only():
    code = '''
from unsloth import FastLanguageModel
from unsloth.chat_templates import train_on_responses_only
model, tokenizer = FastLanguageModel.from_pretrained(model_name="unsloth/Qwen2.5-7B", max_seq_length=2048, load_in_4bit=True)
model = FastLanguageModel.get_peft_model(model, r=16, use_gradient_checkpointing="unsloth", modules_to_save=["lm_head"])
trainer = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=ds, dataset_text_field="text",
                     data_collator=DataCollatorForSeq2Seq(tokenizer=tokenizer, padding=True),
                     args=TrainingArguments(per_device_train_batch_size=2, gradient_accumulation_steps=4, optim="adamw_8bit"))
trainer = train_on_responses_only(trainer, instruction_part="<|im_start|>user\\n", response_part="<|im_start|>assistant\\n")
'''
    facts = code_facts(code)
    assert facts.model_classes == ["FastLanguageModel"]
    assert facts.model_names == ["unsloth/Qwen2.5-7B"]
    assert facts.uses_peft
    assert facts.flags["lora_r"] == 16
    assert facts.flags["gradient_checkpointing"] == "unsloth"
    assert facts.flags["modules_to_save"] == "['lm_head']"
    assert facts.flags["load_in_4bit"] is True
    assert facts.flags["response_template"] == "<|im_start|>assistant\n"
    assert facts.flags["instruction_template"] == "<|im_start|>user\n"
    assert facts.flags["dataset_text_field"] == "text"
    assert facts.flags["gradient_accumulation_steps"] == 4
    assert facts.collator == "DataCollatorForSeq2Seq"
    assert facts.collator_kwargs == {"tokenizer": "tokenizer", "padding": "True"}
    assert "train_on_responses_only" in facts.calls
    assert dataset_format_of(facts.dataset_columns, facts.flags) == "text"


def test_gradient_checkpointing_and_peft_calls():
    code = """
model = AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-70m", attn_implementation="eager")
model = prepare_model_for_kbit_training(model)
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
model.enable_input_require_grads()
tokenizer.add_special_tokens({"pad_token": "[PAD]"})
model.resize_token_embeddings(len(tokenizer))
args = SFTConfig(completion_only_loss=True, assistant_only_loss=False, max_length=1024, bf16=True)
"""
    facts = code_facts(code)
    assert facts.uses_peft
    assert facts.flags["gradient_checkpointing"] is True
    assert facts.flags["use_reentrant"] is False
    assert facts.flags["attn_implementation"] == "eager"
    assert facts.flags["completion_only_loss"] is True and facts.flags["assistant_only_loss"] is False
    assert facts.flags["max_length"] == 1024
    assert set(facts.calls) >= {
        "prepare_model_for_kbit_training",
        "gradient_checkpointing_enable",
        "enable_input_require_grads",
        "add_special_tokens",
        "resize_token_embeddings",
    }
    assert model_type_of(facts.model_names) == "gpt_neox"


def test_dataset_columns_from_dicts_and_subscripts():
    code = """
ds = Dataset.from_dict({"prompt": ["hi"], "completion": ["there"]})
def fmt(example):
    return {"messages": [{"role": "user", "content": example["question"]}]}
ds = ds.map(fmt, remove_columns=["question"])
pairs = Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}])
"""
    facts = code_facts(code)
    assert {"prompt", "completion", "messages", "question", "chosen", "rejected"} <= set(facts.dataset_columns)
    assert "role" not in facts.dataset_columns  # nested dicts are not columns
    assert dataset_format_of(facts.dataset_columns, {}) == "preference"


def test_pad_token_literal_and_unk():
    assert code_facts('tokenizer.pad_token = "<|pad|>"').flags["pad_token"] == "<|pad|>"
    assert code_facts("tok.pad_token_id = tok.unk_token_id\ntokenizer.pad_token = tokenizer.unk_token").flags[
        "pad_token"
    ] == "unk"


def test_fragment_with_ellipsis_and_magics_falls_back():
    code = (DATA / "code_grpo_fragment.txt").read_text().split("\n", 2)[2]  # drop the prose line
    facts = code_facts(code)
    assert facts.trainer == "GRPOTrainer"
    assert facts.model_classes == ["FastModel"]
    assert facts.model_names == ["google/gemma-3-4b-it"]
    assert facts.flags["learning_rate"] == 5e-06
    assert facts.flags["gradient_accumulation_steps"] == 4


def test_training_arguments_dump_is_read_by_regex():
    facts = code_facts((DATA / "training_args_dump.txt").read_text())
    assert facts.flags["fp16"] is True
    assert facts.flags["gradient_accumulation_steps"] == 16
    assert facts.flags["remove_unused_columns"] is False
    assert facts.flags["logging_dir"] == "/content/out/runs/Feb12_10-00-00_abc"
    assert facts.flags["optim"] == "OptimizerNames.PAGED_ADAMW_8BIT"
    assert facts.flags["label_names"] is None


def test_indented_code_is_dedented():
    facts = code_facts("    trainer = Trainer(model=m, args=TrainingArguments(fp16=True))\n    trainer.train()")
    assert facts.parsed and facts.trainer == "Trainer" and facts.flags["fp16"] is True


def test_code_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    code_facts(f"open({str(marker)!r}, 'w').write('x')\nimport os; os.system('touch {marker}')")
    assert not marker.exists()


@pytest.mark.parametrize("code", ["", "(((((", "def f(:\n", "\x00", "x = " + "(" * 500 + ")" * 500, "'''unterminated"])
def test_bad_code_never_raises(code):
    code_facts(code)


def test_huge_code_uses_regexes_only():
    code = "x = 1\n" * 40_000 + 'model = AutoModelForCausalLM.from_pretrained("gpt2")\n'
    facts = code_facts(code)
    assert not facts.parsed
    assert facts.model_names == ["gpt2"]


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen/Qwen2.5-0.5B", "qwen2"),
        ("distilgpt2", "gpt2"),
        ("openai-community/gpt2", "gpt2"),
        ("meta-llama/Llama-3.1-8B", "llama"),
        ("EleutherAI/pythia-70m", "gpt_neox"),
        ("google/gemma-2-2b", "gemma"),
        ("microsoft/phi-3-mini-4k-instruct", "phi3"),
        ("bert-base-uncased", "bert"),
        ("roberta-base", "roberta"),
        ("mistralai/Mistral-7B-v0.1", "mistral"),
        ("google/flan-t5-base", "t5"),
        ("facebook/bart-large", "bart"),
        ("LlamaForCausalLM", "llama"),
        ("AutoModelForCausalLM", None),
    ],
)
def test_model_type_of(name, family):
    assert model_type_of([name]) == family


@pytest.mark.parametrize(
    ("columns", "flags", "expected"),
    [
        (["text"], {}, "text"),
        (["messages"], {}, "messages"),
        (["conversations"], {}, "messages"),
        (["prompt", "completion"], {}, "prompt_completion"),
        (["input_ids", "attention_mask"], {}, "tokenized"),
        (["input_ids", "attention_mask", "labels"], {}, "tokenized_with_labels"),
        (["text", "label"], {}, "classification"),
        (["sentence"], {"num_labels": 3}, "classification"),
        (["prompt", "chosen", "rejected"], {}, "preference"),
        ([], {}, None),
    ],
)
def test_dataset_format_of(columns, flags, expected):
    assert dataset_format_of(columns, flags) == expected


def test_config_flags_deepspeed_and_gc_kwargs():
    flags = config_flags(
        {
            "zero_optimization": {"stage": 2, "overlap_comm": True},
            "bf16": {"enabled": True},
            "gradient_checkpointing_kwargs": {"use_reentrant": False},
            "lora_target_modules": ["q_proj", "v_proj"],
            "cutoff_len": 1024,
        }
    )
    assert flags["zero_stage"] == 2 and flags["overlap_comm"] is True and flags["bf16"] is True
    assert flags["use_reentrant"] is False
    assert flags["lora_target_modules"] == "q_proj,v_proj"
    assert flags["cutoff_len"] == 1024 and flags["max_length"] == 1024


def test_config_facts_llamafactory_and_deepspeed_path():
    facts = config_facts(
        {"model_name_or_path": "Qwen/Qwen2-7B", "finetuning_type": "lora", "deepspeed": "ds_z3_config.json"}
    )
    assert facts.model_names == ["Qwen/Qwen2-7B"]
    assert facts.uses_peft
    assert facts.flags["zero_stage"] == 3


def test_config_facts_ms_swift_settings():
    facts = config_facts({"model_type": "qwen2-7b", "train_type": "lora", "model": "Qwen/Qwen2-7B-Instruct"})
    assert facts.model_names == ["Qwen/Qwen2-7B-Instruct", "qwen2-7b"]
    assert facts.uses_peft
    axolotl = config_facts({"model_type": "LlamaForCausalLM", "adapter": "qlora"})
    assert axolotl.model_classes == ["LlamaForCausalLM"] and axolotl.model_names == [] and axolotl.uses_peft
    assert not config_facts({"finetuning_type": "full", "train_type": "full"}).uses_peft


def test_assignment_flag():
    assert assignment_flag("packing=True") == ("packing", True)
    assert assignment_flag("max_seq_length = 512") == ("max_seq_length", 512)
    assert assignment_flag("DataCollatorForSeq2Seq(tok)") is None


def test_tokenize_function_makes_the_dataset_tokenised():
    facts = code_facts(
        'def tokenize(examples):\n    return tokenizer(examples["text"], truncation=True)\n'
        "ds = ds.map(tokenize, batched=True)\n"
    )
    assert {"input_ids", "attention_mask"} <= set(facts.dataset_columns)
    assert dataset_format_of(facts.dataset_columns, facts.flags) == "tokenized"


def test_formatting_function_that_does_not_tokenize_keeps_text():
    facts = code_facts('def fmt(example):\n    return {"text": example["prompt"] + example["answer"]}\nds = ds.map(fmt)\n')
    assert "input_ids" not in facts.dataset_columns


@pytest.mark.parametrize(
    ("config", "trainer"),
    [
        ({"rlhf_type": "grpo", "model": "Qwen/Qwen2.5-7B"}, "GRPOTrainer"),  # ms-swift `swift rlhf --rlhf_type grpo`
        ({"stage": "dpo", "model_name_or_path": "x/y"}, "DPOTrainer"),  # LLaMA-Factory
        ({"rl": "KTO", "base_model": "x/y"}, "KTOTrainer"),  # axolotl
        ({"stage": "sft", "model_name_or_path": "x/y"}, None),  # each framework's own trainer: not named
        ({"stage": 2}, None),  # a DeepSpeed-like stage number is not a training stage
    ],
)
def test_config_facts_trainer_from_rl_stage(config, trainer):
    assert config_facts(config).trainer == trainer


def test_a_deepspeed_auto_defers_to_a_concrete_value_from_elsewhere():
    from bot.code_facts import CodeFacts

    facts = CodeFacts(flags={"fp16": "auto", "bf16": False})
    facts.add(CodeFacts(flags={"fp16": True, "bf16": "auto"}))
    assert facts.flags == {"fp16": True, "bf16": False}  # "auto" gives way; a concrete first value stays


@pytest.mark.parametrize(("config", "expected"), [
    ("max_length: 1024\nmax_prompt_length: 1024\n", True),
    ("max_length: 1024\nmax_prompt_length: 2048\n", True),
    ("max_length: 1024\nmax_prompt_length: 512\n", None),
    ("max_prompt_length: 512\n", None),
])
def test_a_prompt_budget_that_fills_max_length_is_a_derived_flag(config, expected):
    """Preference trainers truncate the prompt to max_prompt_length and the pair to max_length: a prompt budget
    that is not below max_length leaves no room for the responses, which two settings only show together."""
    from bot.parse import parse_text

    report = parse_text("training config:\n\n" + config + "num_train_epochs: 1\n")
    assert report.flags.get("prompt_fills_max_length") is expected
