"""Remove secrets (tokens, API keys, passwords) from pasted text before anything reads it.

Every secret becomes ``[REDACTED:<kind>]``. The patterns use only bounded or single-class
quantifiers, so the time stays linear in the size of the text.

>>> redact('login(token="hf_abcdefghijklmnopqrstuvwxyz0123456789")')
('login(token="[REDACTED:hf_token]")', ['hf_token'])
"""

from __future__ import annotations

import re
from collections.abc import Callable

_Rule = tuple[str, re.Pattern[str], int]
"""(kind, pattern, group): the group of the match that holds the secret (0: all of it)."""

_TOKEN_KEY = (
    r"(?:(?:auth|access|api|hf|hub|bot|github|gh|slack|discord|secret|refresh|bearer|wandb"
    r"|huggingface|hugging_face_hub|hugging_face|personal|session|oauth|client)[_-]?)?token"
)
_SECRET_KEY = r"(?:[A-Za-z0-9]{1,20}[_-])?(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]secret|access[_-]key|private[_-]key)"
_PASSWORD_KEY = r"password|passwd|pwd"

_RULES: list[_Rule] = [
    ("hf_token", re.compile(r"\bhf_[A-Za-z0-9]{20,}"), 0),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"), 0),
    ("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), 0),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"), 0),
    ("slack_token", re.compile(r"\b(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,}"), 0),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), 0),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), 0),
    (
        "aws_secret_key",
        re.compile(r"(?i)\baws_secret_access_key[\"']?\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
        1,
    ),
    ("wandb_key", re.compile(r"(?i)\bWANDB_API_KEY[\"']?\s*[=:]\s*[\"']?([0-9a-f]{40})\b"), 1),
    ("wandb_key", re.compile(r"\bwandb\.login\([^)\n]{0,200}?\bkey\s*=\s*[\"']([^\"'\n]{8,})[\"']"), 1),
    ("url_password", re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@\[\]]{1,100}:([^\s@/\[\]]{1,200})@"), 1),
]

_GENERIC = re.compile(
    r"(?i)(?<![\w-])(" + _TOKEN_KEY + "|" + _SECRET_KEY + "|" + _PASSWORD_KEY + r")[\"']?"
    r"(\s{0,8}[=:]\s{0,8})(?:([\"'])([^\"'\s]{1,500})\3|([^\s\"',;)\]}]{1,500}))"
)
_PASSWORD_WORD = re.compile(_PASSWORD_KEY, re.I)
_PLAIN_WORD = re.compile(r"[A-Za-z_][\w.]*")
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no", "required", "optional", "str", "string"}


def _placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def _looks_secret(key: str, value: str, quoted: bool) -> bool:
    """Whether the value of a `key = value` assignment is a literal secret, not code."""
    if value.startswith("[REDACTED") or value.lower() in _NOT_SECRETS:
        return False
    if _PASSWORD_WORD.search(key):
        return quoted or len(value) >= 3 and "(" not in value
    if quoted:
        return len(value) >= 8
    # unquoted: env files, YAML, shell. Skip code such as `token=args.hf_token`.
    if len(value) < 12 or _PLAIN_WORD.fullmatch(value) and not any(c.isdigit() for c in value):
        return False
    return True


def _generic(found: set[str]) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        key, sep, quote = m.group(1), m.group(2), m.group(3)
        value = m.group(4) if quote else m.group(5)
        if not _looks_secret(key, value, bool(quote)):
            return m.group(0)
        found.add("generic_secret")
        secret = _placeholder("generic_secret")
        head = m.group(0)[: m.start(2) - m.start(0)]
        return f"{head}{sep}{quote}{secret}{quote}" if quote else f"{head}{sep}{secret}"

    return replace


def redact(text: str) -> tuple[str, list[str]]:
    """Replace secrets in ``text``; return the new text and the sorted kinds of secrets found."""
    found: set[str] = set()
    for kind, pattern, group in _RULES:

        def replace(m: re.Match[str], kind: str = kind, group: int = group) -> str:
            found.add(kind)
            if group == 0:
                return _placeholder(kind)
            whole, start, end = m.group(0), m.start(group) - m.start(0), m.end(group) - m.start(0)
            return whole[:start] + _placeholder(kind) + whole[end:]

        text = pattern.sub(replace, text)
    text = _GENERIC.sub(_generic(found), text)
    return text, sorted(found)
