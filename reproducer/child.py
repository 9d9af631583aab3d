"""Run one scenario as a real tiny training run and record what happened.

`run_scenario(scenario)` builds the tokenizer, model, dataset, collator and trainer the
scenario describes, trains for ``scenario["steps"]`` optimizer steps and returns a dict
with the fields of `bot.models.RunRecord`. It never raises: an exception from building or
training goes into the record, as the trainer raised it.

``python -m reproducer.child`` reads ``{"runs": [{"fix": null | "<fix id>", "scenario":
{...}}]}`` on stdin and writes ``{"runs": [records], "versions": {...}, "device": "..."}``
on stdout; logs go to stderr. Like `reproducer.tiny`, this module imports only the
standard library and the training stack, so it runs on the current and older releases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings

# standalone-script: drop begin
from reproducer.tiny import (
    IGNORE_INDEX,
    build_collator,
    build_dataset,
    build_model,
    installed_versions,
    marker_ids,
    tokenizer_for,
)

# standalone-script: drop end

MAX_WARNINGS = 30
MAX_MESSAGE_CHARS = 4000
LOGGERS = ("transformers", "trl", "peft", "accelerate", "datasets")


def resolve_device(requested: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RunLog:
    """What the trainer fed the model and what came back, step by step.

    ``losses`` holds one raw value per optimizer step: the sum of what training_step
    returned for its micro-batches, i.e. the step loss Trainer logs before its NaN/inf
    filter. ``supervised_tokens`` counts labels != -100 in the batches the model received
    (for classification, every label; for a contrastive model asked for its loss, every
    image-text pair, whose target is its own match in the batch).
    """

    def __init__(self, marker: list[int] | None, classification: bool):
        self.marker = marker
        self.classification = classification
        self.losses: list[float] = []
        self.micro_losses: list[float] = []
        self.supervised_tokens = 0
        self.prompt_tokens_supervised: int | None = None

    def batch(self, inputs) -> None:
        """Count the supervised labels of one batch, and those on prompt positions."""
        import torch

        labels = inputs.get("labels") if hasattr(inputs, "get") else None
        if not isinstance(labels, torch.Tensor):
            pairs = inputs.get("input_ids") if hasattr(inputs, "get") and inputs.get("return_loss") else None
            if isinstance(pairs, torch.Tensor):
                self.supervised_tokens += int(pairs.shape[0])
            return
        if self.classification:
            self.supervised_tokens += int(labels.numel())
            return
        supervised = labels != IGNORE_INDEX
        self.supervised_tokens += int(supervised.sum())
        input_ids = inputs.get("input_ids")
        if self.marker and isinstance(input_ids, torch.Tensor) and input_ids.shape == labels.shape:
            prompt = self._prompt_positions(input_ids, inputs.get("position_ids"))
            if prompt is not None:
                self.prompt_tokens_supervised = (self.prompt_tokens_supervised or 0) + int((supervised & prompt).sum())

    def _prompt_positions(self, input_ids, position_ids):
        """True on every position up to the end of the response marker, per row or packed segment."""
        import torch

        prompt = torch.zeros_like(input_ids, dtype=torch.bool)
        found = False
        n = len(self.marker)
        for row in range(input_ids.shape[0]):
            ids = input_ids[row].tolist()
            starts = [0]
            if isinstance(position_ids, torch.Tensor) and position_ids.shape == input_ids.shape:
                starts = [i for i, p in enumerate(position_ids[row].tolist()) if p == 0] or [0]
            bounds = starts[1:] + [len(ids)]
            for start, stop in zip(starts, bounds):
                for i in range(start, stop - n + 1):
                    if ids[i : i + n] == self.marker:
                        prompt[row, start : i + n] = True
                        found = True
                        break
        return prompt if found else None

    def step_end(self) -> None:
        if self.micro_losses:
            self.losses.append(sum(self.micro_losses))
            self.micro_losses = []


def _trainer_classes():
    import transformers

    classes = {"Trainer": transformers.Trainer, "Seq2SeqTrainer": transformers.Seq2SeqTrainer}
    try:
        from trl import SFTTrainer

        classes["SFTTrainer"] = SFTTrainer
    except ImportError:
        pass
    return classes


def make_trainer_class(base, log: RunLog, legacy_compute_loss: bool):
    """A subclass of the chosen trainer that logs each batch and step loss.

    With ``legacy_compute_loss`` it also overrides compute_loss with the signature that
    predates ``num_items_in_batch`` (transformers < 4.46), as user code often does.
    """

    def training_step(self, model, inputs, *args, **kwargs):
        """Trainer.training_step, counting supervised labels and keeping the step's raw loss."""
        log.batch(inputs)
        loss = base.training_step(self, model, inputs, *args, **kwargs)
        log.micro_losses.append(float(loss.detach().float().item()))
        return loss

    namespace = {"training_step": training_step}
    if legacy_compute_loss:

        def compute_loss(self, model, inputs, return_outputs=False):
            return base.compute_loss(self, model, inputs, return_outputs=return_outputs)

        namespace["compute_loss"] = compute_loss
    name = "CustomTrainer" if legacy_compute_loss else f"Recording{base.__name__}"
    for function in namespace.values():
        function.__qualname__ = f"{name}.{function.__name__}"  # as printed in a TypeError
    return type(name, (base,), namespace)


def _step_callback(log: RunLog):
    from transformers import TrainerCallback

    class StepLosses(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            log.step_end()

    return StepLosses()


def _field_names(config_cls) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def build_args(s: dict, device: str, output_dir: str):
    """TrainingArguments / Seq2SeqTrainingArguments / SFTConfig for the scenario."""
    import transformers

    if s["trainer"] == "SFTTrainer":
        from trl import SFTConfig

        cls = SFTConfig
    elif s["trainer"] == "Seq2SeqTrainer":
        cls = transformers.Seq2SeqTrainingArguments
    else:
        cls = transformers.TrainingArguments
    fields = _field_names(cls)
    kwargs = {
        "output_dir": output_dir,
        "max_steps": s["steps"],
        "per_device_train_batch_size": s["batch_size"],
        "learning_rate": s["learning_rate"],
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": s["seed"],
        "data_seed": s["seed"],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device == "cuda",
        "remove_unused_columns": s["remove_unused_columns"],
        "gradient_accumulation_steps": s["gradient_accumulation_steps"],
        "fp16": s["fp16"],
        "bf16": s["bf16"],
        "logging_nan_inf_filter": s["logging_nan_inf_filter"],
    }
    if s["gradient_checkpointing"]:  # passed only when on: transformers 5 warns that the name is deprecated
        kwargs["gradient_checkpointing"] = True
        if s["use_reentrant"] is not None:
            kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": s["use_reentrant"]}
    if device == "cpu":
        kwargs["use_cpu" if "use_cpu" in fields else "no_cuda"] = True
    if s["trainer"] == "SFTTrainer":
        if s["max_length"] is not None:
            kwargs["max_length" if "max_length" in fields else "max_seq_length"] = s["max_length"]
        kwargs["packing"] = s["packing"]
        # set only when the scenario asks, so an old TRL fails the way the user's did
        if s["completion_only_loss"] is not None:
            kwargs["completion_only_loss"] = s["completion_only_loss"]
        if s["assistant_only_loss"]:
            kwargs["assistant_only_loss"] = True
    return cls(**kwargs)


def build_trainer(s: dict, device: str, output_dir: str, log: RunLog, notes: list[str]):
    """The tokenizer, model, dataset, collator and trainer the scenario describes."""
    tok = tokenizer_for(s)
    model = build_model(s, tok)
    dataset = build_dataset(s, tok)
    collator, note = build_collator(s, tok, model)
    if note:
        notes.append(note)
    if s["head"] != "seq_cls" and s["dataset_format"] != "classification" and s["head"] != "seq2seq":
        log.marker = marker_ids(s, tok)
    args = build_args(s, device, output_dir)
    base = _trainer_classes()[s["trainer"]]
    cls = make_trainer_class(base, log, s["compute_loss_signature"] == "legacy_no_kwargs")
    kwargs = {"model": model, "args": args, "train_dataset": dataset, "callbacks": [_step_callback(log)]}
    if collator is not None:
        kwargs["data_collator"] = collator
    if s["pass_processing_class"] or s["trainer"] == "SFTTrainer":
        params = inspect.signature(base.__init__).parameters
        kwargs["processing_class" if "processing_class" in params else "tokenizer"] = tok
    trainer = cls(**kwargs)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
    return trainer


def _trainable(model) -> dict:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


class _LogCapture(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(f"[{record.name}:{record.levelname}] {record.getMessage()}")
        except Exception:  # a malformed log call must not break the run
            pass


@contextlib.contextmanager
def capture_warnings(sink: list[str]):
    """Collect python warnings and library logger warnings into ``sink``."""
    once = getattr(logging.Logger, "warning_once", None)
    if hasattr(once, "cache_clear"):
        once.cache_clear()  # transformers' warning_once would hide warnings seen by earlier runs
    handler = _LogCapture(sink)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
            for w in caught:
                sink.append(f"{w.category.__name__}: {w.message}")


def _dedupe(messages: list[str]) -> list[str]:
    """First of each kind of message (same first 80 characters), each cut to 500 characters."""
    seen, out = set(), []
    for message in messages:
        if message[:80] not in seen:
            seen.add(message[:80])
            out.append(message[:500])
    return out[:MAX_WARNINGS]


def _float_or_none(value):
    return None if value is None else float(value)


def _quiet_datasets() -> None:
    try:
        import datasets

        datasets.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def run_scenario(scenario: dict, fix: str | None = None) -> dict:
    """Train the scenario and return a `bot.models.RunRecord`-shaped dict. Never raises."""
    start = time.perf_counter()
    s = scenario
    record = {
        "ok": False, "fix": fix, "loss": None, "losses": [], "supervised_tokens": None,
        "prompt_tokens_supervised": None, "grad_norm": None, "params_changed": None, "exception": None,
        "warnings": [], "seconds": 0.0, "versions": {}, "device": None, "seed": s.get("seed"), "verdict": None,
    }
    notes: list[str] = []
    output_dir = None
    log = RunLog(None, s.get("head") == "seq_cls" or s.get("dataset_format") == "classification")
    trainer = before = None
    try:
        output_dir = tempfile.mkdtemp(prefix="lossdoctor-run-")
        record["versions"] = installed_versions()
        import torch
        from transformers import set_seed

        torch.set_num_threads(1)
        _quiet_datasets()
        device = resolve_device(s["device"])
        record["device"] = device
        set_seed(s["seed"])
        with capture_warnings(notes):
            try:
                trainer = build_trainer(s, device, output_dir, log, notes)
                before = _trainable(trainer.model)
                output = trainer.train()
                record["ok"] = True
                record["loss"] = _float_or_none(output.training_loss)
            except Exception as exc:  # the failure under study: record it as raised
                record["exception"] = {"type": type(exc).__name__, "message": str(exc)[:MAX_MESSAGE_CHARS]}
    except Exception as exc:  # a failure outside the run itself (import, device)
        record["exception"] = {"type": type(exc).__name__, "message": str(exc)[:MAX_MESSAGE_CHARS]}
    finally:
        if output_dir:
            shutil.rmtree(output_dir, ignore_errors=True)
    log.step_end()
    record["losses"] = log.losses
    record["supervised_tokens"] = log.supervised_tokens
    record["prompt_tokens_supervised"] = log.prompt_tokens_supervised
    if trainer is not None:
        try:
            norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
            record["grad_norm"] = _float_or_none(norms[-1]) if norms else None
            if before is not None:
                after = _trainable(trainer.model)
                record["params_changed"] = any(
                    name in after and not _same(tensor, after[name]) for name, tensor in before.items()
                )
        except Exception as exc:  # e.g. a CUDA error left behind by the failure: say so, do not raise
            notes.append(f"could not read the trained weights: {type(exc).__name__}: {exc}")
    record["warnings"] = _dedupe(notes)
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


def _same(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def main() -> int:
    """stdin: {"runs": [{"fix", "scenario"}]} -> stdout: {"runs", "versions", "device"}."""
    request = json.load(sys.stdin)
    records = []
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints; keep stdout for the JSON answer
        for run in request["runs"]:
            records.append(run_scenario(run["scenario"], fix=run.get("fix")))
    versions = installed_versions()
    device = next((r["device"] for r in records if r["device"]), None) or resolve_device("auto")
    # non-finite losses are written as NaN / Infinity, as Python's json writes and reads them
    json.dump({"runs": records, "versions": versions, "device": device}, real_stdout)
    real_stdout.write("\n")
    real_stdout.flush()
    return 0


# standalone-script: drop begin
if __name__ == "__main__":
    sys.exit(main())
# standalone-script: drop end
