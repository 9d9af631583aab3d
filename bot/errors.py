"""Errors whose messages are safe to show a user. Adapters catch `BotError` at the edge.

    BotError
    ├── UnreadableInput      the paste cannot be read (empty, binary, too large, missing file)
    ├── KnowledgeBaseError   an entry file is invalid (operator error, `lossdoctor kb check`)
    └── ReproductionError    the sandboxed reproducer could not run at all
"""


class BotError(Exception):
    """Base class: the message is meant for the user and holds no secret."""


class UnreadableInput(BotError):
    """The input cannot be turned into a report."""


class KnowledgeBaseError(BotError):
    """A knowledge entry is missing or invalid."""


class ReproductionError(BotError):
    """The reproducer could not run (sandbox unavailable, timeout of the whole pool...)."""
