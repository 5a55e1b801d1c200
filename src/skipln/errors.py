"""Errors that mean "the input was wrong": the CLI prints them as one clear message.

Raise a subclass of :class:`SkipLNError` where the user can fix the cause (a missing file, a
bad value), with a message that says what was wrong and how to fix it. The CLI shows such
errors without a traceback and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SkipLNError(Exception):
    """Base class of errors caused by the user's input or environment."""


class ConfigError(SkipLNError, ValueError):
    """A configuration value is invalid or inconsistent with another."""


class DataError(SkipLNError):
    """A data set is missing, incomplete, corrupt or malformed."""
