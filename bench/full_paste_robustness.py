"""How much a full paste's set-up moves the matcher: each eval report alone (the baseline) and the
same report with what users paste around it (a `transformers env` block, common warnings, a typical
LoRA SFT script in bf16 or fp16) or with its Trainer log values quoted as transformers 5 prints them,
scored side by side in the same run.

    python bench/full_paste_robustness.py eval/*.jsonl

A script that has nothing to do with the failure should change nothing; every report it moves is a
signal that reads the set-up as if it were the failure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import diagnose  # noqa: E402
from bot.parse import parse_text  # noqa: E402
from knowledge.evaluate import OUT, EvalResult, read_jsonl, score  # noqa: E402
from knowledge.kb import default_kb  # noqa: E402

ENV = '''### System Info

- `transformers` version: 4.46.3
- Platform: Linux-5.15.0-1049-aws-x86_64-with-glibc2.35
- Python version: 3.10.14
- Huggingface_hub version: 0.26.2
- Safetensors version: 0.4.5
- Accelerate version: 1.1.1
- PyTorch version (GPU?): 2.5.1+cu124 (True)
- Using distributed or parallel set-up in script?: no
- Using GPU in script?: yes
- GPU type: NVIDIA A100-SXM4-80GB

```
peft==0.13.2
trl==0.12.1
datasets==3.1.0
bitsandbytes==0.44.1
```
'''
SCRIPT_BF16 = '''
My training script:

```python
import torch
from datasets import load_dataset
from transformers import AutoTokenizer, AutoModelForCausalLM, TrainingArguments
from peft import LoraConfig
from trl import SFTTrainer

model_id = "meta-llama/Llama-3.1-8B-Instruct"
tokenizer = AutoTokenizer.from_pretrained(model_id)
model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.bfloat16, device_map="auto")
dataset = load_dataset("json", data_files="train.jsonl", split="train")

peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
args = TrainingArguments(
    output_dir="out",
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
    learning_rate=2e-4,
    num_train_epochs=3,
    logging_steps=10,
    save_steps=500,
    bf16=True,
    gradient_checkpointing=True,
    report_to="wandb",
)
trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, peft_config=peft_config, tokenizer=tokenizer)
trainer.train()
```
'''
SCRIPT_FP16 = SCRIPT_BF16.replace("bf16=True", "fp16=True").replace("torch_dtype=torch.bfloat16, ", "")
WARN = '''
/usr/local/lib/python3.10/dist-packages/transformers/training_args.py:1559: FutureWarning: `evaluation_strategy` is deprecated and will be removed in version 4.46 of 🤗 Transformers. Use `eval_strategy` instead
  warnings.warn(
`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.
wandb: Currently logged in as: someone. Use `wandb login --relogin` to force relogin
'''

_LOG_VALUE = re.compile(r"(['\"](?:loss|eval_loss|train_loss|grad_norm|learning_rate|epoch)['\"]:\s?)(-?(?:\d[\d.e+-]*|nan|inf))")


def transformers5_logs(text: str) -> str:
    """The same report with its Trainer log values quoted, as transformers 5 prints them ({'loss': '0.0'})."""
    return _LOG_VALUE.sub(lambda m: f"{m.group(1)}'{m.group(2)}'", text)


VARIANTS = {
    "report alone (baseline)": lambda t: t,
    "+ env block": lambda t: ENV + "\n" + t,
    "+ env + warnings": lambda t: ENV + WARN + "\n" + t,
    "+ env + bf16 LoRA script": lambda t: ENV + SCRIPT_BF16 + "\n" + t,
    "+ bf16 LoRA script after": lambda t: t + "\n" + SCRIPT_BF16,
    "+ env + fp16 LoRA script": lambda t: ENV + SCRIPT_FP16 + "\n" + t,
    "log values quoted (tf 5)": transformers5_logs,
}


def main(*files: str) -> None:
    rows = [(row, Path(f).stem) for f in files for row in read_jsonl(Path(f))]
    kb = default_kb()
    print(f"{len(rows)} reports, {sum(r['failure_class'] == OUT for r, _ in rows)} near-misses")
    baseline: list[str] | None = None
    for name, wrap in VARIANTS.items():
        result, answers = EvalResult(), []
        for number, (row, held_out) in enumerate(rows, 1):
            d = diagnose(parse_text(wrap(row["user_text"])), kb, held_out=held_out)
            score(d, row["failure_class"], result, number)
            answers.append(d.failure_class or OUT)
        baseline = baseline or answers
        moved = sum(a != b for a, b in zip(answers, baseline))
        n = result.total or 1
        print(f"{name:28s} top-1 {result.top1 / n:6.1%}  top-3 {result.top3 / n:6.1%}  near-misses given a class "
              f"{result.out_of_scope - result.abstained_correct:3d}  answers moved {moved}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: full_paste_robustness.py EVAL.jsonl...")
    main(*sys.argv[1:])
