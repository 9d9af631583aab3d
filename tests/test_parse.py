import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import UnreadableInput
from bot.models import ExceptionInfo, Report
from bot.parse import parse_bytes, parse_files, parse_text

DATA = Path(__file__).parent / "data" / "parse"


def parse_sample(name: str) -> Report:
    return parse_files([(name, (DATA / name).read_bytes())])


# ---------------------------------------------------------------- tracebacks


def test_plain_traceback_in_fence_with_wrapped_message_and_logs():
    paste = """Hi, I'm on transformers 4.48 and trl==0.15.2, getting this:
```python
Traceback (most recent call last):
  File "/content/train.py", line 42, in <module>
    trainer.train()
  File "/usr/local/lib/python3.10/dist-packages/transformers/trainer.py", line 3620, in compute_loss
    raise ValueError(
           ^^^^^^^^^^^
ValueError: The model did not return a loss from the inputs, only the following keys: logits,past_key_values. For reference, the inputs
it received are input_ids,attention_mask,labels.
```
{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 2e-05, 'epoch': 0.01}
"""
    report = parse_text(paste)
    assert report.exceptions[0].type == "ValueError"
    assert report.exceptions[0].message.endswith("input_ids,attention_mask,labels.")
    assert report.returned_keys == ["logits", "past_key_values"]
    assert report.received_inputs == ["input_ids", "attention_mask", "labels"]
    assert report.frames[0].file == "/content/train.py" and report.frames[0].library is None
    assert report.frames[1].library == "transformers" and report.frames[1].function == "compute_loss"
    assert report.frames[1].line == 3620
    assert report.versions == {"transformers": "4.48", "trl": "0.15.2"}
    assert report.losses == [0.0] and math.isnan(report.grad_norms[0])
    assert set(report.sections) >= {"traceback", "log", "prose"}
    assert "```" not in report.text


def test_chained_exceptions_in_printed_order():
    report = parse_sample("chained.txt")
    assert [e.type for e in report.exceptions] == ["ValueError", "ValueError", "SystemExit"]
    assert report.exceptions[0].message == "expected sequence of length 24 at dim 1 (got 27)"
    assert "(`labels` in this case) have excessive nesting" in report.exceptions[1].message
    assert [f.line for f in report.frames] == [762, 724, 88, 271, 778, 90]


def test_jupyter_traceback():
    report = parse_sample("jupyter_no_loss.txt")
    assert report.exceptions == [
        ExceptionInfo(
            type="ValueError",
            message="The model did not return a loss from the inputs, only the following keys: logits. "
            "For reference, the inputs it received are input_ids,attention_mask.",
        )
    ]
    assert report.returned_keys == ["logits"]
    assert report.received_inputs == ["input_ids", "attention_mask"]  # not confused by the source lines shown
    assert report.frames[0].file == "Cell In[12]" and report.frames[0].line == 3
    assert (report.frames[1].function, report.frames[1].line, report.frames[1].library) == ("train", 2241, "transformers")
    assert report.frames[2].function == "compute_loss"


def test_jupyter_header_without_final_message_keeps_the_type():
    report = parse_text(
        "KeyError                                  Traceback (most recent call last)\nCell In[4], line 2\n----> 2 x['text']\n"
    )
    assert report.exceptions == [ExceptionInfo(type="KeyError", message="")]


def test_old_ipython_traceback():
    report = parse_sample("old_ipython.txt")
    assert report.exceptions == [ExceptionInfo(type="TypeError", message="forward() got an unexpected keyword argument 'labels'")]
    assert [(f.function, f.line, f.library) for f in report.frames] == [
        ("<module>", 1, None),
        ("train", 1270, "transformers"),
        ("_call_impl", 1051, "torch"),
    ]


def test_rich_boxed_traceback():
    report = parse_sample("rich_box.txt")
    assert report.exceptions[0].type == "RuntimeError"
    assert [(f.function, f.library) for f in report.frames] == [
        ("<module>", None),
        ("train", "transformers"),  # the function name wrapped onto the next boxed line
        ("_wrapped_call_impl", "torch"),
        ("forward", "peft"),
    ]
    assert "│" not in report.text and "╭" not in report.text
    assert "55     data_collator=DataCollatorWithPadding(tokenizer)," in report.text


def test_rank_prefixed_cuda_assert_with_multiline_message():
    report = parse_sample("cuda_assert.txt")
    assert report.exceptions[0].type == "RuntimeError"
    assert report.exceptions[0].message.startswith("CUDA error: device-side assert triggered\nCUDA kernel errors")
    assert "TORCH_USE_CUDA_DSA" in report.exceptions[0].message
    assert report.frames[1].library == "torch"


@pytest.mark.parametrize("name", ["oom_dotted.txt", "oom_cuda.txt"])
def test_dotted_exception_types_keep_last_component(name):
    report = parse_sample(name)
    assert report.exceptions[0].type == "OutOfMemoryError"
    assert report.exceptions[0].message.startswith("CUDA out of memory.")


def test_bare_exception_line_without_traceback():
    report = parse_text("ValueError: Cannot handle batch sizes > 1 if no padding token is defined.")
    assert report.exceptions == [
        ExceptionInfo(type="ValueError", message="Cannot handle batch sizes > 1 if no padding token is defined.")
    ]
    assert report.frames == []


def test_exception_inside_a_sentence():
    report = parse_text("When I train I get IndexError: Target 4 is out of bounds. Any idea?")
    assert report.exceptions[0].type == "IndexError"
    assert report.exceptions[0].message.startswith("Target 4 is out of bounds.")


def test_warning_types_are_not_exceptions():
    report = parse_text("UserWarning: None of the inputs have requires_grad=True. Gradients will be None")
    assert report.exceptions == []
    assert report.warnings == ["UserWarning: None of the inputs have requires_grad=True. Gradients will be None"]


def test_library_of_frames():
    report = parse_text(
        'Traceback (most recent call last):\n'
        '  File "/home/u/LLaMA-Factory/src/llamafactory/train/sft/workflow.py", line 96, in run_sft\n'
        '  File "/content/unsloth_compiled_cache/UnslothSFTTrainer.py", line 10, in compute_loss\n'
        '  File "C:\\Users\\me\\venv\\Lib\\site-packages\\trl\\trainer\\sft_trainer.py", line 5, in train\n'
        '  File "/usr/lib/python3.10/threading.py", line 953, in run\n'
        "RuntimeError: boom\n"
    )
    assert [f.library for f in report.frames] == ["llamafactory", "unsloth", "trl", "python"]


# ---------------------------------------------------------- chat formatting


def test_slack_entities_quotes_and_inline_code():
    report = parse_sample("slack.txt")
    assert report.losses == [0.0, 0.0] and all(math.isnan(g) for g in report.grad_norms)
    assert report.warnings[0].startswith("UserWarning: Could not find response key `### Answer:`")
    assert "<s>" in report.warnings[0]  # &lt;s&gt; decoded
    assert report.collator == "DataCollatorForCompletionOnlyLM"
    assert report.flags["response_template"] == "### Answer:"
    assert report.flags["max_seq_length"] == 512
    assert "&gt;" not in report.text and not report.text.startswith(">")


def test_discord_message_with_code_and_traceback_fences():
    report = parse_sample("discord.md")
    assert report.versions == {"trl": "0.12.1"}
    assert report.exceptions[0].message == "element 0 of tensors does not require grad and does not have a grad_fn"
    assert report.model_names == ["Qwen/Qwen2.5-0.5B"] and report.model_type == "qwen2"
    assert report.trainer == "SFTTrainer"
    assert report.uses_peft
    assert report.flags["use_reentrant"] is True and report.flags["gradient_checkpointing"] is True
    assert report.flags["bf16"] is True and report.flags["attn_implementation"] == "sdpa"
    assert {"gradient_checkpointing_enable", "get_peft_model"} <= set(report.calls)
    assert report.sections == ["traceback", "code", "prose"]


def test_ansi_codes_and_carriage_returns():
    paste = (
        "\x1b[31mTraceback (most recent call last):\x1b[0m\r\n"
        '  File "\x1b[1m/x/train.py\x1b[0m", line 3, in <module>\r\n'
        "\x1b[1;31mRuntimeError\x1b[0m: expected scalar type Long but found Float\r\n"
        "  5%|▌         | 1/20 [00:01<00:19,  1.00s/it]\r 10%|█         | 2/20 [00:02<00:18, loss=nan]\n"
    )
    report = parse_text(paste)
    assert report.exceptions == [ExceptionInfo(type="RuntimeError", message="expected scalar type Long but found Float")]
    assert report.frames[0].file == "/x/train.py"
    assert len(report.losses) == 1 and math.isnan(report.losses[0])
    assert "\x1b" not in report.text and "\r" not in report.text


# ------------------------------------------------------------------- logs


def test_trainer_log_forms():
    paste = """{'loss': 2.3456, 'grad_norm': 12.5, 'learning_rate': 2e-05, 'epoch': 0.5}
{"loss": 1.25, "grad_norm": Infinity, "step": 10}
{'eval_loss': nan, 'eval_runtime': 1.2, 'epoch': 1.0}
step 20: loss: 0.0000, grad_norm=nan
{'train_runtime': 12.3, 'train_samples_per_second': 4.0, 'train_loss': 0.0, 'epoch': 1.0}
"""
    report = parse_text(paste)
    assert report.losses == [2.3456, 1.25, 0.0, 0.0]
    assert report.grad_norms[0] == 12.5 and math.isinf(report.grad_norms[1]) and math.isnan(report.grad_norms[2])
    assert len(report.eval_losses) == 1 and math.isnan(report.eval_losses[0])
    assert report.sections == ["log"]


def test_other_trainers_log_forms():
    """nanoGPT, Megatron / DeepSpeed, llama-recipes and mmengine-style lines carry losses too."""
    paste = """iter 6000: loss nan, time 31.20ms, mfu 40.1%
 iteration      100/   10000 | lm loss: 7.012345E+00 | loss scale: 1.0 | grad norm: 1.234 |
[2024-05-01 10:00:00] iteration 200/10000 | lm_loss 2.3510 | grad_norm nan | loss scale: 1.0
Epoch 1: train_perplexity=9.21, train_epoch_loss=2.22, eval_ppl=nan, eval_epoch_loss=nan
12/05 14:21:10 - mmengine - INFO - Iter(train) [ 500/1500]  lr: 1.8e-04  loss: 0.6412
"""
    report = parse_text(paste)
    assert math.isnan(report.losses[0]) and report.losses[1:] == [7.012345, 2.351, 2.22, 0.6412]
    assert report.grad_norms[0] == 1.234 and math.isnan(report.grad_norms[1])
    assert len(report.eval_losses) == 1 and math.isnan(report.eval_losses[0])
    # a number after "loss" with a space counts only when it looks like a measurement
    assert parse_text("the new loss 2 times higher than before").losses == []
    assert parse_text("I set the loss scale 128 by hand").losses == []


def test_notebook_table():
    report = parse_sample("notebook_table.txt")
    assert report.losses == [1.8423, 0.0, 0.0]
    assert len(report.eval_losses) == 2 and all(math.isnan(v) for v in report.eval_losses)


def test_markdown_table():
    report = parse_sample("markdown_table.txt")
    assert report.losses[0] == 2.301 and math.isnan(report.losses[1])
    assert report.eval_losses[0] == 2.25


def test_warnings_are_kept_deduplicated():
    line = "/x/trl/trainer/utils.py:174: UserWarning: Could not find response key `[835, 4007]` in the following instance: a"
    paste = "\n".join(
        [
            line,
            "  warnings.warn(",
            line,
            "[WARNING|logging.py:329] 2025-01-01 >> `use_cache=True` is incompatible with gradient checkpointing.",
            "FutureWarning: `tokenizer` is deprecated and will be removed in version 5.0.0",
            "WARNING:root:Some weights of LlamaForSequenceClassification were not initialized",
            "[transformers.utils.chat_template_utils:WARNING] return_assistant_tokens_mask==True but no generation",
            "DeprecationWarning: This class is deprecated and will be removed in version 0.20.0.",
            "x" * 2000 + " UserWarning: long",
        ]
    )
    report = parse_text(paste)
    assert report.warnings[0] == line
    assert len(report.warnings) == 7
    assert all(len(w) <= 500 for w in report.warnings)
    assert "2 distinct" not in " ".join(report.notes)
    assert any("8 warning lines" in note for note in report.notes)


# --------------------------------------------------------------- versions


def test_pip_list():
    report = parse_sample("pip_list.txt")
    assert report.versions["transformers"] == "4.48.3"
    assert report.versions["torch"] == "2.5.1+cu124"
    assert report.versions["flash-attn"] == "2.7.4.post1"
    assert report.versions["unsloth-zoo"] == "2025.2.7"
    assert report.sections == ["pip"]


def test_pip_freeze_skips_editable_and_file_urls():
    report = parse_sample("pip_freeze.txt")
    assert report.versions == {
        "accelerate": "0.34.2",
        "datasets": "2.21.0",
        "peft": "0.12.0",
        "torch": "2.4.0",
        "transformers": "4.46.0",
        "trl": "0.11.4",
        "deepspeed": "0.15.1",
    }


def test_transformers_env():
    report = parse_sample("transformers_env.txt")
    assert report.versions == {
        "transformers": "4.48.3",
        "python": "3.10.12",
        "huggingface-hub": "0.28.1",
        "safetensors": "0.5.2",
        "accelerate": "1.3.0",
        "torch": "2.5.1+cu124",
    }
    assert "env" in report.sections


def test_trl_env():
    report = parse_sample("trl_env.txt")
    assert report.versions["trl"] == "0.15.2"
    assert report.versions["torch"] == "2.6.0"
    assert report.versions["huggingface-hub"] == "0.29.1"
    assert report.versions["peft"] == "0.14.0"
    assert "liger-kernel" not in report.versions  # "not installed"


def test_unsloth_banner():
    report = parse_sample("unsloth_banner.txt")
    assert report.versions == {
        "unsloth": "2025.2.15",
        "transformers": "4.48.3",
        "torch": "2.5.1+cu124",
        "cuda": "12.4",  # the toolkit, not the compute capability 7.5
        "triton": "3.1.0",
        "xformers": "0.0.28.post3",
    }
    assert report.model_type == "llama"  # "Fast Llama patching"
    assert report.flags["gradient_accumulation_steps"] == 4
    assert report.flags["per_device_train_batch_size"] == 2


def test_unsloth_banner_with_bitsandbytes():
    report = parse_text("==((====))==  Unsloth: Fast Mistral patching release 2024.4\n"
                        "\\        /    Bitsandbytes 0.45.2. FA [Xformers = 0.0.28.post3. FA2 = False]")
    assert report.versions["unsloth"] == "2024.4"
    assert report.versions["bitsandbytes"] == "0.45.2"
    assert report.model_type == "mistral"


@pytest.mark.parametrize(
    ("sentence", "versions"),
    [
        ("using transformers==4.46.0 and peft 0.13.2", {"transformers": "4.46.0", "peft": "0.13.2"}),
        ("I'm on transformers 4.48 with PyTorch 2.5.1, CUDA 12.1", {"transformers": "4.48", "torch": "2.5.1", "cuda": "12.1"}),
        ("trl version 0.12.1, python 3.11.4", {"trl": "0.12.1", "python": "3.11.4"}),
        ("flash_attn-2.7.4.post1 installed.", {"flash-attn": "2.7.4.post1"}),
        ("File /usr/lib/python3.10/site-packages/transformers/trainer.py", {}),
        ("moved tensors to cuda:0 with torch.float16", {}),
        # an upgrade names the version the run now uses; a downgrade names the one that works: not read
        ("Colab had just upgraded transformers to 4.0.0 and now it fails", {"transformers": "4.0.0"}),
        ("I updated trl from 0.8.6 to v0.9.4 and the loss is nan", {"trl": "0.9.4"}),
        ("after upgrading pytorch to 2.5.1 it broke", {"torch": "2.5.1"}),
        ("downgrading transformers to 4.45.2 fixes it", {}),
    ],
)
def test_versions_in_prose(sentence, versions):
    assert parse_text(sentence).versions == versions


def test_structured_versions_win_over_prose():
    report = parse_text("I think I have transformers 4.40\n\n- `transformers` version: 4.48.3\n- Python version: 3.10.12")
    assert report.versions["transformers"] == "4.48.3"


# ----------------------------------------------------------------- configs


def test_llamafactory_yaml():
    report = parse_sample("llamafactory.yaml")
    assert report.sections == ["config"]
    assert report.model_names == ["meta-llama/Meta-Llama-3-8B-Instruct"] and report.model_type == "llama"
    assert report.uses_peft
    assert report.flags["stage"] == "sft" and report.flags["finetuning_type"] == "lora"
    assert report.flags["cutoff_len"] == 2048 and report.flags["max_length"] == 2048
    assert report.flags["shift_attn"] is True and report.flags["flash_attn"] == "fa2"
    assert report.flags["train_on_inputs"] is False
    assert report.flags["zero_stage"] == 2  # from the deepspeed config path
    assert report.flags["learning_rate"] == 1e-4


def test_axolotl_yaml():
    report = parse_sample("axolotl.yml")
    assert report.model_classes == ["LlamaForCausalLM"]
    assert report.uses_peft
    assert report.flags["lora_modules_to_save"] == "embed_tokens,lm_head"
    assert report.flags["modules_to_save"] == "embed_tokens,lm_head"
    assert report.flags["max_length"] == 4096 and report.flags["sample_packing"] is True


def test_deepspeed_json():
    report = parse_sample("ds_zero2.json")
    assert report.flags["zero_stage"] == 2 and report.flags["overlap_comm"] is True and report.flags["deepspeed"] is True


def test_unfenced_yaml_and_json_inside_a_paste():
    paste = """my config:

model_name_or_path: Qwen/Qwen2.5-1.5B
stage: sft
finetuning_type: full
cutoff_len: 512

and the deepspeed file:
{
  "zero_optimization": {"stage": 3}
}
"""
    report = parse_text(paste)
    assert report.flags["stage"] == "sft" and report.flags["cutoff_len"] == 512
    assert report.flags["zero_stage"] == 3
    assert report.model_type == "qwen2"
    assert "config" in report.sections


def test_log_dict_is_not_a_config():
    report = parse_text('{"loss": 0.0, "grad_norm": 0.0, "learning_rate": 1e-05, "epoch": 0.1}')
    assert "config" not in report.sections and report.losses == [0.0]


# ------------------------------------------------------------------- code


def test_unfenced_code_between_prose():
    report = parse_sample("code_grpo_fragment.txt")
    assert report.trainer == "GRPOTrainer"
    assert report.model_type == "gemma"
    assert report.flags["max_length"] == 1024
    assert report.sections == ["code", "prose"]


def test_code_file_hint_and_merging_several_files():
    report = parse_files(
        [
            ("traceback.txt", (DATA / "jupyter_no_loss.txt").read_bytes()),
            ("train.py", (DATA / "code_classification.py").read_bytes()),
            ("config.yaml", b"gradient_checkpointing: true\nfp16: true\nnum_labels: 3\n"),
            ("env.txt", (DATA / "pip_list.txt").read_bytes()),
        ]
    )
    assert report.returned_keys == ["logits"]
    assert report.trainer == "Trainer" and report.model_type == "bert"
    assert report.flags["gradient_checkpointing"] is True and report.flags["num_labels"] == 3
    assert report.versions["trl"] == "0.15.2"
    assert report.sections == ["traceback", "code", "pip", "config"]


def test_py_file_hint_reads_whole_file_as_code():
    report = parse_files([("train.py", b"# loss: 0.5 is what I expect\nargs = TrainingArguments(bf16=True)\n")])
    assert report.flags == {"bf16": True}
    assert report.losses == []


# ------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("data", [b"", b"   \n\t\n  "])
def test_empty_input_is_refused(data):
    with pytest.raises(UnreadableInput, match="empty"):
        parse_bytes(data, "paste.txt")


@pytest.mark.parametrize(
    "data",
    [b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 10, b"PK\x03\x04\x14\x00" + b"\x00\x01\x02" * 100],
)
def test_binary_input_is_refused(data):
    with pytest.raises(UnreadableInput, match="looks like a binary file"):
        parse_bytes(data, "model.bin")


def test_too_large_input_is_refused():
    with pytest.raises(UnreadableInput, match="limit"):
        parse_bytes(b"a" * 2000, "big.log", max_bytes=1000)


def test_latin1_input_is_read_with_a_note():
    report = parse_bytes("ValueError: caf\xe9 not found".encode("latin-1"), "x.txt")
    assert report.exceptions[0].message == "café not found"
    assert any("Latin-1" in note for note in report.notes)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_bom_encodings(encoding):
    report = parse_bytes("KeyError: 'text'\n".encode(encoding))
    assert report.exceptions == [ExceptionInfo(type="KeyError", message="'text'")]
    assert report.notes == []


def test_parse_files_skips_unreadable_file_with_note():
    report = parse_files([("a.bin", b"\x00\x01\x02"), ("log.txt", b"KeyError: 'text'")])
    assert report.exceptions[0].type == "KeyError"
    assert any("a.bin looks like a binary file" in note for note in report.notes)
    with pytest.raises(UnreadableInput):
        parse_files([("a.bin", b"\x00\x01\x02")])


def test_input_over_ten_million_chars_keeps_head_and_tail():
    text = "ValueError: first\n" + ("x" * 119 + "\n") * 100_000 + "KeyError: 'last'\n"
    report = parse_text(text)
    assert [e.type for e in report.exceptions] == ["ValueError", "KeyError"]
    assert any("only the first" in note for note in report.notes)


def test_input_with_too_many_lines_keeps_head_and_tail():
    report = parse_text("ValueError: first\n" + "\n" * 1_100_000 + "KeyError: 'last'\n")
    assert [e.type for e in report.exceptions] == ["ValueError", "KeyError"]
    assert any("lines; only the first" in note for note in report.notes)


# ------------------------------------------------------------- robustness


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_parse_text_never_raises(text):
    assert isinstance(parse_text(text), Report)


_PIECES = st.sampled_from(
    [
        "Traceback (most recent call last):\n",
        '  File "/x/site-packages/trl/a.py", line 3, in f\n',
        "ValueError: ",
        "```python\n",
        "```\n",
        "{'loss': nan, 'grad_norm': ",
        "| Step | Training Loss |\n",
        "model = AutoModelForCausalLM.from_pretrained(",
        "args = TrainingArguments(fp16=True,\n",
        "- `transformers` version: ",
        "&gt; ",
        "│ ",
        "╭──",
        "\x1b[31m",
        "key: value\n",
        "{\n",
        "hf_abcdefghijklmnopqrstuvwxyz",
        "\n",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PIECES, st.text(max_size=30)), max_size=40))
def test_parse_text_never_raises_on_paste_like_text(pieces):
    assert isinstance(parse_text("".join(pieces)), Report)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_bytes_raises_only_unreadable_input(data):
    try:
        report = parse_bytes(data)
    except UnreadableInput as exc:
        assert str(exc)
    else:
        assert isinstance(report, Report)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,
        "{" * 1_000_000,
        '"' * 1_000_000,
        'File "' * 170_000,
        "ValueError: " * 85_000,
        "`a=" * 340_000,
        "\n" * 1_000_000,
        "- `x` version: " * 70_000,
        "    x = (\n" * 100_000,
    ],
    ids=["a", "brace", "quote", "file", "exc", "backtick", "newlines", "env", "indented"],
)
def test_pathological_megabyte_finishes(text):
    start = time.perf_counter()
    parse_text(text)
    assert time.perf_counter() - start < 5


# ------------------------------------------------------- facts written in prose


def test_model_trainer_collator_and_flags_named_in_prose():
    report = parse_text(
        "I'm using BertForSequenceClassification with num_labels=3, fine-tuned with GRPOTrainer "
        "and the default config, and I pass DataCollatorWithPadding as the collator. SFTConfig(packing=True)."
    )
    assert "BertForSequenceClassification" in report.model_classes
    assert report.trainer == "GRPOTrainer"
    assert report.collator == "DataCollatorWithPadding"
    assert report.flags["num_labels"] == 3
    assert report.flags["packing"] is True


def test_prose_does_not_override_code():
    report = parse_text(
        "```python\ntrainer = SFTTrainer(model=model, args=SFTConfig(packing=False))\n```\n"
        "Earlier I tried DPOTrainer with packing=True."
    )
    assert report.trainer == "SFTTrainer"
    assert report.flags["packing"] is False


def test_bare_flag_line_is_a_flag():
    report = parse_text("my settings:\n\nbf16=True\ngradient_accumulation_steps=8\n")
    assert report.flags["bf16"] is True
    assert report.flags["gradient_accumulation_steps"] == 8


def test_loss_message_quoted_in_prose_without_prefix():
    report = parse_text(
        'Training stops with "The model did not return a loss from the inputs, only the following keys: logits. '
        'For reference, the inputs it received are input_ids,attention_mask." What am I missing?'
    )
    assert report.exceptions and report.exceptions[0].type == "ValueError"
    assert report.returned_keys == ["logits"]
    assert report.received_inputs == ["input_ids", "attention_mask"]


def test_loss_message_shortened_by_the_user_still_gives_the_received_inputs():
    report = parse_text(
        "ValueError: The model did not return a loss ... inputs it received are "
        "input_ids,attention_mask,pixel_values,labels` (labels are there, yet no loss)"
    )
    assert report.returned_keys is None
    assert report.received_inputs == ["input_ids", "attention_mask", "pixel_values", "labels"]


def test_vscode_exception_has_occurred():
    report = parse_text("Exception has occurred: ImportError\ncannot import name 'SFTConfig' from 'trl'\n")
    assert report.exceptions == [ExceptionInfo(type="ImportError", message="cannot import name 'SFTConfig' from 'trl'")]


def test_dynamo_hint_exception_is_unwrapped():
    report = parse_text(
        "Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n    trainer.train()\n"
        "torch._dynamo.exc.Unsupported: Observed exception. Hint: ValueError('Unsloth: All labels in your dataset are -100.')\n"
    )
    assert ExceptionInfo(type="ValueError", message="Unsloth: All labels in your dataset are -100.") in report.exceptions


def test_value_counts_are_not_versions():
    report = parse_text("df['sentiment'].value_counts()\n\npositive    2011\nnegative    1573\nneutral      902\n")
    assert report.versions == {}


def test_pip_list_with_header_still_reads_plain_versions():
    report = parse_text("Package   Version\n--------- -------\ntorch     2.5.1\nsix       1\n")
    assert report.versions["torch"] == "2.5.1"


def test_deepspeed_json_fragment_without_braces():
    report = parse_text(
        'relevant part of ds_config.json:\n\n"zero_optimization": {\n  "stage": 2,\n  "overlap_comm": true\n},\n'
    )
    assert report.flags["zero_stage"] == 2
    assert report.flags["overlap_comm"] is True
    assert "config" in report.sections


# ------------------------------------------------------------- command-line flags


def test_launch_command_flags_are_read():
    report = parse_text(
        "```bash\n"
        "CUDA_VISIBLE_DEVICES=0,1 swift sft --model_type qwen2-7b --gradient_accumulation_steps 16 --fp16 \\\n"
        "  --train_type lora --deepspeed default-zero2 --max_length 2048 --gradient-checkpointing true \\\n"
        "  --learning_rate 1e-4 --output_dir out\n"
        "```\n"
    )
    assert report.flags["gradient_accumulation_steps"] == 16
    assert report.flags["fp16"] is True
    assert report.flags["gradient_checkpointing"] is True
    assert report.flags["max_length"] == 2048
    assert report.flags["learning_rate"] == 0.0001
    assert report.flags["zero_stage"] == 2
    assert report.uses_peft is True
    assert "qwen2-7b" in report.model_names


def test_llamafactory_cli_style_flags():
    report = parse_text(
        "python src/train_bash.py --stage sft --model_name_or_path meta-llama/Llama-2-7b-hf "
        "--finetuning_type lora --bf16 True --remove_unused_columns False --packing"
    )
    assert report.flags["bf16"] is True
    assert report.flags["remove_unused_columns"] is False
    assert report.flags["packing"] is True
    assert report.uses_peft is True
    assert report.model_type == "llama"


def test_pip_install_options_are_not_training_flags():
    report = parse_text("pip install --upgrade transformers --no-cache-dir\nthe loss is nan")
    assert "upgrade" not in report.flags
    assert "no_cache_dir" not in report.flags


def test_inf_grad_norm_is_recorded():
    import math

    report = parse_text("{'loss': 2.31, 'grad_norm': inf, 'learning_rate': 1e-05, 'epoch': 0.01}")
    assert report.grad_norms and math.isinf(report.grad_norms[0])


# ------------------------------------------------------- columns, prose versions


def test_dataset_printout_gives_columns():
    report = parse_text("Dataset({\n    features: ['text', 'label'],\n    num_rows: 100\n})\n")
    assert report.dataset_columns == ["text", "label"]
    assert report.dataset_format == "classification"


def test_pandas_preview_header_gives_columns():
    report = parse_text(
        "                     text            labels\n"
        "342  The HQ2 Scam: How Amazon Used...  [0, 0, 0, 1, 0]\n"
        "343  Every Parent Should Know...       [0, 0, 0, 1, 0]\n"
    )
    assert report.dataset_columns == ["text", "labels"]


def test_notebook_loss_table_is_not_a_dataframe():
    report = parse_text("Step  Training Loss\n1   0.000000\n2   0.000000\n")
    assert report.dataset_columns == []
    assert report.losses == [0.0, 0.0]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("transformers 版本是 4.46.0，peft 0.13.2。训练时 loss 很高", {"transformers": "4.46.0", "peft": "0.13.2"}),
        ("transformers的版本为4.45.2", {"transformers": "4.45.2"}),
        ("transformers のバージョンは 4.46.0 です", {"transformers": "4.46.0"}),
        ("transformers：4.44.0", {"transformers": "4.44.0"}),
    ],
)
def test_versions_in_chinese_and_japanese_prose(text, expected):
    assert parse_text(text).versions == expected


def test_a_run_of_key_like_lines_does_not_hide_a_later_config():
    noise = ("features: ['text', 'label', 'input_ids']\n" * 50) + "\n"
    config = "model_name_or_path: meta-llama/Llama-2-7b-hf\nfinetuning_type: lora\nfp16: true\ncutoff_len: 1024\n"
    report = parse_text(noise + config)
    assert report.flags["fp16"] is True
    assert report.flags["max_length"] == 1024
    assert report.uses_peft is True
    assert report.dataset_columns == ["text", "label", "input_ids"]


def test_unclosed_brace_lines_do_not_hide_a_later_json_config():
    noise = "{\n" * 30  # thirty blocks that never close
    config = '{\n  "zero_optimization": {"stage": 2, "overlap_comm": true},\n  "fp16": {"enabled": true}\n}\n'
    report = parse_text(noise + config)
    assert report.flags["zero_stage"] == 2
    assert report.flags["overlap_comm"] is True
    assert report.flags["fp16"] is True


def test_model_class_named_by_a_forward_error_is_read():
    """`XForCausalLM.forward() got an unexpected keyword argument` names the model even when no code is pasted."""
    report = parse_text("TypeError: GPT2LMHeadModel.forward() got an unexpected keyword argument 'labels'")
    assert "GPT2LMHeadModel" in report.model_classes
    assert parse_text("TypeError: forward() got an unexpected keyword argument 'labels'").model_classes == []


@pytest.mark.parametrize(
    ("text", "losses"),
    [
        ("the loss drops to zero after a few steps", [0.0]),
        ("after a few steps the trainer started to output nan for rewards", ["nan"]),
        ("I get nan loss from the first step", ["nan"]),
        ("训练时 loss 一直是0", [0.0]),
        ("the loss is not zero, it is 1.5", []),
        ("loss is 0.5 at the start", []),
        ("training loss drops to almost zero, validation loss climbs", []),  # a small loss, not a zero one
        ("the loss goes to nearly 0 after 100 steps", []),
        ("the loss becomes nan\n{'loss': 1.2, 'epoch': 0.1}", [1.2]),  # logged values win over prose
    ],
)
def test_losses_named_in_prose(text, losses):
    got = parse_text(text).losses
    assert ["nan" if math.isnan(v) else v for v in got] == losses


def test_narrative_leaves_out_pasted_setup():
    """Code and config blocks, `transformers env` rows and package pins are set-up; the rest is the story."""
    text = (
        "Training dies at step 0.\n\n- `transformers` version: 4.46.3\n- Platform: Linux\n- Python version: 3.10.14\n\n"
        "trl==0.12.1\npeft     0.13.2\n\n```python\nargs = TrainingArguments(fp16=True)\n```\n"
        "- Error: nothing in the logs\nRuntimeError: boom\n"
    )
    report = parse_text(text)
    assert report.narrative is not None
    for kept in ("Training dies at step 0.", "- Error: nothing in the logs", "RuntimeError: boom"):
        assert kept in report.narrative
    for dropped in ("4.46.3", "Platform", "trl==0.12.1", "peft     0.13.2", "TrainingArguments"):
        assert dropped not in report.narrative
    assert report.versions["transformers"] == "4.46.3" and report.flags["fp16"] is True
    assert parse_text("just prose, the loss is nan").narrative is None  # no set-up: the text is the story


def test_a_message_quoted_in_prose_keeps_its_own_closing_quote():
    report = parse_text('error: "TypeError: forward() got an unexpected keyword argument \'masked_lm_labels\'"')
    assert report.exceptions[0].message == "forward() got an unexpected keyword argument 'masked_lm_labels'"
    assert parse_text("I get `ValueError: too many dimensions 'str'`").exceptions[0].message == "too many dimensions 'str'"
    assert parse_text("it says 'ValueError: Unable to create tensor'").exceptions[0].message == "Unable to create tensor"


@pytest.mark.parametrize(
    ("text", "exc_type"),
    [
        ("I get Unable to create tensor, you should probably activate truncation and/or padding", "ValueError"),
        ("Expected input batch_size (8) to match target batch_size (0) only with 2 GPUs", "ValueError"),
        ("it says element 0 of tensors does not require grad and does not have a grad_fn", "RuntimeError"),
        ("Target 5 is out of bounds. after switching datasets", "IndexError"),
        ("Unable to create tensor ... Perhaps your features ('text' in this case) have excessive nesting", "ValueError"),
        ("the collator fails with too many dimensions 'str' on my label column", "ValueError"),
        ("I keep getting expected sequence of length 12 at dim 1 (got 9)", "ValueError"),
    ],
)
def test_well_known_messages_quoted_without_their_type(text, exc_type):
    report = parse_text(text)
    assert [e.type for e in report.exceptions] == [exc_type]
    assert parse_text("the tensor shapes look fine to me").exceptions == []


def test_a_warnings_advice_sets_no_flag():
    """`please pass in use_reentrant=True or use_reentrant=False` names both values: it is not a setting."""
    warned = parse_text("/x/torch/utils/checkpoint.py:429: UserWarning: torch.utils.checkpoint: please pass in "
                        "use_reentrant=True or use_reentrant=False explicitly.")
    assert "use_reentrant" not in warned.flags
    assert parse_text("pass use_reentrant=True or use_reentrant=False, which one?").flags == {}
    assert parse_text("I set use_reentrant=False and fp16=True").flags == {"use_reentrant": False, "fp16": True}


def test_an_exception_with_a_space_before_its_colon():
    report = parse_text("used this repo:\n\nValueError : Unable to create tensor , you should probably activate truncation")
    assert report.exceptions[0].type == "ValueError"
    assert report.exceptions[0].message.startswith("Unable to create tensor")


@pytest.mark.parametrize(("text", "losses"), [
    ("training loss 0.0 on every step", [0.0]),
    ("my loss: nan after 10 steps", [math.nan]),
    ("I do not get loss 0 anymore", []),
    ("loss 0.5 then loss 0.05", []),
])
def test_a_loss_value_written_after_the_word_loss(text, losses):
    found = parse_text(text).losses
    assert len(found) == len(losses) and all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(found, losses))


def test_prose_names_the_completion_collator_and_a_device_side_assert():
    assert parse_text("loss is 0 while using a completion-only collator").collator == "DataCollatorForCompletionOnlyLM"
    assert [e.type for e in parse_text("on CUDA: device-side assert triggered from the loss").exceptions] == ["RuntimeError"]


def test_a_log_line_printed_right_behind_a_progress_bar_is_read():
    """tqdm leaves no newline after its bar, so the next log line or warning is pasted on the same line;
    it is read as a line of its own (values, narrative), and the bar is left out."""
    report = parse_text(
        "model = AutoModelForCausalLM.from_pretrained('x')\n"
        "  0%|          | 0/200 [00:00<?, ?it/s][transformers] Trainer: `compute_loss_func` is defined but "
        "`labels=None`. Your custom loss function will still be called with labels=None.\n"
        " 50%|█████     | 100/200 [00:10<00:10,  9.80it/s]{'loss': 0.0, 'grad_norm': nan, 'epoch': 0.5}\n"
    )
    assert report.losses == [0.0] and math.isnan(report.grad_norms[0])
    assert "compute_loss_func` is defined but `labels=None`" in report.narrative
    assert "it/s][transformers]" not in report.text


def test_transformers_5_log_lines_with_quoted_values_are_read():
    """transformers 5 logs the metrics as strings ({'loss': '6.224', 'grad_norm': 'nan'}), and a bar that is
    not an it/s bar ('? examples/s]') can run into the next line too."""
    report = parse_text(
        "Tokenizing train dataset:   0%|          | 0/8 [00:00<?, ? examples/s][RANK 0] The tokenized prompt is not "
        "a prefix of the tokenized prompt+completion\n"
        "{'loss': '0', 'grad_norm': 'nan', 'learning_rate': '2e-05', 'epoch': '0.5'}\n"
        "{'eval_loss': '7.25', 'epoch': '1'}\n"
        "loss_type: 'sigmoid'\n"
    )
    assert report.losses == [0.0] and math.isnan(report.grad_norms[0]) and report.eval_losses == [7.25]
    assert "examples/s]\n[RANK 0] The tokenized prompt is not a prefix" in report.text
