"""Pasted text (tracebacks, code, logs, `pip list`, configs) -> `Report`.

The text is redacted first (`bot.redact`), then normalised: ANSI codes, chat formatting
(code fences, ``>`` quotes, Slack entities), rich boxes and CRLF go. Then each line is
read once by small extractors. Every regex is linear (no nested quantifiers) and sees
at most `MAX_LINE` characters of a line, so 1 MB parses in well under a second.

>>> report = parse_text("ValueError: The model did not return a loss from the inputs, only the "
...     "following keys: logits. For reference, the inputs it received are input_ids,attention_mask.")
>>> report.exceptions[0].type, report.returned_keys, report.received_inputs
('ValueError', ['logits'], ['input_ids', 'attention_mask'])
"""

from __future__ import annotations

from bisect import bisect_left
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot import code_facts as cf
from bot.errors import UnreadableInput
from bot.models import ExceptionInfo, Frame, Report
from bot.redact import redact

MAX_INPUT_BYTES = 50_000_000
"""Inputs larger than this are refused."""
KEEP_CHARS = 10_000_000
"""Inputs larger than this keep only their head and tail."""
KEEP_HEAD_CHARS = 2_000_000
MAX_LINES = 1_000_000
"""Inputs with more lines keep only their first `KEEP_HEAD_LINES` and their last lines."""
KEEP_HEAD_LINES = 200_000
MAX_LINE = 4000
"""Line extractors read at most this many characters of a line."""
MAX_WARNINGS = 100
MAX_FRAMES = 300
MAX_EXCEPTIONS = 50
MAX_VALUES = 10_000
MAX_CONFIG_CHARS = 200_000

SECTION_ORDER = ("traceback", "code", "log", "warnings", "pip", "env", "config", "prose")
CODE_LANGS = frozenset({"python", "py", "python3", "py3", "ipython", "pycon", "jupyter"})
CONFIG_LANGS = frozenset({"yaml", "yml", "json", "jsonc", "json5"})

# ----------------------------------------------------------------------- public API


def parse_text(text: str) -> Report:
    """Read a paste into a `Report`; never raises on any string."""
    return _build([(None, text if isinstance(text, str) else str(text), [])])


def parse_bytes(data: bytes, name: str = "<stdin>", max_bytes: int = MAX_INPUT_BYTES) -> Report:
    """Decode ``data`` and parse it.

    Raises:
        UnreadableInput: the input is empty, binary, or larger than ``max_bytes``.
    """
    text, notes = decode(data, name, max_bytes)
    return _build([(None, text, notes)])


def parse_files(parts: list[tuple[str, bytes]], max_bytes: int = MAX_INPUT_BYTES) -> Report:
    """Parse several files into one `Report`; the extension is a hint (.py code, .yaml/.json config).

    A file that cannot be read is skipped with a note. Raises `UnreadableInput` when none can be read.
    """
    pieces: list[tuple[str | None, str, list[str]]] = []
    skipped: list[str] = []
    for name, data in parts:
        try:
            text, notes = decode(data, name, max_bytes)
        except UnreadableInput as exc:
            skipped.append(str(exc))
            continue
        lowered = name.lower()
        hint = "code" if lowered.endswith((".py", ".pyw")) else None
        if lowered.endswith((".yaml", ".yml", ".json")):
            hint = "config"
        pieces.append((hint, text, notes))
    if not pieces:
        raise UnreadableInput(" ".join(skipped) or "No files were given.")
    report = _build(pieces)
    report.notes.extend(f"Skipped a file: {reason}" for reason in skipped)
    return report


def decode(data: bytes, name: str = "<stdin>", max_bytes: int = MAX_INPUT_BYTES) -> tuple[str, list[str]]:
    """Bytes -> text and notes: UTF-8, UTF-16/32 with a BOM, else Latin-1 (with a note).

    Raises:
        UnreadableInput: empty, whitespace-only, binary, or larger than ``max_bytes``.
    """
    if len(data) > max_bytes:
        raise UnreadableInput(
            f"{name} is {len(data) / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} MB limit. "
            "Paste the traceback, the training code and the last log lines instead."
        )
    notes: list[str] = []
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    else:
        text = None
    if text is None:
        if _looks_binary(data):
            raise UnreadableInput(
                f"{name} looks like a binary file, not text. Paste the error message, code or log as text."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
            notes.append(f"{name} is not valid UTF-8; it was read as Latin-1, so some characters may be wrong.")
    if not text.strip():
        raise UnreadableInput(f"{name} is empty: there is nothing to diagnose.")
    if _looks_binary_text(text):
        raise UnreadableInput(f"{name} looks like a binary file, not text. Paste the error message, code or log as text.")
    return text, notes


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27)) + sample.count(127)
    return control > 0.1 * len(sample)


def _looks_binary_text(text: str) -> bool:
    sample = text[:65536]
    if "\x00" in sample:
        return True
    control = sum(1 for c in sample if c < " " and c not in "\t\n\x0c\r\x1b")
    return control > 0.1 * len(sample)


# ----------------------------------------------------------------- normalisation

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]{0,1000}(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_ENTITIES = (("&gt;", ">"), ("&lt;", "<"), ("&quot;", '"'), ("&#39;", "'"), ("&#x27;", "'"), ("&amp;", "&"))
_QUOTE = re.compile(r"^ {0,3}(?:>>> |> ?)(?:> ?){0,5}")
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d{1,5}\]:\s?")
_BOX_EDGE = re.compile(r"^[\s\u2500-\u257f]+|[\s\u2500-\u257f]+$")
_BOX_SIDES = "│┃║"
_BOX_CORNERS = "╭╰┏┗╔╚┌└"
_FENCE = re.compile(r"^\s{0,3}(?:`{3,}|~{3,})\s*([\w+#.-]{0,20})\s*$")
_BAR_THEN_TEXT = re.compile(r"(\d{1,3}%\|[^|\n]{0,80}\|[^\]\n]{0,80}(?:it/s|s/it|[a-z]{1,12}/s)\])(?=[^\s|])")
"""A tqdm bar with no newline after it, and the log line that was printed right behind it."""


def normalise(text: str) -> str:
    """Strip ANSI codes, CR, chat quoting and entities, rich box borders and rank prefixes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "&" in text:
        for entity, char in _ENTITIES:
            text = text.replace(entity, char)
    text = text.replace("\u00a0", " ").replace("\u200b", "").replace("\ufeff", "")
    if "/s]" in text or "s/it]" in text:
        text = _BAR_THEN_TEXT.sub("\\1\n", text)  # '  0%|   | 0/200 [00:00<?, ?it/s]Trainer: ...' is two lines
    has_box = any(c in text for c in _BOX_SIDES + _BOX_CORNERS)
    has_rank = "[rank" in text or "[default" in text
    has_quote = text.startswith(">") or "\n>" in text or "\n >" in text
    if not (has_box or has_rank or has_quote):
        return text
    lines = text.split("\n")
    quoted = sum(1 for line in lines[:2000] if line.startswith(">"))
    strip_quotes = quoted >= max(1, len([ln for ln in lines[:2000] if ln.strip()]) // 3)
    out = []
    for line in lines:
        if not line:
            out.append(line)
            continue
        if has_quote and (line.startswith(">>> ") or strip_quotes and line[0] in "> "):
            line = _QUOTE.sub("", line, count=1)
        if has_rank and line.startswith("["):
            line = _RANK_PREFIX.sub("", line, count=1)
        if has_box:
            line = _unbox(line).replace("│", " ")  # what is left are rich's indent guides
        out.append(line)
    return "\n".join(out)


def _unbox(line: str) -> str:
    """Drop rich panel borders: '│ text │' -> 'text', '╭── Title ──╮' -> 'Title'."""
    stripped = line.lstrip()
    first = stripped[:1]
    if not first:
        return line
    if first in _BOX_SIDES:
        line = stripped[1:]
        if line.startswith(" "):
            line = line[1:]
        tail = line.rstrip()
        if tail and tail[-1] in _BOX_SIDES:
            line = tail[:-1].rstrip()
        if line.lstrip()[:1] and line.lstrip()[0] in _BOX_CORNERS:
            line = _BOX_EDGE.sub("", line)
    elif first in _BOX_CORNERS:
        line = _BOX_EDGE.sub("", line)
    return line


@dataclass
class _Chunk:
    lines: list[str]
    lang: str | None = None


def split_fences(text: str) -> list[_Chunk]:
    """Split at markdown code fences, dropping the fence lines; keeps the fence language."""
    if "```" not in text and "~~~" not in text:
        return [_Chunk(text.split("\n"))]
    chunks = [_Chunk([])]
    inside = False
    for line in text.split("\n"):
        m = _FENCE.match(line) if "```" in line or "~~~" in line else None
        if m:
            if inside:
                chunks.append(_Chunk([]))
            else:
                chunks.append(_Chunk([], m.group(1).lower() or None))
            inside = not inside
            continue
        stripped = line.strip()
        if stripped.startswith("```"):  # ```Traceback ... on one line (Slack)
            rest = stripped[3:]
            chunks.append(_Chunk([]))
            inside = True
            if rest.endswith("```"):
                chunks[-1].lines.append(rest[:-3])
                chunks.append(_Chunk([]))
                inside = False
            else:
                chunks[-1].lines.append(rest)
            continue
        if inside and stripped.endswith("```"):
            chunks[-1].lines.append(line.rstrip()[:-3])
            chunks.append(_Chunk([]))
            inside = False
            continue
        chunks[-1].lines.append(line)
    return [c for c in chunks if c.lines and (len(c.lines) > 1 or c.lines[0].strip())]


# --------------------------------------------------------------- line patterns

_TB_HEADER = "Traceback (most recent call last)"
_MAY_HAVE_TRACEBACK = re.compile(
    r"Traceback|File |Cell In|\.py:\d|\.py in |ipython-input|Error|Exception|Interrupt|Exit|Iteration|Failure|Fault"
)
_JUPYTER_HEADER = re.compile(r"^([A-Za-z_][\w.]{0,100})\s+Traceback \(most recent call last\)")
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")
_FRAME_STD = re.compile(r'^File "([^"\n]{1,1000})", line (\d+)(?:, in (\S{1,200}))?')
_FRAME_JUPYTER = re.compile(r"^File (\S[^\n]{0,1000}?):(\d+)(?:, in ([\w.<>]{1,200}))?")
_FRAME_CELL = re.compile(r"^(Cell In\s?\[\d{1,6}\]), line (\d+)(?:, in ([\w.<>]{1,200}))?")
_FRAME_OLD_IPY = re.compile(r"^(<ipython-input-[^>\s]{1,100}>|\S{1,1000}\.py) in ([\w.<>]{1,200})\(")
_FRAME_RICH = re.compile(r"^(\S{1,1000}\.py|<[^>\s]{1,100}>):(\d+) in (\S{1,200})$")
_FRAME_RICH_SPLIT = re.compile(r"^(\S{1,1000}\.py|<[^>\s]{1,100}>):(\d+) in$")
_ARROW_LINE = re.compile(r"^-+>\s{0,8}(\d+)")
_EXC_LINE = re.compile(r"^((?:[A-Za-z_]\w{0,80}\.){0,10}([A-Za-z_]\w{0,100}))(?: ?:(?: (.*))?)?$")
_EXC_IN_PROSE = re.compile(r"\b((?:[A-Za-z_]\w{0,40}\.){0,6}([A-Z]\w{0,60}(?:Error|Exception))) ?: (\S.{0,2000})")
_EXC_NAMES = re.compile(r"(?:Error|Exception|Interrupt|Exit|Iteration|Failure|Fault)$")
_BARE_EXC = frozenset({"KeyboardInterrupt", "StopIteration", "SystemExit", "AssertionError", "MemoryError"})
_STOP_MESSAGE = re.compile(
    r"^(?:\{['\"]|\[(?:INFO|WARNING|ERROR|DEBUG)|wandb:|\s*\d{1,3}%\||[$#] |\(\w+\) \S|import |from \S+ import |"
    r"(?:\w+Warning|WARNING|INFO|ERROR)[:\]| ])"
)

_RETURNED_KEYS = re.compile(r"only the following keys: ([\w ,.\[\]'\"-]{0,2000}?)\.? For reference")
_RECEIVED = re.compile(r"(?:the )?inputs it received are ([\w ,\[\]'\"-]{0,2000})")

_LOSS = re.compile(  # searched in the lower-cased line
    r"((?:train(?:ing)?_|eval_|val(?:idation)?_)?(?:epoch_|lm[_ ]|total_)?loss|grad[_ ]norm)['\"]?"
    # `loss: 0.7`, `loss=nan`, `'loss': tensor(0.5)`, `'loss': '0.7'` (transformers 5 logs the values as
    # strings); or with a space only when the value is clearly a measurement (`iter 600: loss nan`,
    # `lm_loss 2.3510 |`, `step 2: loss 0.1173`)
    r"(?:\s{0,4}[:=]\s{0,4}(?:tensor\(|['\"])?([-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+|nan|inf(?:inity)?))(?![\w])"
    r"|\s{1,3}(nan|inf|[-+]?\d+\.\d+(?:e[-+]?\d+)?)(?![\w.]))"
)
_TABLE_COLUMN = re.compile(r"(?i)training loss|validation loss|eval(?:uation)? loss|grad(?:ient)? norm|learning rate|no log|[a-z_]+")
_TABLE_SPLIT = re.compile(r"[|\t ]+")
_NUMBER = re.compile(r"(?i)^[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+|nan|inf(?:inity)?)$")
_GA_STEPS = re.compile(r"(?i)gradient accumulation steps = (\d{1,6})")
_BATCH_PER_DEVICE = re.compile(r"(?i)(?:instantaneous )?batch size per device = (\d{1,6})")

_WARNING_TYPE = re.compile(r"\b[A-Z]\w{0,40}Warning: ")
_WARNING_LOG = re.compile(r"(?:^|[\[\s|:])WARNING(?:[\]\s|:]|$)|^W\d{4} ")
_WARNING_PHRASES = (
    "Could not find response key",
    "Could not find instruction key",
    "None of the inputs have requires_grad=True",
    "is incompatible with gradient checkpointing",
    "have been ignored:",
    "Setting `pad_token_id` to `eos_token_id`",
)

_PIP_HEADER = re.compile(r"^Package\s+Version\b")
_PIP_ROW = re.compile(r"^([A-Za-z0-9][\w.-]{0,100})\s+(\d{1,8}(?:\.\w{1,20}){0,8}[\w.+!-]{0,40})(?:\s+\S{1,300}){0,3}\s*$")
_FREEZE_ROW = re.compile(r"^([A-Za-z0-9][\w.-]{0,100})\s*===?\s*(\d[\w.+!-]{0,60})\s*(?:;.*)?$")
_ENV_ROW = re.compile(
    r"^\s{0,4}[-*]\s{1,4}`?([A-Za-z][\w .-]{0,40}?)`?\s+[Vv]ersion(?:\s{0,4}\([^)\n]{0,40}\))?\s{0,4}:\s{0,8}(\S{1,80})"
)
_BANNER_UNSLOTH = re.compile(r"Unsloth:?\s{1,4}(?:Fast \w{1,40} patching release\s{1,4})?(\d{4}\.\d{1,2}(?:\.\d{1,4})?)")
_BANNER_FAMILY = re.compile(r"Fast (\w{1,40}) patching")
_BANNER_LIB = re.compile(
    r"\b(Transformers|Torch|Triton|Xformers|Bitsandbytes|vLLM|TRL|PEFT|Datasets)\s{0,4}[:=]?\s{0,4}(\d[\w.+]{0,40})"
)
_BANNER_CUDA = re.compile(r"CUDA Toolkit\s{0,4}[:=]\s{0,4}(\d[\d.]{0,20})")
_VERSION_HINT = re.compile(
    r"transformers|trl|peft|torch|datasets|accelerate|unsloth|bitsandbytes|deepspeed|flash|xformers|tokenizers"
    r"|llama|axolotl|python|cuda|triton|vllm|safetensors|hub|liger|numpy"
)
_PROSE_VERSION = re.compile(  # searched in the lower-cased line
    r"(?<![\w/.\\-])(transformers|trl|peft|torch|pytorch|datasets|accelerate|unsloth[_-]zoo|unsloth|bitsandbytes"
    r"|deepspeed|flash[_-]attn|flash[_-]attention|xformers|tokenizers|llamafactory|llama[_-]factory|axolotl|python"
    r"|cuda|triton|vllm|safetensors|huggingface[_-]hub|liger[_-]kernel|numpy)"
    r"(?:\s{0,4}(?:==|=|:|：)\s{0,4}|\s{0,4}(?:的)?(?:版本|のバージョン|バージョン)(?:号)?\s{0,2}(?:是|为|為|は|:|：|=)?\s{0,4}"
    r"|\s{1,4}(?:version\s{0,4}(?:is\s{1,4})?[:=]?\s{0,4})?|-(?=\d))v?(\d{1,5}(?:\.\d{1,8}){1,4}[\w.+-]{0,30})"
)
_UPGRADE_VERSION = re.compile(  # "upgraded transformers to 4.46", "updated trl from 0.8.6 to v0.9.4" (lower-cased line)
    r"\b(?:upgrad|updat|bump|mov)\w{0,4}\s{1,4}(?:to\s{1,4})?(?:the\s{1,4}(?:latest\s{1,4})?)?"
    r"(transformers|trl|peft|torch|pytorch|datasets|accelerate|unsloth|deepspeed|bitsandbytes|axolotl|llamafactory)"
    r"(?:\s{1,4}(?:version|package|library))?\s{1,4}(?:from\s{1,4}v?\d[\w.+-]{0,30}\s{1,4})?to\s{1,4}v?(\d{1,5}(?:\.\d{1,8}){1,4}[\w.+-]{0,30})"
)
"""The version a package was upgraded to (the one the run now uses; a downgrade names the working one: not read)."""
_VERSION_ALIASES = {
    "pytorch": "torch",
    "flash-attention": "flash-attn",
    "flash-attention-2": "flash-attn",
    "llama-factory": "llamafactory",
    "hf-hub": "huggingface-hub",
    "huggingface-hub": "huggingface-hub",
    "cuda-toolkit": "cuda",
}

_CODE_STRONG = re.compile(
    r"^\s*(?:import [A-Za-z_]|from [\w.]{1,100} import |def \w{1,100}\s*\(|async def |class \w{1,100}\s*[(:]|"
    r"@[A-Za-z_][\w.]{0,100}(?:\(|$)|if __name__|for \w{1,40}(?:\s*,\s*\w{1,40}){0,4} in |with [\w(]|return\b|"
    r"try:|except\b|elif |else:|while |print\()"
)
_CODE_ASSIGN = re.compile(
    r"^\s*[A-Za-z_][\w.]{0,100}(?:\[[^\]\n]{0,100}\])?(?:\s*,\s*[A-Za-z_][\w.]{0,100}){0,5}\s*[-+*/|]?=(?!=)"
)
_CODE_CALL = re.compile(r"^\s*[A-Za-z_][\w.]{0,100}\(")
_DIGIT = re.compile(r"\d")
_MAYBE_CODE = re.compile(r"[(= :]")
_YAML_KEY = re.compile(r"^\s{0,40}([A-Za-z_][\w.-]{0,80}):(?:\s+\S|\s*$)")
_YAML_ITEM = re.compile(r"^\s{0,40}- \S")
_NOT_CONFIG_KEYS = frozenset({"INFO", "WARNING", "ERROR", "DEBUG", "CRITICAL", "wandb", "Traceback", "Note", "Error"})
_LOG_MARKS = re.compile(r"\*{5} Running|it/s\]|s/it\]|\d%\||\b(?:INFO|DEBUG)\b|'train_runtime'|Num examples = ")
_PROSE = re.compile(r"^[A-Za-z\"'(][^{}<>|]{10,}$")
_BARE_FLAG_LINE = re.compile(r"^[a-z_]\w{0,60}\s{0,3}=\s{0,3}(?:True|False|\d{1,7}),?$")
_INLINE_CODE = re.compile(r"`([^`\n]{3,500})`")
_WORD = re.compile(r"[A-Za-z']{2,}")


# ------------------------------------------------------------------------ state


@dataclass
class _State:
    text_parts: list[str] = field(default_factory=list)
    narrative_parts: list[str] = field(default_factory=list)
    setup_seen: bool = False
    sections: set[str] = field(default_factory=set)
    exceptions: list[ExceptionInfo] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
    strong_versions: dict[str, str] = field(default_factory=dict)
    weak_versions: dict[str, str] = field(default_factory=dict)
    facts: cf.CodeFacts = field(default_factory=cf.CodeFacts)
    log_flags: dict[str, int] = field(default_factory=dict)
    banner_family: str | None = None
    redacted: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    prose_lines: list[str] = field(default_factory=list)

    def report(self) -> Report:
        facts = self.facts
        flags = dict(facts.flags)
        for key, value in self.log_flags.items():
            flags.setdefault(key, value)
        cf.add_derived_flags(flags)
        versions = dict(self.weak_versions)
        versions.update(self.strong_versions)
        returned, received = _loss_message_keys(self.messages)
        for message in self.messages:  # `GPT2LMHeadModel.forward() got an unexpected keyword argument 'labels'`
            if ".forward()" in message and (m := _FORWARD_OF.search(message)) and not cf.NOT_MODEL_CLASS.search(m.group(1)):
                cf._extend(facts.model_classes, [m.group(1)])
        names = facts.model_names + facts.model_classes + facts.config_classes
        model_type = cf.model_type_of(names) or (cf.model_type_of([self.banner_family]) if self.banner_family else None)
        if self.warning_count > len(self.warnings):
            self.notes.append(
                f"{self.warning_count} warning lines were seen; {len(self.warnings)} distinct ones are kept."
            )
        return Report(
            text="\n".join(self.text_parts),
            narrative="\n".join(self.narrative_parts) if self.setup_seen else None,
            sections=[s for s in SECTION_ORDER if s in self.sections],
            exceptions=self.exceptions[:MAX_EXCEPTIONS],
            frames=self.frames,
            returned_keys=returned,
            received_inputs=received,
            losses=(self.losses or _prose_losses(self.narrative_parts))[-MAX_VALUES:],
            eval_losses=self.eval_losses[-MAX_VALUES:],
            grad_norms=self.grad_norms[-MAX_VALUES:],
            warnings=self.warnings,
            versions=versions,
            model_classes=facts.model_classes,
            model_names=facts.model_names,
            model_type=model_type,
            trainer=facts.trainer,
            trainer_bases=facts.trainer_bases,
            collator=facts.collator,
            collator_kwargs=facts.collator_kwargs,
            dataset_columns=facts.dataset_columns,
            dataset_format=cf.dataset_format_of(facts.dataset_columns, flags),
            calls=facts.calls,
            defined_functions=facts.defined_functions,
            flags=flags,
            uses_peft=facts.uses_peft,
            redacted=sorted(self.redacted),
            notes=self.notes,
        )


def _build(pieces: list[tuple[str | None, str, list[str]]]) -> Report:
    state = _State()
    for hint, raw, notes in pieces:
        state.notes.extend(notes)
        try:
            _read_piece(state, hint, raw)
        except Exception as exc:  # noqa: BLE001 - the parser must never raise on input
            state.notes.append(f"Part of the input could not be parsed ({type(exc).__name__}); results may be incomplete.")
    if not state.exceptions:
        try:
            _exceptions_in_prose(state)
        except Exception:  # noqa: BLE001
            pass
    try:
        _prose_facts(state)
    except Exception:  # noqa: BLE001
        pass
    try:
        return state.report()
    except Exception as exc:  # noqa: BLE001 - e.g. a value pydantic refuses
        state.notes.append(f"The report could not be completed ({type(exc).__name__}).")
        return Report(text="\n".join(state.text_parts), redacted=sorted(state.redacted), notes=state.notes)


def _read_piece(state: _State, hint: str | None, raw: str) -> None:
    text, kinds = redact(raw)
    state.redacted.update(kinds)
    if len(text) > KEEP_CHARS:
        head_end = text.rfind("\n", 0, KEEP_HEAD_CHARS) + 1 or KEEP_HEAD_CHARS
        tail_start = text.find("\n", len(text) - (KEEP_CHARS - KEEP_HEAD_CHARS)) + 1 or len(text) - (
            KEEP_CHARS - KEEP_HEAD_CHARS
        )
        state.notes.append(
            f"The input is {len(text) / 1e6:.1f} million characters; only the first {head_end / 1e6:.1f} and "
            f"the last {(len(text) - tail_start) / 1e6:.1f} million were read."
        )
        text = text[:head_end] + text[tail_start:]
    text = normalise(text)
    text, kinds = redact(text)  # secrets hidden by entities or ANSI codes
    if text.count("\n") > MAX_LINES:
        lines = text.split("\n")
        state.notes.append(
            f"The input has {len(lines)} lines; only the first {KEEP_HEAD_LINES} and the last "
            f"{MAX_LINES - KEEP_HEAD_LINES} were read."
        )
        text = "\n".join(lines[:KEEP_HEAD_LINES] + lines[len(lines) - (MAX_LINES - KEEP_HEAD_LINES) :])
    state.redacted.update(kinds)
    if hint == "code":
        state.text_parts.append(text)
        state.setup_seen = True
        _read_code(state, text)
        return
    if hint == "config" and _read_config(state, text):
        state.text_parts.append(text)
        state.setup_seen = True
        return
    chunks = split_fences(text)
    state.text_parts.append("\n".join("\n".join(chunk.lines) for chunk in chunks))
    for chunk in chunks:
        _read_chunk(state, chunk)


def _read_chunk(state: _State, chunk: _Chunk) -> None:
    lines = chunk.lines
    has_traceback = any(_TB_HEADER in line or line.lstrip().startswith('File "') for line in lines[:20000])
    if chunk.lang in CODE_LANGS and not has_traceback:
        code = "\n".join(lines)
        if _read_code(state, code):
            state.setup_seen = True
            return
    if chunk.lang in CONFIG_LANGS and _read_config(state, "\n".join(lines)):
        state.setup_seen = True
        return
    kind = ["text"] * len(lines)
    stripped = [line[:MAX_LINE].strip() if line else "" for line in lines]
    whole = "\n".join(lines)
    if _MAY_HAVE_TRACEBACK.search(whole):  # each pass is skipped when its trigger is absent
        _read_tracebacks(state, stripped, kind)
    if "(" in whole or "=" in whole or "import " in whole or "@" in whole:
        _find_code_runs(state, lines, stripped, kind)
    if ":" in whole or "{" in whole:
        _find_configs(state, lines, stripped, kind)
    _read_text_lines(state, stripped, kind)
    setup = [k == "code" or k == "config" or (k == "text" and _SETUP_LINE.match(line) is not None)
             for line, k in zip(stripped, kind)]
    if any(setup):
        state.setup_seen = True
        state.narrative_parts.append("\n".join(line for line, is_setup in zip(lines, setup) if not is_setup))
    else:
        state.narrative_parts.append(whole)


# --------------------------------------------------------------------- tracebacks


def _library(path: str) -> str | None:
    """Top-level package of a file path, None for user code."""
    normal = re.sub(r"[\\/]+", "/", path)
    m = re.search(r"/(?:site|dist)-packages/([^/]{1,200})", normal)
    if m:
        name = m.group(1)
        if name.endswith(".py"):
            name = name[:-3]
        return name.split("-")[0] if ".dist-info" in name or ".egg" in name else name
    if "unsloth_compiled_cache" in normal:
        return "unsloth"
    m = re.search(r"/src/(transformers|trl|peft|accelerate|datasets|llamafactory|axolotl|unsloth|unsloth_zoo)/", normal)
    if m:
        return m.group(1)
    if re.search(r"/lib/python\d[\d.]{0,6}/[^/]{1,200}$|/lib/python\d[\d.]{0,6}/(?!site-|dist-)[^/]{1,100}/", normal):
        return "python"
    return None


def _add_frame(state: _State, file: str, line: str | None, function: str | None) -> None:
    if len(state.frames) >= MAX_FRAMES:
        return
    function = function.split("(")[0].rsplit(".", 1)[-1] if function else None
    frame = Frame(file=file, line=int(line) if line else None, function=function, library=_library(file))
    if not state.frames or state.frames[-1] != frame:
        state.frames.append(frame)


def _exception_type(name: str) -> bool:
    return bool(_EXC_NAMES.search(name)) or name in _BARE_EXC


def _read_tracebacks(state: _State, lines: list[str], kind: list[str]) -> None:
    """Frames and exception chains; ``lines`` are stripped. Marks the lines it used as 'tb'."""
    in_traceback = False
    pending_jupyter: str | None = None
    old_ipython_frame = False
    i = 0
    n = len(lines)
    while i < n:
        stripped = lines[i]
        if not stripped:
            i += 1
            continue
        first = stripped[0]
        if _TB_HEADER in stripped:
            kind[i] = "tb"
            in_traceback = True
            state.sections.add("traceback")
            m = _JUPYTER_HEADER.match(stripped)
            if m and _exception_type(m.group(1).rsplit(".", 1)[-1]):
                if pending_jupyter:
                    _add_exception(state, pending_jupyter, "")
                pending_jupyter = m.group(1).rsplit(".", 1)[-1]
            i += 1
            continue
        if stripped.startswith(_CHAIN):
            kind[i] = "tb"
            i += 1
            continue
        frame = None
        if first == "F":
            frame = _FRAME_STD.match(stripped) or _FRAME_JUPYTER.match(stripped)
        elif first == "C":
            frame = _FRAME_CELL.match(stripped)
        elif first in "/<~.\\" or (len(stripped) > 2 and stripped[1] == ":"):
            frame = _FRAME_RICH.match(stripped)
            split = _FRAME_RICH_SPLIT.match(stripped) if frame is None else None
            if split and i + 1 < n and lines[i + 1].isidentifier():
                _add_frame(state, split.group(1), split.group(2), lines[i + 1])
                kind[i] = kind[i + 1] = "tb"
                in_traceback = True
                i += 2
                continue
            if frame is None and in_traceback:
                old = _FRAME_OLD_IPY.match(stripped)
                if old:
                    _add_frame(state, old.group(1), None, old.group(2))
                    old_ipython_frame = True
                    kind[i] = "tb"
                    i += 1
                    continue
        if frame:
            _add_frame(state, frame.group(1), frame.group(2), frame.group(3))
            kind[i] = "tb"
            in_traceback = True
            state.sections.add("traceback")
            i += 1
            continue
        if in_traceback and first == "-" and old_ipython_frame:
            arrow = _ARROW_LINE.match(stripped)
            if arrow and state.frames and state.frames[-1].line is None:
                state.frames[-1] = state.frames[-1].model_copy(update={"line": int(arrow.group(1))})
        m = (
            _EXC_LINE.match(stripped)
            if (first.isalpha() or first == "_") and (in_traceback or pending_jupyter or ":" in stripped)
            else None
        )
        if m and _exception_type(m.group(2)) and (m.group(3) is not None or in_traceback or pending_jupyter):
            if m.group(3) is None and ":" not in stripped and not in_traceback and not pending_jupyter:
                i += 1
                continue
            message_lines = [m.group(3) or ""]
            kind[i] = "tb"
            j = i + 1
            while j < n and j - i <= 30 and sum(len(x) for x in message_lines) < 5000:
                nxt_stripped = lines[j]
                if not nxt_stripped or _ends_message(nxt_stripped):
                    break
                message_lines.append(nxt_stripped)
                kind[j] = "tb"
                j += 1
            exc_type = m.group(2)
            _add_exception(state, exc_type, "\n".join(message_lines).strip())
            if pending_jupyter == exc_type:
                pending_jupyter = None
            in_traceback = False
            old_ipython_frame = False
            state.sections.add("traceback")
            i = j
            continue
        if in_traceback:
            kind[i] = "tb"  # source lines, carets, ipython context lines
        i += 1
    if pending_jupyter:
        _add_exception(state, pending_jupyter, "")


def _ends_message(stripped: str) -> bool:
    if _TB_HEADER in stripped or stripped.startswith(_CHAIN) or _STOP_MESSAGE.match(stripped):
        return True
    if stripped.startswith(('File "', "File ", "Cell In")) and (_FRAME_STD.match(stripped) or _FRAME_JUPYTER.match(stripped)):
        return True
    m = _EXC_LINE.match(stripped)
    return bool(m and m.group(3) is not None and _exception_type(m.group(2)))


def _add_exception(state: _State, exc_type: str, message: str) -> None:
    info = ExceptionInfo(type=exc_type, message=message)
    if state.exceptions and state.exceptions[-1] == info:
        return  # the same error printed by several ranks
    state.exceptions.append(info)
    state.messages.append(message)
    if "Hint:" in message and "(" in message:  # torch._dynamo wraps the real error: `Hint: ValueError('...')`
        hint = _HINT_EXC.search(message[:MAX_LINE])
        if hint and hint.group(1) != exc_type:
            _add_exception(state, hint.group(1), hint.group(3))


def _exceptions_in_prose(state: _State) -> None:
    """'I get ValueError: ...' inside a sentence, when no exception line was found.

    Also: VS Code's "Exception has occurred: ImportError" with the message on the next line,
    `Hint: ValueError('...')` wrappers (torch._dynamo), and the Trainer's "did not return a
    loss" message quoted without its `ValueError:` prefix.
    """
    for text in state.text_parts:
        lines = text.split("\n")[:200_000]
        for index, line in enumerate(lines):
            line = line[:MAX_LINE]
            if "did not return a loss" in line.lower() and not any("did not return a loss" in m for m in state.messages):
                loss = _LOSS_IN_PROSE.search(line)
                if loss:
                    message = _strip_quoting(loss.group(0))
                    _add_exception(state, "ValueError", message[0].upper() + message[1:])
                    state.sections.add("traceback")
                    continue
            if "Error" not in line and "Exception" not in line:
                known = _KNOWN_MESSAGE.search(line)
                if known:  # a well-known library message quoted without its type
                    message = _strip_quoting(line[known.start():])
                    _add_exception(state, _KNOWN_TYPES[known.lastgroup or ""], message)
                    state.sections.add("traceback")
                    if len(state.exceptions) >= 5:
                        return
                continue
            vscode = _VSCODE_EXC.match(line.strip())
            if vscode:
                following = lines[index + 1][:MAX_LINE].strip() if index + 1 < len(lines) else ""
                _add_exception(state, vscode.group(2), following)
                state.sections.add("traceback")
                continue
            hint = _HINT_EXC.search(line) if "(" in line else None
            if hint:
                _add_exception(state, hint.group(1), hint.group(3))
                state.sections.add("traceback")
                continue
            m = _EXC_IN_PROSE.search(line)
            if m and "Warning" not in m.group(2):
                _add_exception(state, m.group(2), _strip_quoting(m.group(3)))
                state.sections.add("traceback")
                if len(state.exceptions) >= 5:
                    return


def _strip_quoting(message: str) -> str:
    """A message quoted in prose without the quotes around it (`...`, "..."); a closing single quote
    that pairs with one inside the message ('masked_lm_labels') stays."""
    message = message.strip().rstrip("`\"")
    if message.endswith("'") and message.count("'") % 2:
        message = message[:-1]
    return message.rstrip("`\"")


_KNOWN_TYPES = {
    "value": "ValueError", "runtime": "RuntimeError", "index": "IndexError", "type": "TypeError",
    "zero": "ZeroDivisionError",
}
_KNOWN_MESSAGE = re.compile(
    r"(?P<value>Unable to create tensor\b|Expected input batch_size \(|Attempting to unscale FP16 gradients"
    r"|too many dimensions 'str'|expected sequence of length \d+ at dim \d+"
    r"|Cannot handle batch sizes > 1 if no padding token|Asking to pad but the tokenizer does not have a padding token)"
    r"|(?P<runtime>element 0 of tensors does not require grad|expected scalar type \w+ but found \w+|device-side assert triggered"
    r"|result type \w+ can't be cast to the desired output type)"
    r"|(?P<index>Target -?\d+ is out of bounds|Invalid key: \d+ is out of bounds for size)"
    r"|(?P<type>\w*forward\(\) got an unexpected keyword argument)"
    r"|(?P<zero>All labels in your dataset are -100)"
)
"""Library messages users quote without the exception type in front ("I get `Unable to create tensor ...`")."""
_VSCODE_EXC = re.compile(r"^Exception has occurred: ((?:[A-Za-z_]\w{0,40}\.){0,6}([A-Za-z_]\w{0,60}))\s*$")
_HINT_EXC = re.compile(r"\b([A-Z]\w{0,60}(?:Error|Exception))\((['\"])(.{1,2000}?)\2\)")
_LOSS_IN_PROSE = re.compile(r"(?:the )?model did not return a loss.{0,2000}", re.IGNORECASE)
_SETUP_LINE = re.compile(
    r"[-*]\s{1,4}[\w .()/?`-]{0,40}\b(?:version|platform|python|gpu|distributed|accelerate|deepspeed|cuda|huggingface|"
    r"safetensors|tensorflow|flax|jax|pytorch|bitsandbytes)\b[\w .()/?`-]{0,30}\s{0,4}:"
    r"|[A-Za-z][\w.\[\],-]{0,60}\s{0,2}==\s{0,2}[\w.+!-]{1,40}$"
    r"|[A-Za-z][\w.-]{0,60}\s{2,}v?\d[\w.+!-]{0,40}(?:\s{2,}\S.{0,200})?$",
    re.IGNORECASE,
)
"""A line of an environment block or a package list (`- PyTorch version (GPU?): 2.5.1`, `trl==0.12.1`,
`peft   0.13.2`): set-up, like pasted code and configs."""


def is_setup_line(line: str) -> bool:
    """Whether a line is a row of an environment block or a package list (set-up, not what went wrong)."""
    return _SETUP_LINE.match(line.strip()) is not None


_FORWARD_OF = re.compile(r"\b([A-Z]\w{0,80}(?:Model|For\w{1,40}|LMHead\w{0,20}))\.forward\(\)")
"""The model class an exception message names (`XForCausalLM.forward() got ...`)."""
_PROSE_MODEL = re.compile(
    r"\b(Auto(?:Peft)?Model(?:For[A-Z]\w{0,40})?|Fast(?:Language|Vision)?Model|[A-Z][A-Za-z0-9]{1,40}"
    r"(?:For(?:CausalLM|SequenceClassification|TokenClassification|MaskedLM|Seq2SeqLM|ConditionalGeneration"
    r"|QuestionAnswering|MultipleChoice|ImageClassification|ImageTextToText|PreTraining|CTC)|LMHeadModel"
    r"|(?<=[a-z0-9])Model))\b"
)
_PROSE_TRAINER = re.compile(r"\b([A-Z][A-Za-z0-9]{0,40}Trainer)\b")
_COMPLETION_COLLATOR_WORDS = re.compile(r"\bcompletion[- ]only(?: LM)? (?:data )?collator\b", re.IGNORECASE)
"""TRL's completion collator named in words ("a completion-only collator")."""
_PROSE_COLLATOR = re.compile(r"\b(DataCollator[A-Za-z0-9]{0,60}|default_data_collator)\b")
_PROSE_FLAG = re.compile(
    r"(?<![\w.])(packing|bf16|fp16|tf32|remove_unused_columns|gradient_checkpointing|completion_only_loss"
    r"|assistant_only_loss|use_reentrant|gradient_accumulation_steps|max_length|max_seq_length|num_labels"
    r"|load_in_4bit|load_in_8bit|overlap_comm|per_device_train_batch_size|padding_free)"
    r"[\"']?\s{0,3}[=:]\s{0,3}(True|False|true|false|\d{1,7})(?![\w.])"
)
_NOT_PROSE_MODEL = frozenset({"PreTrainedModel", "PeftModel", "BaseModel", "TheModel", "MyModel"})
_CLI_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_-]{1,60})(?:(?:=|[ \t]{1,4})(\"[^\"\n]{0,300}\"|'[^'\n]{0,300}'|[^\s\\-][^\s\\]{0,300}))?")
_CLI_LINE = re.compile(r"(?:^|\s)--[a-z]")
_NOT_CLI = re.compile(r"\b(?:pip3?|conda|uv|apt(?:-get)?|git|docker)\s+(?:install|clone|run|pull|add)\b")
_SHELL_VAR = re.compile(r"^(?:export\s{1,4})?([A-Z][A-Z0-9_]{2,40})=(\"[^\"\n]{0,300}\"|'[^'\n]{0,300}'|[^\s;&|]{1,300})\s*$")


def _cli_flags(line: str) -> dict[str, cf.FlagValue]:
    """`--fp16`, `--gradient_accumulation_steps 16`, `--bf16 True` on a launch command line.

    A bare switch means True; hyphens in names become underscores (argparse does the same).
    """
    flags: dict[str, cf.FlagValue] = {}
    if _NOT_CLI.search(line):
        return flags
    for m in _CLI_FLAG.finditer(line):
        name, raw = m.group(1).replace("-", "_"), m.group(2)
        if raw is None:
            flags.setdefault(name, True)
            continue
        value = raw.strip("\"'")
        lowered = value.lower()
        if lowered in ("true", "false"):
            flags.setdefault(name, lowered == "true")
        elif _NUMBER.match(value) and not lowered.startswith(("nan", "inf")):
            number = float(value)
            flags.setdefault(name, int(number) if number.is_integer() and "." not in value and "e" not in lowered else number)
        else:
            flags.setdefault(name, value[:500])
    return flags


def _prose_facts(state: _State) -> None:
    """Model classes, trainer, collator and flags named in sentences or stray lines.

    Pasted code is read with `ast`; this pass catches what users write in prose
    ("I'm using BertForSequenceClassification with num_labels=3", "GRPOTrainer with the default
    config", "SFTConfig(packing=True)"). Values already read from code win.
    """
    facts = state.facts
    found = cf.CodeFacts()
    for line in state.prose_lines[:20_000]:
        if "Model" in line or "For" in line:
            for m in _PROSE_MODEL.finditer(line):
                name = m.group(1)
                if name not in _NOT_PROSE_MODEL and not cf.NOT_MODEL_CLASS.search(name):
                    cf._extend(found.model_classes, [name])
        if "Trainer" in line:
            for m in _PROSE_TRAINER.finditer(line):
                if not cf.NOT_TRAINER.search(m.group(1)) and found.trainer is None:
                    found.trainer = m.group(1)
        if "ollator" in line:
            m = _PROSE_COLLATOR.search(line)
            if m and found.collator is None:
                found.collator = m.group(1)
            elif found.collator is None and _COMPLETION_COLLATOR_WORDS.search(line):
                found.collator = "DataCollatorForCompletionOnlyLM"
        if "=" in line and line[:1].isupper() or line.startswith("export "):
            m = _SHELL_VAR.match(line)
            if m:  # `MODEL_MAX_LEN=512` in a launch script: a setting named in upper case
                found.add(cf.config_facts(_cli_flags(f"--{m.group(1).lower()} {m.group(2)}")))
        if "--" in line and _CLI_LINE.search(line):  # a launch command's settings read like a config's
            found.add(cf.config_facts(_cli_flags(line)))
        if ("=" in line or ":" in line) and "Warning:" not in line:  # a warning's advice is not a setting
            seen: dict[str, set[str]] = {}
            for m in _PROSE_FLAG.finditer(line):
                seen.setdefault(m.group(1), set()).add(m.group(2).lower())
            for name, values in seen.items():
                if len(values) == 1:  # `use_reentrant=True or use_reentrant=False` names no setting
                    value = values.pop()
                    found.flags.setdefault(name, value == "true" if value in ("true", "false") else int(value))
    if found.model_classes or found.trainer or found.collator or found.flags or found.model_names or found.uses_peft:
        cf._finish_flags(found.flags)
        facts.add(found)
        if any(n.startswith(("PeftModel", "AutoPeftModel")) for n in found.model_classes):
            facts.uses_peft = True


def _loss_message_keys(messages: Iterable[str]) -> tuple[list[str] | None, list[str] | None]:
    for message in messages:
        flat = " ".join(message.split())
        if "only the following keys" not in flat and "did not return a loss" not in flat:
            continue
        returned = _RETURNED_KEYS.search(flat)
        received = _RECEIVED.search(flat)
        return (
            _key_list(returned.group(1)) if returned else None,
            _key_list(received.group(1)) if received else None,
        )
    return None, None


def _key_list(text: str) -> list[str]:
    items = [item.strip(" .[]'\"") for item in text.split(",")]
    return [item for item in items if item]


# --------------------------------------------------------------------------- code


def _read_code(state: _State, code: str) -> bool:
    facts = cf.code_facts(code)
    found = facts.parsed or any(
        (facts.model_classes, facts.trainer, facts.collator, facts.flags, facts.calls, facts.defined_functions)
    )
    if found:
        state.sections.add("code")
        state.facts.add(facts)
    return found


def _is_code_start(line: str) -> bool:
    line = line[:MAX_LINE]
    return bool(_CODE_STRONG.match(line) or _CODE_ASSIGN.match(line) or _CODE_CALL.match(line))


def _find_code_runs(state: _State, lines: list[str], stripped: list[str], kind: list[str]) -> None:
    """Unfenced Python: a code-like line plus following code-like, indented or closing lines."""
    n = len(lines)
    i = 0
    while i < n:
        text = stripped[i]
        first = text[:1]
        if (
            kind[i] != "text"
            or not first
            or not (first == "@" or (first.isalpha() or first == "_") and _MAYBE_CODE.search(text))
            or not _is_code_start(lines[i])
        ):
            i += 1
            continue
        line = lines[i]
        start, strong, j = i, bool(_CODE_STRONG.match(line)), i + 1
        count = 1
        while j < n and kind[j] == "text":
            text = stripped[j]
            if not text or lines[j][:1] in (" ", "\t") or text[0] in ")]}#":
                j += 1
                continue
            if (text[0].isalpha() or text[0] in "_@") and _is_code_start(lines[j][:MAX_LINE]):
                strong = strong or bool(_CODE_STRONG.match(lines[j][:MAX_LINE]))
                count += 1
                j += 1
                continue
            break
        end = j
        while end > start and not stripped[end - 1]:
            end -= 1
        if strong or count >= 2 or "(" in line or "=" in line:
            if _read_code(state, "\n".join(lines[start:end])) or end - start >= 50:
                kind[start:end] = ["code"] * (end - start)
        i = max(j, i + 1)


# ------------------------------------------------------------------------- configs


def _load_yaml(text: str) -> object:
    import yaml  # imported here: only configs need it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except Exception:  # noqa: BLE001 - yaml raises many kinds
        return None


def _config_mapping(text: str) -> dict | None:
    if len(text) > MAX_CONFIG_CHARS:
        return None
    stripped = text.strip()
    value: object = None
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
    if value is None:
        value = _load_yaml(text)
    if isinstance(value, dict) and value:
        return value
    return None


def _read_config(state: _State, text: str) -> bool:
    mapping = _config_mapping(text)
    if mapping is None or _is_log_dict(mapping):
        return False
    state.sections.add("config")
    state.facts.add(cf.config_facts(mapping))
    if "zero_optimization" in mapping:
        state.facts.flags.setdefault("deepspeed", True)
    return True


class _BraceBlocks:
    """Where a `{ ... }` block that starts at line i ends, for every i in linear total time.

    A block runs until the braces opened since line i are closed again (or MAX_CONFIG_CHARS of
    lines were read). Scanning forward from every candidate start would be quadratic on a
    paste of thousands of unclosed `{` lines; prefix sums of the brace balance and of the line
    sizes answer each start with a table lookup and a bisection instead.
    """

    def __init__(self, lines: list[str]) -> None:
        n = len(lines)
        balance = [0] * (n + 1)
        sizes = [0] * (n + 1)
        for k, line in enumerate(lines):
            balance[k + 1] = balance[k] + line.count("{") - line.count("}")
            sizes[k + 1] = sizes[k] + len(line)
        closes = [n + 1] * (n + 1)  # the first j > i with balance[j] <= balance[i]
        stack: list[int] = []
        for k in range(n, -1, -1):
            while stack and balance[stack[-1]] > balance[k]:
                stack.pop()
            closes[k] = stack[-1] if stack else n + 1
            stack.append(k)
        self.n, self.balance, self.sizes, self.closes = n, balance, sizes, closes

    def end(self, i: int) -> tuple[int, bool]:
        """(the line after the block, whether its braces closed); the scan stops at the size cap."""
        capped = bisect_left(self.sizes, self.sizes[i] + MAX_CONFIG_CHARS, i + 1)
        close = self.closes[i]
        if close <= min(capped, self.n):
            return close, True
        j = min(capped, self.n)
        return j, self.balance[j] - self.balance[i] == 0


def _read_json_fragment(state: _State, lines: list[str], i: int, blocks: _BraceBlocks) -> int:
    """A JSON member list without its outer braces (a DeepSpeed snippet); returns the line after it, or i."""
    j, closed = blocks.end(i)
    if not closed:
        return i
    body = "\n".join(lines[i:j]).strip().rstrip(",")
    try:
        value = json.loads("{" + body + "}")
    except ValueError:
        return i
    if not isinstance(value, dict) or _is_log_dict(value):
        return i
    state.sections.add("config")
    state.facts.add(cf.config_facts(value))
    if "zero_optimization" in value:
        state.facts.flags.setdefault("deepspeed", True)
    return j


def _is_log_dict(mapping: dict) -> bool:
    return any(k in mapping for k in ("loss", "eval_loss", "train_loss", "grad_norm")) and (
        "epoch" in mapping or "learning_rate" in mapping or "step" in mapping or len(mapping) <= 6
    )


def _find_configs(state: _State, lines: list[str], stripped_lines: list[str], kind: list[str]) -> None:
    """Unfenced YAML (3+ `key: value` lines) and JSON objects that load as a mapping."""
    n = len(lines)
    blocks: _BraceBlocks | None = None
    i = 0
    while i < n:
        stripped = stripped_lines[i]
        if kind[i] != "text" or not stripped or not (
            stripped[0] in '{"' or (stripped[0].isalpha() or stripped[0] == "_") and ":" in stripped
        ):
            i += 1
            continue
        line = lines[i][:MAX_LINE]
        if stripped.startswith('"') and '":' in stripped[:100] and "{" in stripped:
            blocks = blocks or _BraceBlocks(lines)
            j = _read_json_fragment(state, lines, i, blocks)
            if j > i:
                kind[i:j] = ["config"] * (j - i)
                i = j
                continue
        if stripped == "{" or stripped.startswith('{"') and not _LOSS.search(stripped.lower()):
            blocks = blocks or _BraceBlocks(lines)
            j, closed = blocks.end(i)
            if closed and _read_config(state, "\n".join(lines[i:j])):
                kind[i:j] = ["config"] * (j - i)
                i = j
                continue
        m = _YAML_KEY.match(line)
        if m and m.group(1) not in _NOT_CONFIG_KEYS:
            j, keys = i, set()
            while j < n and kind[j] == "text":
                candidate = lines[j][:MAX_LINE]
                if not stripped_lines[j]:
                    j += 1
                    continue
                key = _YAML_KEY.match(candidate)
                if key:
                    keys.add(key.group(1))
                elif candidate.strip() and not _YAML_ITEM.match(candidate) and not candidate.lstrip().startswith("#"):
                    if not candidate[:1].isspace():
                        break
                j += 1
            if len(keys) >= 3 and not keys & _NOT_CONFIG_KEYS and _read_config(state, "\n".join(lines[i:j])):
                kind[i:j] = ["config"] * (j - i)
                i = j
                continue
            # a later start inside the same run of key lines sees a subset of its keys: go past
            # the run, so that many key-like lines cost linear time, not quadratic
            i = max(i + 1, j)
            continue
        i += 1


# ----------------------------------------------------------------- logs, versions


def _number(text: str) -> float | None:
    lowered = text.lower().lstrip("+")
    if lowered in ("nan", "-nan"):
        return math.nan
    try:
        return float(lowered)
    except ValueError:
        return None


_FEATURES = re.compile(r"\b(?:features|column_names|columns)\W{0,4}[:=]?\s{0,4}\[([^\]\n]{1,2000})\]")
_QUOTED_NAME = re.compile(r"['\"]([A-Za-z_][\w.-]{0,60})['\"]")
_IGNORED_COLUMNS = re.compile(r"have been ignored: ([\w, ]{1,2000}?)\.(?: |$)")
_FRAME_HEADER = re.compile(r"^(?:[A-Za-z_][\w.]{0,60})(?:\s{2,}[A-Za-z_][\w.]{0,60}){0,11}$")
_FRAME_ROW = re.compile(r"^\d{1,9}\s{1,40}\S")


def _read_columns(state: _State, lines: list[str], i: int, stripped: str) -> None:
    """Dataset columns from `print(dataset)` (`features: [...]`), from Trainer's notice about the columns it
    ignored (`... have been ignored: text, sentiment.`) and from a pandas preview's header."""
    if "features" in stripped or "column" in stripped:
        m = _FEATURES.search(stripped)
        if m:
            cf._extend(state.facts.dataset_columns, _QUOTED_NAME.findall(m.group(1))[:50])
        elif m := _IGNORED_COLUMNS.search(stripped):
            cf._extend(state.facts.dataset_columns, _key_list(m.group(1))[:50])
    if i and _FRAME_ROW.match(stripped) and not _FRAME_ROW.match(lines[i - 1]) and _FRAME_HEADER.match(lines[i - 1]):
        header = lines[i - 1].split()
        if 1 <= len(header) <= 12 and not any(h in ("Step", "Epoch", "Package") for h in header):
            cf._extend(state.facts.dataset_columns, header)


def _read_text_lines(state: _State, lines: list[str], kind: list[str]) -> None:
    """Versions, log values, notebook tables, warnings and prose; ``lines`` are stripped."""
    table: list[str] | None = None
    pip_header = False
    pip_run: list[tuple[str, str]] = []
    for i, stripped in enumerate(lines):
        if not stripped:
            continue
        if kind[i] != "tb" and ("features" in stripped or "column" in stripped or stripped[0].isdigit()):
            _read_columns(state, lines, i, stripped)
        if kind[i] == "code" or kind[i] == "config":
            if kind[i] == "code" and len(stripped) < 80 and (_BARE_FLAG_LINE.match(stripped) or _SHELL_VAR.match(stripped)):
                state.prose_lines.append(stripped)  # `bf16=True` on its own line
            _flush_pip(state, pip_run, pip_header)
            table, pip_header, pip_run = None, False, []
            continue
        in_tb = kind[i] == "tb"
        if not in_tb and len(state.prose_lines) < 20_000:
            state.prose_lines.append(stripped[:MAX_LINE])
        lowered = stripped.lower()
        digit = _DIGIT.search(stripped) is not None
        log_line = stripped.startswith(("{'", '{"')) or "%|" in stripped or "it/s]" in stripped
        # pip list / conda list rows
        if digit and not in_tb and not log_line:
            if pip_header or stripped[0].isalpha():
                pip_row = _PIP_ROW.match(stripped)
                if pip_row and not stripped.startswith(("Step", "Epoch")) and (pip_header or "." in pip_row.group(2)):
                    pip_run.append((pip_row.group(1), pip_row.group(2)))
                    continue
        elif pip_header and set(stripped) <= {"-", " ", "="}:
            continue
        elif stripped.startswith("Package") and _PIP_HEADER.match(stripped):
            _flush_pip(state, pip_run, False)
            pip_header, pip_run = True, []
            continue
        if pip_run:
            _flush_pip(state, pip_run, pip_header)
            pip_run, pip_header = [], False
        if digit and not in_tb and not log_line:
            _read_versions(state, stripped, lowered)
        # notebook tables and log lines
        if table is not None:
            if (digit or not stripped[0].isalnum()) and _read_table_row(state, table, stripped):
                continue
            table = None
        if not in_tb and "training loss" in lowered and "=" not in stripped and ":" not in stripped:
            table = [t.lower() for t in _TABLE_COLUMN.findall(stripped)]
            state.sections.add("log")
            continue
        if not in_tb and ("loss" in lowered or "grad_norm" in lowered):
            log_line = _read_losses(state, lowered) or log_line
        if not in_tb:
            if "log" not in state.sections and _LOG_MARKS.search(stripped):
                state.sections.add("log")
            if digit and " = " in stripped and ("steps = " in lowered or "per device = " in lowered):
                for rx, flag in (
                    (_GA_STEPS, "gradient_accumulation_steps"),
                    (_BATCH_PER_DEVICE, "per_device_train_batch_size"),
                ):
                    m = rx.search(stripped)
                    if m:
                        state.log_flags.setdefault(flag, int(m.group(1)))
            if "`" in stripped:
                _read_inline_code(state, stripped)
        # warnings, prose
        if "Warning" in stripped or "WARNING" in stripped or "warning" in stripped or "Could not find" in stripped or (
            "ignored" in stripped
        ):
            _read_warning(state, stripped)
        elif not in_tb and not log_line and "prose" not in state.sections and _PROSE.match(stripped):
            words = stripped.split()
            if len(words) >= 4 and len(_WORD.findall(stripped)) * 2 >= len(words):
                state.sections.add("prose")
    _flush_pip(state, pip_run, pip_header)


def _read_inline_code(state: _State, stripped: str) -> None:
    """Code in `backticks` inside a sentence: `DataCollatorForSeq2Seq(tok)`, `packing=True`."""
    for m in _INLINE_CODE.finditer(stripped):
        span = m.group(1)
        setting = cf.assignment_flag(span)
        if setting:
            state.facts.flags.setdefault(*setting)
            state.facts.add(cf.CodeFacts(flags=cf.config_flags({setting[0]: setting[1]})))
            continue
        if "(" in span:
            facts = cf.code_facts(span)
            if facts.parsed and (facts.flags or facts.collator or facts.model_classes or facts.trainer or facts.calls):
                state.facts.add(facts)
                state.sections.add("code")


def _flush_pip(state: _State, rows: list[tuple[str, str]], header: bool) -> None:
    if not rows or (not header and len(rows) < 3):
        return
    state.sections.add("pip")
    for name, version in rows:
        state.strong_versions[_version_key(name)] = version


def _version_key(name: str) -> str:
    key = re.sub(r"[-_.\s]+", "-", name.strip().lower())
    return _VERSION_ALIASES.get(key, key)


def _clean_version(version: str) -> str:
    return version.rstrip(".,;:)")


def _read_versions(state: _State, stripped: str, lowered: str) -> None:
    if "==" in stripped:
        m = _FREEZE_ROW.match(stripped)
        if m:
            state.strong_versions[_version_key(m.group(1))] = _clean_version(m.group(2))
            state.sections.add("pip")
            return
    if "ersion" in stripped:
        m = _ENV_ROW.match(stripped)
        if m:
            value = m.group(2)
            if value[:1].isdigit():
                name = m.group(1).strip().strip("`")
                key = {"huggingface_hub": "huggingface-hub", "hf hub": "huggingface-hub"}.get(name.lower(), name)
                state.strong_versions[_version_key(key)] = _clean_version(value)
            state.sections.add("env")
            return
    if "unsloth" in lowered or "O^O" in stripped or "==((" in stripped or "\\   /|" in stripped or (
        "toolkit" in lowered or "bfloat16 =" in lowered
    ):
        if _read_banner(state, stripped):
            return
    if "." in stripped and _VERSION_HINT.search(lowered):
        if " to " in lowered:
            for m in _UPGRADE_VERSION.finditer(lowered):
                state.weak_versions[_version_key(m.group(1))] = _clean_version(m.group(2))
        for m in _PROSE_VERSION.finditer(lowered):
            state.weak_versions.setdefault(_version_key(m.group(1)), _clean_version(m.group(2)))


def _read_banner(state: _State, stripped: str) -> bool:
    """Unsloth's start-up banner: library versions, the CUDA toolkit and the patched model family."""
    found = False
    for m in _BANNER_UNSLOTH.finditer(stripped):
        state.strong_versions["unsloth"] = _clean_version(m.group(1))
        found = True
    m = _BANNER_FAMILY.search(stripped)
    if m:
        state.banner_family = state.banner_family or m.group(1)
        found = True
    for m in _BANNER_LIB.finditer(stripped):
        state.strong_versions[_version_key(m.group(1))] = _clean_version(m.group(2))
        found = True
    m = _BANNER_CUDA.search(stripped)
    if m:
        state.strong_versions["cuda"] = _clean_version(m.group(1))
        found = True
    if found:
        state.sections.add("env")
    return found


_PROSE_LOSS = re.compile(
    r"\b(?:loss|losses|reward|rewards)\b[^\n.;]{0,30}?\b(?:is|are|was|were|becomes?|became|goes|go|went|turns?|turned|drops?|"
    r"dropped|falls?|fell|stays?|stayed|gets?|got|getting|shows?|showed|showing|outputs?|returns?|reaches|reached|=)"
    r"[^\n.;]{0,12}?\b(?:to |at |as |exactly )?(nan|inf|zero|0(?:\.0+)?)(?![\w.])"
    r"|\b(?:training |train |eval_)?loss\s{0,2}[:=]?\s{0,2}(nan|0(?:\.0+)?)(?![\w.%])"
    r"|\b(nan|zero)\s+(?:training\s+|train\s+)?(?:loss|losses|rewards?)\b|\b(nan|inf)\s+(?:for|as|in)\s+(?:the\s+)?(?:loss|rewards?)\b"
    r"|(?:loss|损失)[^\n。]{0,10}?(?:变成|变为|为|是|一直是|全是|都是|降到|降为)\s*(nan|0)(?![\w.])",
    re.IGNORECASE,
)
"""A loss (or reward) the user reports in words: 'the loss becomes nan', 'loss drops to zero', 'nan loss'."""


_NEGATED = re.compile(r"\b(?:not|never|no longer)\b|n't|不是|没有", re.IGNORECASE)
_APPROXIMATE = re.compile(r"\b(?:almost|nearly|close to|near|approximately|about|roughly|virtually|practically)\s+(?:to\s+)?$|~\s*$", re.IGNORECASE)
"""A qualifier right before the value: 'drops to almost zero' reports a small loss, not a zero one."""


def _prose_losses(parts: list[str]) -> list[float]:
    """Losses named in prose, read only when no Trainer log line gave one."""
    found: list[float] = []
    for part in parts:
        if "nan" not in part.lower() and "zero" not in part.lower() and "0" not in part:
            continue
        for m in _PROSE_LOSS.finditer(part[:200_000]):
            if _NEGATED.search(part[max(0, m.start() - 16):m.end()]):
                continue
            value_at = m.lastindex or 0  # every group of _PROSE_LOSS is the value; one matches
            if _APPROXIMATE.search(part[m.start():m.start(value_at)]):
                continue
            word = m.group(value_at).lower()
            found.append(math.nan if word == "nan" else math.inf if word == "inf" else 0.0)
            if len(found) >= 4:
                return found
    return found


def _read_losses(state: _State, lowered: str) -> bool:
    found = False
    for m in _LOSS.finditer(lowered):
        start = m.start()
        if start and (lowered[start - 1].isalnum() or lowered[start - 1] == "_"):
            continue
        value = _number(m.group(2) or m.group(3))
        if value is None:
            continue
        key = m.group(1)
        if key in ("grad_norm", "grad norm"):
            state.grad_norms.append(value)
        elif key.startswith(("eval", "val")):
            state.eval_losses.append(value)
        else:
            state.losses.append(value)
        found = True
    if found:
        state.sections.add("log")
    return found


def _read_table_row(state: _State, columns: list[str], stripped: str) -> bool:
    """One row of a notebook `Step | Training Loss | Validation Loss` table; False ends the table."""
    if set(stripped) <= {"|", "-", ":", " ", "+", "="}:
        return True
    cells = [c for c in _TABLE_SPLIT.split(stripped.replace("No log", "-").replace("no log", "-")) if c]
    if len(cells) != len(columns) or not cells or not cells[0].replace(".", "").isdigit():
        return False
    for column, cell in zip(columns, cells):
        if cell == "-" or not _NUMBER.match(cell):
            continue
        value = _number(cell)
        if value is None:
            continue
        if column == "training loss":
            state.losses.append(value)
        elif column in ("validation loss", "eval loss", "evaluation loss"):
            state.eval_losses.append(value)
        elif column in ("grad norm", "gradient norm"):
            state.grad_norms.append(value)
    return True


def _read_warning(state: _State, stripped: str) -> None:
    if not (
        _WARNING_TYPE.search(stripped)
        or _WARNING_LOG.search(stripped)
        or any(phrase in stripped for phrase in _WARNING_PHRASES)
    ):
        return
    state.sections.add("warnings")
    state.warning_count += 1
    text = stripped if len(stripped) <= 500 else stripped[:497] + "..."
    if text not in state.warnings and len(state.warnings) < MAX_WARNINGS:
        state.warnings.append(text)
