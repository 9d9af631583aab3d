import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer, DataCollatorForCompletionOnlyLM

model_id = "meta-llama/Llama-3.1-8B"
tokenizer = AutoTokenizer.from_pretrained(model_id)
tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.float16, use_cache=False)

def formatting_prompts_func(example):
    output_texts = []
    for i in range(len(example["instruction"])):
        output_texts.append(f"### Question: {example['instruction'][i]}\n ### Answer: {example['output'][i]}")
    return output_texts

response_template = " ### Answer:"
collator = DataCollatorForCompletionOnlyLM(response_template, tokenizer=tokenizer)

config = SFTConfig(
    output_dir="out",
    max_seq_length=512,
    packing=False,
    fp16=True,
    logging_nan_inf_filter=False,
    per_device_train_batch_size=4,
)
trainer = SFTTrainer(
    model,
    args=config,
    train_dataset=dataset,
    formatting_func=formatting_prompts_func,
    data_collator=collator,
)
trainer.train()
