"""Errors that mean "the input was wrong": the CLI prints them as one clear message.

Raise a subclass of :class:`SkipLNError` where the user can fix the cause (a missing file, a
bad value), with a message that says what was wrong and how to fix it. The CLI shows such
errors without a traceback and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections import deque

#: The last few user errors raised in this process, for :func:`find_user_error`.
_recent: deque[SkipLNError] = deque(maxlen=16)


class SkipLNError(Exception):
    """Base class of errors caused by the user's input or environment."""

    #: The CLI's exit status for this kind of error.
    exit_code: int = 2

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        _recent.append(self)


def find_user_error(error: BaseException) -> SkipLNError | None:
    """The SkipLNError behind ``error``: itself, one in its chain, or one it quotes.

    jsonargparse re-raises an error from a class's constructor as a ``ValueError`` that
    quotes it (when it tries each type of a union), without chaining it: the errors raised
    recently are searched for the one it quotes, so the original can still be shown alone.
    """
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, SkipLNError):
            return current
        current = current.__cause__ or current.__context__
    return next((e for e in reversed(_recent) if str(e) and str(e) in str(error)), None)


class ConfigError(SkipLNError, ValueError):
    """A configuration value is invalid or inconsistent with another."""


class DataError(SkipLNError):
    """A data set is missing, incomplete, corrupt or malformed."""
