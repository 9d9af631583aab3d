"""Remove secrets (tokens, API keys, passwords) from pasted text before anything reads it.

Every secret becomes ``[REDACTED:<kind>]``. The patterns use only bounded or single-class
quantifiers, so the time stays linear in the size of the text.

>>> redact('login(token="hf_abcdefghijklmnopqrstuvwxyz0123456789")')
('login(token="[REDACTED:hf_token]")', ['hf_token'])
"""

from __future__ import annotations

import re

_Rule = tuple[str, str, re.Pattern[str], int]
"""(kind, gate, pattern, group): the rule runs only when the lower-cased text contains the gate;
the group of the match holds the secret (0: all of it)."""

_TOKEN_KEY = (
    r"(?:use_)?(?:(?:auth|access|api|hf|hub|bot|github|gh|slack|discord|secret|refresh|bearer|wandb"
    r"|huggingface|hugging_face_hub|hugging_face|personal|session|oauth|client)[_-]?)?token"
)
_SECRET_KEY = (
    r"(?:[A-Za-z0-9]{1,20}[_-])?(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]secret|access[_-]key"
    r"|private[_-]key)"
)
_PASSWORD_KEY = r"password|passwd|pwd"

# Patterns start with a literal where possible (fast scanning); word boundaries are checked in Python.
_RULES: list[_Rule] = [
    ("hf_token", "hf_", re.compile(r"hf_[A-Za-z0-9]{20,}"), 0),
    ("anthropic_key", "sk-ant-", re.compile(r"sk-ant-[A-Za-z0-9_-]{16,}"), 0),
    ("openai_key", "sk-", re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), 0),
    ("slack_webhook", "hooks.slack.com", re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"), 0),
    ("slack_token", "x", re.compile(r"(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,}"), 0),
    ("github_token", "g", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), 0),
    ("aws_access_key", "a", re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"), 0),
    (
        "aws_secret_key",
        "aws_secret_access_key",
        re.compile(r"(?i)aws_secret_access_key[\"']?\s{0,8}[=:]\s{0,8}[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
        1,
    ),
    ("wandb_key", "wandb_api_key", re.compile(r"(?i)WANDB_API_KEY[\"']?\s{0,8}[=:]\s{0,8}[\"']?([0-9a-f]{40})(?![0-9a-zA-Z])"), 1),
    ("wandb_key", "wandb.login", re.compile(r"wandb\.login\([^)\n]{0,200}?\bkey\s{0,8}=\s{0,8}[\"']([^\"'\n]{8,})[\"']"), 1),
    ("url_password", "://", re.compile(r"://[^\s:/@\[\]]{1,100}:([^\s@/\[\]]{1,200})@"), 1),
]

_KEYWORD = re.compile(r"token|key|secret|passw(?:or)?d|pwd")
"""Searched in the lower-cased text: a literal alternation scans much faster than (?i)."""
_KEYWORD_ANY_CASE = re.compile(r"(?i)token|key|secret|passw(?:or)?d|pwd")
_KEY = re.compile(r"(?i)(?:" + _TOKEN_KEY + "|" + _SECRET_KEY + "|" + _PASSWORD_KEY + ")")
_ASSIGNED = re.compile(
    r"(?:[\"']|&quot;|&#39;)?\s{0,8}[=:]\s{0,8}(?:([\"']|&quot;|&#39;)([^\"'\s&]{1,500})\1|([^\s\"',;)\]}]{1,500}))"
)
"""Separator and value; quotes may still be Slack/HTML entities (redaction runs before normalising)."""
_PASSWORD_WORD = re.compile(_PASSWORD_KEY, re.I)
_PLAIN_WORD = re.compile(r"[A-Za-z_][\w.]*")
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no", "required", "optional", "str", "string"}
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


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


def _redact_assignments(text: str, found: set[str]) -> str:
    """`token = "..."`, `api_key: ...`, `password=...` -> the value redacted."""
    out: list[str] = []
    last = 0
    lowered = text.lower()
    keywords = _KEYWORD.finditer(lowered) if len(lowered) == len(text) else _KEYWORD_ANY_CASE.finditer(text)
    for m in keywords:
        start, end = m.start(), m.end()
        if end < last or end < len(text) and text[end] in _KEY_CHARS:
            continue
        key_start = start
        while key_start > 0 and start - key_start < 40 and text[key_start - 1] in _KEY_CHARS:
            key_start -= 1
        key = text[key_start:end]
        if key_start < last or not _KEY.fullmatch(key):
            continue
        v = _ASSIGNED.match(text, end)
        if not v:
            continue
        quoted = v.group(1) is not None
        group = 2 if quoted else 3
        if not _looks_secret(key, v.group(group), quoted):
            continue
        found.add("generic_secret")
        out.append(text[last : v.start(group)])
        out.append(_placeholder("generic_secret"))
        last = v.end(group)
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def redact(text: str) -> tuple[str, list[str]]:
    """Replace secrets in ``text``; return the new text and the sorted kinds of secrets found."""
    found: set[str] = set()
    lowered = text.lower()
    for kind, gate, pattern, group in _RULES:
        if gate not in lowered:
            continue

        def replace(m: re.Match[str], kind: str = kind, group: int = group) -> str:
            if group == 0 and m.start() > 0 and m.string[m.start() - 1] in _KEY_CHARS:
                return m.group(0)  # inside a longer word
            found.add(kind)
            if group == 0:
                return _placeholder(kind)
            whole, start, end = m.group(0), m.start(group) - m.start(0), m.end(group) - m.start(0)
            return whole[:start] + _placeholder(kind) + whole[end:]

        text = pattern.sub(replace, text)
        lowered = text.lower() if found else lowered
    text = _redact_assignments(text, found)
    return text, sorted(found)
