"""Checks of user-given settings, shared by every module that takes one, with errors that name it.

YAML and the command line give ``true`` where a count is meant as easily as ``3``; Python's
``bool`` is an ``int``, so every check of a number must exclude it. These predicates do, once.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from skipln.errors import ConfigError


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, and not a bool (``True`` is an ``int`` to Python, not to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> TypeGuard[int | float]:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_finite(name: str, value: float, owner: str) -> float:
    """Validate a real-valued setting, naming it in the error."""
    if not is_real(value) or not math.isfinite(value):
        raise ConfigError(f"{owner}: '{name}' must be a finite real number, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: int, owner: str) -> int:
    """Validate a count, naming it in the error."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{owner}: '{name}' must be an integer >= 1, got {value!r}")
    return value


def check_bool(name: str, value: bool, owner: str) -> bool:
    """Validate a switch, naming it in the error."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: '{name}' must be true or false, got {value!r}")
    return value


__all__ = ["check_bool", "check_finite", "check_positive_int", "is_int", "is_real"]
