import torch
from transformers import Trainer, Seq2SeqTrainer, GPT2LMHeadModel, GPT2Config

config = GPT2Config(n_layer=2)
model = GPT2LMHeadModel(config)
model = torch.compile(model)
model.config.use_cache = False

class WeightedLossTrainer(Seq2SeqTrainer):
    def compute_loss(self, model, inputs, return_outputs=False):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        return outputs.loss

def preprocess(examples):
    model_inputs = tokenizer(examples["src"], max_length=128, truncation=True)
    model_inputs["labels"] = tokenizer(text_target=examples["tgt"])["input_ids"]
    return model_inputs

train = raw.map(preprocess, batched=True)
trainer = WeightedLossTrainer(model=model, args=training_args, train_dataset=train)
model.resize_token_embeddings(len(tokenizer))
