"""The tasks' ``compile`` switch: ``torch.compile`` of the network, in place, once."""

from __future__ import annotations

from typing import Any

from torch import nn

from skipln import compat
from skipln.errors import ConfigError


def check_compile(owner: str, value: Any) -> bool:
    """``value`` if it is a bool; a ConfigError naming ``owner``'s argument otherwise."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: 'compile' must be true or false, got {value!r}")
    return value


def compile_once(net: nn.Module) -> None:
    """``net.compile()`` unless it is compiled already (Lightning calls ``configure_model`` before every stage).

    ``nn.Module.compile`` compiles in place (the compiled forward goes in ``_compiled_call_impl``),
    so parameter names, and with them checkpoints, stay those of the eager network.
    """
    if not compat.compiled_in_place(net):
        net.compile()


__all__ = ["check_compile", "compile_once"]
