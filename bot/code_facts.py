"""Facts about a training setup, read from pasted Python code and from config files.

Code is read with `ast` only: nothing pasted is ever executed. When a block does not
parse (a fragment, notebook magics, ``...`` elisions) it is parsed piece by piece, and
what still does not parse is read with a few line regexes.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FlagValue = str | int | float | bool | None

MAX_AST_CHARS = 200_000
"""Code blocks larger than this are read with regexes only."""

NOTABLE_CALLS = frozenset(
    {
        "train_on_responses_only",
        "enable_input_require_grads",
        "disable_input_require_grads",
        "get_peft_model",
        "prepare_model_for_kbit_training",
        "prepare_model_for_int8_training",
        "gradient_checkpointing_enable",
        "gradient_checkpointing_disable",
        "apply_chat_template",
        "add_special_tokens",
        "add_tokens",
        "resize_token_embeddings",
        "compile",
        "setup_chat_format",
        "get_chat_template",
        "standardize_sharegpt",
        "standardize_data_formats",
        "with_transform",
        "set_transform",
        "merge_and_unload",
        "for_training",
        "set_format",
        "DataCollatorForCompletionOnlyLM",
    }
)

TRAINING_ARGS_CLASSES = re.compile(
    r"^(?:\w*TrainingArguments|(?:SFT|DPO|GRPO|ORPO|KTO|CPO|PPO|Reward|RLOO|GKD|Online\w*|Unsloth\w*|Prm|BCO|XPO|Nash\w*)Config)$"
)
MODEL_CLASS = re.compile(
    r"^(?:Auto\w*Model\w*|AutoModel|Fast(?:Language|Vision)?Model|\w*PeftModel\w*|\w+(?:Model|LMHeadModel|For[A-Z]\w*))$"
)
NOT_MODEL_CLASS = re.compile(r"(?:Tokenizer|Config|Processor|Extractor|Collator|Trainer|Arguments)")
TRAINER_CLASS = re.compile(r"^\w*Trainer$")
NOT_TRAINER = re.compile(r"(?:Callback|State|Control)")
_TOKENIZER_CALL = re.compile(r"^(?:tokenizer|tokenize|tok|processor|encode|batch_encode_plus|encode_plus)$|tokeni[sz]er$")
ROW_NAMES = frozenset(
    {"example", "examples", "ex", "batch", "sample", "samples", "row", "rows", "item", "items", "x", "feature",
     "features", "f", "record", "data_point", "datapoint", "element", "elem", "instance", "conversation", "e", "b"}
)

# flags read from model loaders and trainer calls (TrainingArguments-like calls give all their kwargs)
LOADER_FLAGS = frozenset(
    {"attn_implementation", "torch_dtype", "dtype", "load_in_4bit", "load_in_8bit", "max_seq_length", "use_cache",
     "num_labels", "problem_type", "device_map", "full_finetuning", "trust_remote_code"}
)
TRAINER_FLAGS = frozenset(
    {"max_seq_length", "max_length", "dataset_text_field", "packing", "formatting_func", "peft_config",
     "dataset_num_proc", "compute_loss_func", "callbacks"}
)
PEFT_FLAGS = frozenset({"r", "lora_alpha", "target_modules", "modules_to_save", "use_gradient_checkpointing", "task_type"})
MAX_LENGTH_ALIASES = (
    "max_seq_length", "cutoff_len", "sequence_len", "max_len", "max_source_length", "model_max_length",
    "max_input_length", "model_max_len", "max_seq_len",
)


@dataclass
class CodeFacts:
    """What pasted code or config says about the training setup (fields mirror `Report`)."""

    model_classes: list[str] = field(default_factory=list)
    model_names: list[str] = field(default_factory=list)
    config_classes: list[str] = field(default_factory=list)
    """Model config classes (LlamaConfig...): a hint for the model family."""
    trainer: str | None = None
    trainer_bases: list[str] = field(default_factory=list)
    collator: str | None = None
    collator_kwargs: dict[str, str] = field(default_factory=dict)
    dataset_columns: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    defined_functions: list[str] = field(default_factory=list)
    uses_peft: bool = False
    flags: dict[str, FlagValue] = field(default_factory=dict)
    parsed: bool = False
    """True when at least part of the code was read with `ast`."""

    def add(self, other: CodeFacts) -> None:
        """Merge ``other`` into self; first value wins for single fields."""
        for name in ("model_classes", "model_names", "config_classes", "trainer_bases", "dataset_columns", "calls",
                     "defined_functions"):
            _extend(getattr(self, name), getattr(other, name))
        self.trainer = self.trainer or other.trainer
        if not self.collator and other.collator:
            self.collator, self.collator_kwargs = other.collator, dict(other.collator_kwargs)
        self.uses_peft = self.uses_peft or other.uses_peft
        for key, value in other.flags.items():
            if key not in self.flags or (_is_auto(self.flags[key]) and not _is_auto(value)):
                self.flags[key] = value  # a DeepSpeed "auto" defers to the value set elsewhere (--fp16)
        self.parsed = self.parsed or other.parsed


def _is_auto(value: FlagValue) -> bool:
    return isinstance(value, str) and value.strip().strip("'\"").lower() == "auto"


def _extend(items: list[str], new: Iterable[str]) -> None:
    for item in new:
        if item and item not in items:
            items.append(item)


# ---------------------------------------------------------------------------- code


def code_facts(source: str) -> CodeFacts:
    """Read facts from Python source; never executes it and never raises on bad code."""
    facts = CodeFacts()
    source = _clean_source(source)
    if len(source) > MAX_AST_CHARS:
        facts.add(_regex_facts(source))
    else:
        tree = _parse(source)
        if tree is not None:
            _AstReader(facts).read(tree)
        else:
            _read_pieces(source, facts)
            facts.add(_regex_facts(source))  # keyword dumps such as `TrainingArguments(\nfp16=True,\n...)`
    _finish_flags(facts.flags)
    return facts


def _clean_source(source: str) -> str:
    lines = []
    for line in source.split("\n"):
        if line.lstrip().startswith(("!", "%")):
            lines.append("")  # notebook shell and magic lines
        elif line.startswith((">>> ", "... ")):
            lines.append(line[4:])
        else:
            lines.append(line)
    return textwrap.dedent("\n".join(lines))


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


MAX_PARSE_ATTEMPTS = 200
"""`ast.parse` calls one broken code block may cost; past it, the rest is read with regexes."""


def _read_pieces(source: str, facts: CodeFacts, max_pending: int = 12) -> None:
    """Parse top-level statements in growing windows; regex what never parses."""
    chunks: list[str] = []
    for line in source.split("\n"):
        if chunks and (not line[:1].strip() or line.lstrip().startswith((")", "]", "}"))):
            chunks[-1] += "\n" + line  # indented, blank or closing line: same statement
        else:
            chunks.append(line)
    pending: list[str] = []
    attempts = 0
    for index, chunk in enumerate(chunks):
        if attempts >= MAX_PARSE_ATTEMPTS:
            for rest in pending + chunks[index:]:
                facts.add(_regex_facts(rest))
            return
        pending.append(chunk)
        while pending:
            attempts += 2
            tree = _parse("\n".join(pending))
            if tree is not None:
                _AstReader(facts).read(tree)
                facts.parsed = True
                pending = []
            elif len(pending) > max_pending or (len(pending) > 1 and _parse(pending[-1]) is not None):
                facts.add(_regex_facts(pending.pop(0)))
                continue
            break
    for chunk in pending:
        facts.add(_regex_facts(chunk))


def _dotted(node: ast.AST) -> str:
    """'torch.compile' for an Attribute chain, 'f' for a Name, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        parts.append(_dotted(node.func) + "()")
    else:
        return ""
    return ".".join(reversed(parts))


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _source(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - unparse of odd trees
        return ""
    return text if len(text) <= 500 else text[:497] + "..."


def _value(node: ast.AST) -> FlagValue:
    """A literal as its Python value; anything else as source text."""
    try:
        value = ast.literal_eval(node)
    except Exception:  # noqa: BLE001 - literal_eval raises many kinds
        return _source(node)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _source(node)


def _string(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


_INTERESTING = (ast.Assign, ast.Call, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Subscript, ast.Lambda)


class _AstReader:
    def __init__(self, facts: CodeFacts) -> None:
        self.facts = facts
        self.assigned: dict[str, ast.AST] = {}
        self.row_names = set(ROW_NAMES)
        self.mapped_functions: set[str] = set()
        self.tokenizer_names: list[str] = []
        self.user_trainers: dict[str, list[str]] = {}

    def read(self, tree: ast.Module) -> None:
        self.facts.parsed = True
        by_type: dict[type, list[ast.AST]] = {t: [] for t in _INTERESTING}
        for node in ast.walk(tree):
            bucket = by_type.get(type(node))
            if bucket is not None:
                bucket.append(node)
        functions = by_type[ast.FunctionDef] + by_type[ast.AsyncFunctionDef]
        for node in by_type[ast.Assign]:  # first: names, user trainers and functions given to .map()
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assigned[node.targets[0].id] = node.value
        for node in by_type[ast.Call]:
            if node.args and isinstance(node.args[0], ast.Name) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("map", "filter"):
                    self.mapped_functions.add(node.args[0].id)
        for node in by_type[ast.ClassDef]:
            self._class(node)
        for node in functions:
            if node.name in self.mapped_functions:
                self.row_names.update(a.arg for a in node.args.args[:1])
        for node in functions:
            self._function(node)
        for node in by_type[ast.Call]:
            self._call(node)
        for node in by_type[ast.Assign]:
            self._assign(node)
        for node in by_type[ast.Subscript]:
            self._subscript(node)
        for node in by_type[ast.Lambda]:
            if isinstance(node.body, ast.Dict):
                self._columns_from_dict(node.body)
        if not self.facts.model_names:
            _extend(self.facts.model_names, self.tokenizer_names)
        if self.user_trainers:
            if self.facts.trainer not in self.user_trainers:
                self.facts.trainer = self.facts.trainer or next(iter(self.user_trainers))
            if self.facts.trainer in self.user_trainers:
                _extend(self.facts.trainer_bases, self.user_trainers[self.facts.trainer])

    def _resolve(self, node: ast.AST) -> ast.AST:
        seen = 0
        while isinstance(node, ast.Name) and node.id in self.assigned and seen < 5:
            node, seen = self.assigned[node.id], seen + 1
        return node

    def _class(self, node: ast.ClassDef) -> None:
        bases = [_last(_dotted(b)) for b in node.bases if _dotted(b)]
        if any(TRAINER_CLASS.match(b) and not NOT_TRAINER.search(b) for b in bases):
            self.user_trainers[node.name] = bases

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        _extend(self.facts.defined_functions, [f"{node.name}({_source(node.args)})"])
        if node.name in self.mapped_functions:
            tokenizes = False
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and _TOKENIZER_CALL.search(_last(_dotted(sub.func)) or ""):
                    tokenizes = True
                if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Dict):
                    self._columns_from_dict(sub.value)
                elif isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store):
                    _extend(self.facts.dataset_columns, [k for k in [_string(sub.slice)] if k])
            if tokenizes:  # a tokenize function given to .map(): the dataset is tokenised afterwards
                _extend(self.facts.dataset_columns, ["input_ids", "attention_mask"])

    def _columns_from_dict(self, node: ast.Dict) -> None:
        _extend(self.facts.dataset_columns, [k for k in (_string(key) for key in node.keys) if k])

    def _subscript(self, node: ast.Subscript) -> None:
        key = _string(node.slice)
        if key and isinstance(node.value, ast.Name) and node.value.id in self.row_names and key.isidentifier():
            _extend(self.facts.dataset_columns, [key])

    def _assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            name = _dotted(target)
            last = _last(name)
            if last in ("pad_token", "pad_token_id") and "tokenizer" in name.lower() or name.endswith(".pad_token"):
                self.facts.flags["pad_token"] = _token_value(node.value)
            elif name.endswith("config.use_cache"):
                self.facts.flags["use_cache"] = _value(node.value)
            elif name.endswith("config.pad_token_id"):
                self.facts.flags["pad_token_id"] = _value(node.value)
            elif last in ("response_template", "instruction_template") and isinstance(target, ast.Name):
                self.facts.flags.setdefault(last, _value(node.value))

    def _kwargs(self, node: ast.Call) -> dict[str, ast.AST]:
        return {k.arg: k.value for k in node.keywords if k.arg}

    def _call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        last = _last(name)
        base = _last(name.rsplit(".", 1)[0]) if "." in name else ""
        kwargs = self._kwargs(node)
        flags = self.facts.flags
        if last in NOTABLE_CALLS:
            _extend(self.facts.calls, [last])
        if "remove_columns" in kwargs:
            value = self._resolve(kwargs["remove_columns"])
            if isinstance(value, (ast.List, ast.Tuple)):
                _extend(self.facts.dataset_columns, [s for s in (_string(e) for e in value.elts) if s])
            elif _string(value):
                _extend(self.facts.dataset_columns, [_string(value)])
        if last in ("from_dict",) and node.args and isinstance(node.args[0], ast.Dict):
            self._columns_from_dict(node.args[0])
        if last == "from_list" and node.args and isinstance(node.args[0], ast.List):
            for element in node.args[0].elts[:5]:
                if isinstance(element, ast.Dict):
                    self._columns_from_dict(element)

        if last in ("from_pretrained", "from_config") and base:
            self._loader(base, node, kwargs)
        elif MODEL_CLASS.match(last) and not NOT_MODEL_CLASS.search(last) and last[:1].isupper() and "." not in name:
            if node.args or "config" in kwargs:
                _extend(self.facts.model_classes, [last])
                for key, value in kwargs.items():  # simpletransformers: ClassificationModel(..., num_labels=5)
                    if key in LOADER_FLAGS:
                        self.facts.flags.setdefault(key, _value(value))
        if last.endswith("Config") and last[:1].isupper() and not TRAINING_ARGS_CLASSES.match(last):
            if last not in ("LoraConfig", "BitsAndBytesConfig", "AutoConfig", "PeftConfig", "GenerationConfig"):
                _extend(self.facts.config_classes, [last])

        if last in self.user_trainers or (
            TRAINER_CLASS.match(last) and last[:1].isupper() and not NOT_TRAINER.search(last)
        ):
            self._trainer(last, kwargs)
        elif TRAINING_ARGS_CLASSES.match(last):
            self._training_args(node)
        elif last.startswith("DataCollator") or last in ("default_data_collator",):
            if not self.facts.collator:
                self._collator(node)
        elif last in ("LoraConfig", "prepare_model_for_kbit_training"):
            self.facts.uses_peft = True
            for key, value in kwargs.items():
                if key in PEFT_FLAGS:
                    flags.setdefault("lora_r" if key == "r" else key, _value(value))
        elif last == "train_on_responses_only":
            for key, flag in (("response_part", "response_template"), ("instruction_part", "instruction_template")):
                if key in kwargs:
                    flags[flag] = _value(self._resolve(kwargs[key]))
        elif last in ("gradient_checkpointing_enable",):
            flags.setdefault("gradient_checkpointing", True)
            self._gc_kwargs(kwargs.get("gradient_checkpointing_kwargs"))
        if last == "get_peft_model":
            self.facts.uses_peft = True
            for key, value in kwargs.items():
                if key in PEFT_FLAGS:
                    flags.setdefault("gradient_checkpointing" if key == "use_gradient_checkpointing" else
                                     ("lora_r" if key == "r" else key), _value(value))

    def _loader(self, base: str, node: ast.Call, kwargs: dict[str, ast.AST]) -> None:
        names = [_string(self._resolve(node.args[0]))] if node.args else []
        for key in ("pretrained_model_name_or_path", "model_name", "model_id"):
            if key in kwargs:
                names.append(_string(self._resolve(kwargs[key])))
        names = [n for n in names if n]
        if "Tokenizer" in base or "Processor" in base:
            _extend(self.tokenizer_names, names)
            return
        if base.endswith("Config"):
            return
        if MODEL_CLASS.match(base) and not NOT_MODEL_CLASS.search(base) or base in ("FastLanguageModel", "FastModel"):
            _extend(self.facts.model_classes, [base])
            _extend(self.facts.model_names, names)
            if base.startswith("PeftModel") or base.startswith("AutoPeftModel"):
                self.facts.uses_peft = True
            for key, value in kwargs.items():
                if key in LOADER_FLAGS:
                    self.facts.flags.setdefault(key, _value(value))

    def _trainer(self, name: str, kwargs: dict[str, ast.AST]) -> None:
        self.facts.trainer = name
        collator = kwargs.get("data_collator")
        if collator is not None:
            resolved = self._resolve(collator)
            if isinstance(resolved, ast.Call):
                self._collator(resolved, force=True)
            elif isinstance(resolved, (ast.Name, ast.Attribute)):
                self.facts.collator, self.facts.collator_kwargs = _last(_dotted(resolved)), {}
        args = kwargs.get("args")
        if args is not None:
            resolved = self._resolve(args)
            if isinstance(resolved, ast.Call):
                self._training_args(resolved)
        for key, value in kwargs.items():
            if key in TRAINER_FLAGS:
                if key == "peft_config":
                    self.facts.uses_peft = True
                self.facts.flags.setdefault(key, _value(value))
                if key == "dataset_text_field" and _string(value):
                    _extend(self.facts.dataset_columns, [_string(value)])

    def _training_args(self, node: ast.Call) -> None:
        for key, value in self._kwargs(node).items():
            if key == "gradient_checkpointing_kwargs":
                self._gc_kwargs(value)
            if key == "deepspeed" and isinstance(self._resolve(value), ast.Dict):
                try:
                    config = ast.literal_eval(self._resolve(value))
                except Exception:  # noqa: BLE001
                    config = None
                if isinstance(config, dict):
                    for flag, flag_value in config_flags(config).items():
                        self.facts.flags.setdefault(flag, flag_value)
            self.facts.flags[key] = _value(value)
            if key == "dataset_text_field" and _string(value):
                _extend(self.facts.dataset_columns, [_string(value)])

    def _gc_kwargs(self, node: ast.AST | None) -> None:
        node = self._resolve(node) if node is not None else None
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if _string(key) == "use_reentrant":
                    self.facts.flags["use_reentrant"] = _value(value)
        elif isinstance(node, ast.Call) and _dotted(node.func) == "dict":
            for key, value in self._kwargs(node).items():
                if key == "use_reentrant":
                    self.facts.flags["use_reentrant"] = _value(value)

    def _collator(self, node: ast.Call, force: bool = False) -> None:
        name = _last(_dotted(node.func))
        if not name or (not force and self.facts.collator):
            return
        self.facts.collator = name
        self.facts.collator_kwargs = {k.arg: _source(k.value) for k in node.keywords if k.arg}
        for key in ("response_template", "instruction_template"):
            for keyword in node.keywords:
                if keyword.arg == key:
                    self.facts.flags[key] = _value(self._resolve(keyword.value))
        if name == "DataCollatorForCompletionOnlyLM" and node.args:
            self.facts.flags.setdefault("response_template", _value(self._resolve(node.args[0])))


def _token_value(node: ast.AST) -> FlagValue:
    """'eos' for `tokenizer.eos_token`, the literal for a string, else source text."""
    name = _last(_dotted(node))
    for suffix in ("_token_id", "_token"):
        if name.endswith(suffix) and name != suffix.lstrip("_"):
            return name[: -len(suffix)]
    return _value(node)


_SIMPLE_ASSIGN = re.compile(r"^\s*([a-z_]\w{0,60})\s*=\s*(\S.{0,300})$")


def assignment_flag(text: str) -> tuple[str, FlagValue] | None:
    """``('packing', True)`` for the text ``packing=True`` (an inline setting in a sentence)."""
    m = _SIMPLE_ASSIGN.match(text)
    if not m:
        return None
    tree = _parse(m.group(2))
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    return m.group(1), _value(tree.body[0].value)


# ----------------------------------------------------------------- regex fallback

_RX_LOADER = re.compile(r"\b([A-Z]\w{0,80})\.from_(?:pretrained|config)\(\s*(?:[\w_]{1,40}\s*=\s*)?(?:[\"']([^\"'\n]{1,200})[\"'])?")
_RX_CLASS = re.compile(r"^\s*class\s+(\w+)\s*\(([^)\n]{0,300})\)\s*:", re.M)
_RX_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)\s*\(([^)\n]{0,300})\)", re.M)
_RX_CALL = re.compile(r"\b([A-Za-z_]\w{0,60})\s*\(")
_RX_KWARG = re.compile(r"(?<![\w.=!<>])([a-z_]\w{0,60})\s*=\s*([^,\n)]{1,300})")
_RX_COLUMN = re.compile(r"\b(?:example|examples|batch|sample|row|x|ex|item|feature|f)\[[\"'](\w{1,60})[\"']\]")


def _regex_facts(source: str) -> CodeFacts:
    """Line-regex reading of code that does not parse (TrainingArguments dumps, fragments)."""
    facts = CodeFacts()
    for m in _RX_LOADER.finditer(source):
        cls, name = m.group(1), m.group(2)
        if "Tokenizer" in cls or "Processor" in cls or cls.endswith("Config"):
            continue
        if MODEL_CLASS.match(cls) or cls in ("FastLanguageModel", "FastModel"):
            _extend(facts.model_classes, [cls])
            _extend(facts.model_names, [name] if name else [])
    for m in _RX_CLASS.finditer(source):
        bases = [_last(b.strip()) for b in m.group(2).split(",") if b.strip() and "=" not in b]
        if TRAINER_CLASS.match(m.group(1)) or any(TRAINER_CLASS.match(b) for b in bases):
            facts.trainer_bases = bases
    for m in _RX_DEF.finditer(source):
        _extend(facts.defined_functions, [f"{m.group(1)}({m.group(2).strip()})"])
    current = ""  # the call whose keyword arguments we are reading
    for line in source.split("\n")[:5000]:
        line = line[:2000]
        scan_from = 0
        if line.strip() in (")", "),"):
            current = ""
        for m in _RX_CALL.finditer(line):
            name = m.group(1)
            if name in NOTABLE_CALLS:
                _extend(facts.calls, [name])
            if TRAINER_CLASS.match(name) and name[:1].isupper() and not NOT_TRAINER.search(name):
                facts.trainer = name
            if name.startswith("DataCollator") and not facts.collator:
                facts.collator = name
            if name in ("LoraConfig", "get_peft_model"):
                facts.uses_peft = True
            if TRAINING_ARGS_CLASSES.match(name) or TRAINER_CLASS.match(name) or name.startswith("DataCollator"):
                current, scan_from = name, m.end()
        if current and (TRAINING_ARGS_CLASSES.match(current) or current.startswith("DataCollator")):
            for m in _RX_KWARG.finditer(line, scan_from):
                key, raw = m.group(1), m.group(2).strip()
                tree = _parse(raw)
                value: FlagValue = raw
                if tree is not None and len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
                    value = _value(tree.body[0].value)
                if current.startswith("DataCollator") and key not in ("response_template", "instruction_template"):
                    facts.collator_kwargs.setdefault(key, raw)
                else:
                    facts.flags.setdefault(key, value)
        for m in _RX_COLUMN.finditer(line):
            _extend(facts.dataset_columns, [m.group(1)])
    return facts


# ---------------------------------------------------------------------- configs


CONFIG_NAME_KEYS = ("model_name_or_path", "base_model", "model_name", "model_id", "pretrained_model_name_or_path", "model")
PEFT_SETTINGS = ("finetuning_type", "adapter", "train_type", "tuner_backend")
"""LLaMA-Factory, axolotl and ms-swift settings whose value says an adapter is trained (lora, qlora...)."""


STAGE_SETTINGS = ("rlhf_type", "rl", "stage")
"""ms-swift (`--rlhf_type grpo`), axolotl (`rl: dpo`) and LLaMA-Factory (`stage: dpo`) settings naming the trainer."""
STAGE_TRAINERS = {
    "grpo": "GRPOTrainer", "dpo": "DPOTrainer", "orpo": "ORPOTrainer", "kto": "KTOTrainer", "cpo": "CPOTrainer",
    "simpo": "CPOTrainer", "ppo": "PPOTrainer", "rm": "RewardTrainer", "rloo": "RLOOTrainer",
}
"""The TRL trainer each RL stage runs (supervised stages run each framework's own Seq2SeqTrainer subclass: not named)."""


def config_facts(config: Mapping[str, Any]) -> CodeFacts:
    """Facts from a parsed YAML/JSON config (LLaMA-Factory, axolotl, TrainingArguments, DeepSpeed)."""
    facts = CodeFacts(flags=config_flags(config))
    for key in CONFIG_NAME_KEYS:
        if isinstance(config.get(key), str):
            _extend(facts.model_names, [config[key]])
    for key in ("model_type", "base_model_class"):  # axolotl: model_type: LlamaForCausalLM
        value = config.get(key)
        if isinstance(value, str) and MODEL_CLASS.match(value):
            _extend(facts.model_classes, [value])
        elif key == "model_type" and isinstance(value, str):  # ms-swift: --model_type qwen2-7b
            _extend(facts.model_names, [value])
    if any(str(config.get(key, "")).lower() in ("lora", "qlora", "oft", "peft") for key in PEFT_SETTINGS) or (
        "lora_r" in config or "lora_rank" in config
    ):
        facts.uses_peft = True
    if isinstance(config.get("dataset_text_field"), str):
        _extend(facts.dataset_columns, [config["dataset_text_field"]])
    for key in STAGE_SETTINGS:
        trainer = STAGE_TRAINERS.get(str(config.get(key, "")).strip().lower())
        if trainer:
            facts.trainer = trainer
            break
    return facts


def config_flags(config: Mapping[str, Any]) -> dict[str, FlagValue]:
    """Top-level scalar settings of a config as flags, plus DeepSpeed and nested GC settings."""
    flags: dict[str, FlagValue] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            flags[key] = value if not isinstance(value, str) or len(value) <= 500 else value[:500]
        elif key == "zero_optimization" and isinstance(value, Mapping):
            if isinstance(value.get("stage"), int):
                flags["zero_stage"] = value["stage"]
            if isinstance(value.get("overlap_comm"), bool):
                flags["overlap_comm"] = value["overlap_comm"]
        elif key in ("fp16", "bf16") and isinstance(value, Mapping) and "enabled" in value:
            enabled = value["enabled"]
            flags[key] = enabled if isinstance(enabled, (bool, str)) else str(enabled)
        elif key == "gradient_checkpointing_kwargs" and isinstance(value, Mapping):
            if isinstance(value.get("use_reentrant"), bool):
                flags["use_reentrant"] = value["use_reentrant"]
        elif key == "deepspeed" and isinstance(value, Mapping):
            for sub_key, sub_value in config_flags(value).items():
                flags.setdefault(sub_key, sub_value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            flags[key] = ",".join(str(v) for v in value)[:500]
    _finish_flags(flags)
    return flags


def _finish_flags(flags: dict[str, FlagValue]) -> None:
    """Add the canonical aliases: `max_length` from max_seq_length/cutoff_len, zero stage from a path."""
    if "max_length" not in flags:
        for alias in MAX_LENGTH_ALIASES:
            if alias in flags:
                flags["max_length"] = flags[alias]
                break
    if "lora_modules_to_save" in flags and "modules_to_save" not in flags:
        flags["modules_to_save"] = flags["lora_modules_to_save"]
    deepspeed = flags.get("deepspeed")
    if isinstance(deepspeed, str) and "zero_stage" not in flags:
        m = re.search(r"(?:zero|z|stage)[_-]?([0-3])(?![0-9])", deepspeed, re.I)
        if m:
            flags["zero_stage"] = int(m.group(1))


def add_derived_flags(flags: dict[str, FlagValue]) -> None:
    """Facts that two settings give together: `prompt_fills_max_length` when max_prompt_length leaves no
    room under max_length, so preference/completion trainers truncate every response away."""
    prompt, total = _as_int(flags.get("max_prompt_length")), _as_int(flags.get("max_length"))
    if prompt is not None and total is not None and prompt >= total:
        flags["prompt_fills_max_length"] = True


def _as_int(value: FlagValue | None) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# -------------------------------------------------------------------- inference

_FAMILIES: list[tuple[str, str]] = [
    # (regex on a lower-cased model name or class, family); first match wins, so specific before general
    (r"qwen-?3", "qwen3"),
    (r"qwen|qwq", "qwen2"),
    (r"gpt[-_]?neox|pythia|gpt-neox", "gpt_neox"),
    (r"distilgpt2|gpt-?2|dialogpt|gpt2", "gpt2"),
    (r"phi-?3|phi-?4", "phi3"),
    (r"phi-?[12]\b|phiforcausal", "phi"),
    (r"gemma", "gemma"),
    (r"mistral|mixtral|zephyr", "mistral"),
    (r"llama|vicuna|tinyllama|alpaca|codellama|smollm", "llama"),
    (r"\bt5|mt5", "t5"),
    (r"bart", "bart"),
    (r"roberta", "roberta"),
    (r"distilbert", "distilbert"),
    (r"bert", "bert"),
]
_FAMILY_RX = [(re.compile(rx), family) for rx, family in _FAMILIES]


def model_type_of(names: Iterable[str]) -> str | None:
    """The model family of the first name (checkpoint, model class, config class) that says one."""
    for name in names:
        lowered = name.lower()
        for rx, family in _FAMILY_RX:
            if rx.search(lowered):
                return family
    return None


def dataset_format_of(columns: Iterable[str], flags: Mapping[str, FlagValue]) -> str | None:
    """text | messages | prompt_completion | tokenized | tokenized_with_labels | classification | preference."""
    cols = set(columns)
    if {"chosen", "rejected"} <= cols:
        return "preference"
    if cols & {"messages", "conversations", "conversation"}:
        return "messages"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "num_labels" in flags or "label" in cols or ("labels" in cols and cols & {"text", "sentence"}):
        return "classification"
    if "input_ids" in cols:
        return "tokenized_with_labels" if "labels" in cols else "tokenized"
    if "text" in cols or isinstance(flags.get("dataset_text_field"), str):
        return "text"
    return None
