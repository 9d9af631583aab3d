"""Judge runs: did the baseline fail the way the user's run did, and does a fix really train?

Both functions take a run record (a `bot.models.RunRecord` as a dict) and return
``(verdict, reason)``; the reason is shown to the user.
"""

from __future__ import annotations

import math
import re

from bot.models import Report
from knowledge.schema import Expect

RANDOM_GUESS_LOSS = math.log(512)
"""Cross-entropy of a uniform guess over the tiny tokenizer's 512 tokens (about 6.24)."""
HIGH_LOSS = 1.5 * RANDOM_GUESS_LOSS
INCIDENTAL_KEYS = {"past_key_values", "cache", "num_items_in_batch", "token_type_ids", "attention_mask"}
"""Keys that differ between stacks or tokenizers, not between causes: transformers 4.x returns
past_key_values, 5.x cache; Trainer forwards num_items_in_batch to models whose forward takes
**kwargs; BERT-style tokenizers add token_type_ids, the tiny model's tokenizer does not; some
tokenizers (SigLIP's) return no attention_mask, the tiny model's always does."""
_KEYS_RE = re.compile(r"only the following keys: ([\w,]*)\. For reference, the inputs it received are ([\w,]*)\.")


def _is_nan_or_zero(value: float | None) -> bool:
    return value is not None and (math.isnan(value) or value == 0.0)


def _describe(record: dict) -> str:
    exc = record.get("exception")
    if exc:
        return f"raised {exc['type']}: {_short(exc.get('message', ''))}"
    return f"trained without an exception (loss {_fmt(record.get('loss'))}, {record.get('supervised_tokens')} supervised tokens)"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _key_sets(message: str) -> tuple[set[str], set[str]] | None:
    """Keys returned and inputs received, from 'did not return a loss' messages; incidental keys dropped."""
    found = _KEYS_RE.search(message)
    if not found:
        return None
    returned, received = ({k for k in group.split(",") if k} - INCIDENTAL_KEYS for group in found.groups())
    return returned, received


def _keys_match(message: str, report: Report | None) -> tuple[bool, str]:
    if report is None or (report.returned_keys is None and report.received_inputs is None):
        return True, ""
    ours = _key_sets(message)
    if ours is None:
        return True, ""
    returned, received = ours
    theirs_returned = set(report.returned_keys or []) - INCIDENTAL_KEYS
    theirs_received = set(report.received_inputs or []) - INCIDENTAL_KEYS
    if report.returned_keys is not None and returned != theirs_returned:
        return False, (
            f"the tiny model returned {','.join(sorted(returned))} but yours returned "
            f"{','.join(sorted(theirs_returned))}"
        )
    if report.received_inputs is not None and received != theirs_received:
        return False, (
            f"the tiny model received {','.join(sorted(received))} but yours received "
            f"{','.join(sorted(theirs_received))}"
        )
    return True, " with the same keys returned and inputs received"


def _expected_exception(record: dict, exception_type: str | None, message: str | None, report: Report | None):
    exc = record.get("exception")
    wanted = " ".join(x for x in (exception_type, f"/{message}/" if message else None) if x)
    if not exc:
        return False, f"expected {wanted}, but the run {_describe(record)}"
    if exception_type and not re.fullmatch(exception_type, exc["type"]):
        return False, f"expected {exception_type}, but the run {_describe(record)}"
    if message and not re.search(message, exc.get("message", ""), re.IGNORECASE | re.DOTALL):
        return False, f"expected a message matching /{message}/, but the run {_describe(record)}"
    same_keys, detail = _keys_match(exc.get("message", ""), report)
    if not same_keys:
        return False, f"same exception, but {detail}"
    missing = _missing_key(exc, report)
    if missing:
        return False, f"same exception, but {missing}"
    return True, f"{exc['type']} as in the report{detail}: {_short(exc.get('message', ''))}"


def _missing_key(exc: dict, report: Report | None) -> str:
    """A KeyError names the missing key: the run must miss the same key as the report, when it shows one."""
    if exc["type"] != "KeyError" or report is None:
        return ""
    theirs = [e.message.strip().strip("'\"") for e in report.exceptions if e.type == "KeyError" and e.message.strip()]
    ours = exc.get("message", "").strip().strip("'\"")
    if theirs and ours and ours not in theirs:
        return f"the run missed the key {ours!r} and yours missed {theirs[-1]!r}"
    return ""


def _symptom(record: dict, symptom: str) -> tuple[bool, str]:
    if record.get("exception"):
        return False, f"expected the silent symptom {symptom}, but the run {_describe(record)}"
    losses = [x for x in record.get("losses") or [] if x is not None]
    supervised = record.get("supervised_tokens")
    if symptom == "loss_zero_or_nan":
        if supervised == 0:
            return True, f"no label was supervised, so the loss is empty (logged as {_fmt(record.get('loss'))})"
        if any(_is_nan_or_zero(x) for x in losses) or _is_nan_or_zero(record.get("loss")):
            return True, f"the loss was 0 or NaN (step losses {[_fmt(x) for x in losses]})"
        return False, f"the loss stayed finite and non-zero ({_fmt(record.get('loss'))}, {supervised} supervised tokens)"
    if symptom == "no_supervised_tokens":
        if supervised == 0:
            return True, "every label was -100: no token was supervised"
        return False, f"{supervised} tokens were supervised"
    if symptom == "params_unchanged":
        if record.get("params_changed") is False:
            return True, "training ran but the trainable weights never changed"
        return False, "the trainable weights changed"
    if symptom == "loss_high":
        high = [x for x in losses if math.isfinite(x) and x > HIGH_LOSS]
        if high:
            return True, f"the loss ({_fmt(max(high))}) is far above a random guess ({RANDOM_GUESS_LOSS:.2f})"
        return False, f"the loss ({_fmt(record.get('loss'))}) is not above {HIGH_LOSS:.2f}"
    raise ValueError(f"unknown symptom {symptom!r}")


def baseline_reproduces(record: dict, expect: Expect, report: Report | None) -> tuple[bool, str]:
    """Did the baseline run fail the way the entry expects (and the report shows)?

    An expected exception must have the same type and a message matching the entry's
    regex; when the report lists the keys the model returned or the inputs it received,
    the run's message must show the same sets (in any order, incidental keys aside). A silent
    symptom is read from the raw step losses and the supervised-token count, since
    Trainer logs an all-masked NaN loss as 0.0. With no expectation in the entry, the run
    must raise the report's last exception type.
    """
    if expect.exception_type or expect.message:
        return _expected_exception(record, expect.exception_type, expect.message, report)
    if expect.symptom:
        return _symptom(record, expect.symptom)
    if report is not None and report.exceptions:
        return _expected_exception(record, report.exceptions[-1].type, None, report)
    return False, f"the entry says nothing to expect; the run {_describe(record)}"


def fix_verified(record: dict, *, responses_only: bool) -> tuple[bool, str]:
    """Does the run prove the fix: it trains, the loss is finite and > 0, labels are
    supervised, the weights change, and (for responses-only fixes) no prompt token is?"""
    if not record.get("ok"):
        return False, f"still fails: it {_describe(record)}"
    loss = record.get("loss")
    losses = [x for x in record.get("losses") or [] if x is not None]
    if loss is None or not math.isfinite(loss) or loss <= 0:
        return False, f"the loss is {_fmt(loss)}, not a finite positive number"
    if any(not math.isfinite(x) for x in losses):
        return False, f"a step loss is not finite ({[_fmt(x) for x in losses]})"
    supervised = record.get("supervised_tokens")
    if not supervised:
        return False, "no label token is supervised (every label is -100)"
    if not record.get("params_changed"):
        return False, "the trainable weights did not change"
    reason = f"trains: loss {_fmt(loss)}, {supervised} supervised tokens, weights changed"
    if responses_only:
        prompt = record.get("prompt_tokens_supervised")
        if prompt is None:
            return False, reason + ", but whether prompt tokens are masked could not be checked"
        if prompt > 0:
            return False, reason + f", but {prompt} prompt tokens are supervised too (not responses only)"
        reason += ", prompt tokens masked"
    return True, reason
