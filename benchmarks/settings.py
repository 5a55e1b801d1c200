"""How the workloads run: the device, the precision and ``torch.compile`` — the same for both sides of a row.

A row compares skipln with its reference under one setting, so that a GPU, bf16 autocast or
compilation changes both figures and the ratio stays a comparison of implementations.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from skipln.errors import ConfigError

Precision = Literal["32", "bf16-mixed"]
PRECISIONS: tuple[Precision, ...] = ("32", "bf16-mixed")


@dataclass(frozen=True)
class Settings:
    """Where and how every workload of a run executes.

    Attributes:
        device: ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``).
        precision: ``"32"`` (float32) or ``"bf16-mixed"`` (``torch.autocast`` to bfloat16, as
            Lightning's ``precision: bf16-mixed``); the matmul peak is then measured in bfloat16.
        compile: ``torch.compile`` every trained model (``nn.Module.compile``, in place); the
            warm-up runs pay the compilation. Decoding rows are not compiled: beam search calls
            the model's incremental entry points, not its ``forward``.
    """

    device: str = "cpu"
    precision: Precision = "32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"benchmarks: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ConfigError(f"benchmarks: unknown device {self.device!r} ({error}); use cpu or cuda") from None
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"benchmarks: device {self.device!r} is not supported; use cpu or cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"benchmarks: --device {self.device} asked for, but this machine has no CUDA GPU; use --device cpu")

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def dtype(self) -> torch.dtype:
        """The dtype matmuls run in: the peak to compare with."""
        return torch.bfloat16 if self.precision == "bf16-mixed" else torch.float32

    def autocast(self) -> AbstractContextManager[None]:
        """The autocast region every timed step runs in (a no-op at 32-bit)."""
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16-mixed")

    def prepare(self, model: nn.Module, *, compile: bool = True) -> nn.Module:
        """Move ``model`` to the device and, if asked (and ``compile``), compile it in place."""
        model.to(self.device)
        if self.compile and compile:
            model.compile()
        return model

    @property
    def suffix(self) -> str:
        """What the result files' names add for this setting: ``""``, ``-cuda-bf16-compiled``, ..."""
        parts = [self.device_type] if self.device_type != "cpu" else []
        parts += ["bf16"] if self.precision == "bf16-mixed" else []
        parts += ["compiled"] if self.compile else []
        return "".join(f"-{part}" for part in parts)

    def describe(self) -> str:
        return f"device {self.device}, precision {self.precision}, torch.compile {'on' if self.compile else 'off'}"


__all__ = ["PRECISIONS", "Precision", "Settings"]
