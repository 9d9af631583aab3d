from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, DataCollatorWithPadding

model = AutoModelForSequenceClassification.from_pretrained(
    "bert-base-uncased", num_labels=3, problem_type="single_label_classification"
)

def tokenize(batch):
    return tokenizer(batch["sentence"], truncation=True)

ds = ds.map(tokenize, batched=True, remove_columns=["idx"])
args = TrainingArguments("out", label_names=["label"], remove_unused_columns=True, deepspeed={"zero_optimization": {"stage": 2, "overlap_comm": True}})
trainer = Trainer(model=model, args=args, train_dataset=ds["train"], data_collator=DataCollatorWithPadding(tokenizer, padding="longest"))
