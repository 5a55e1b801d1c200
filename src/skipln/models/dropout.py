"""Dropout whose random mask costs about half of ``nn.Dropout``'s on a CPU.

``nn.Dropout`` draws its mask with ``bernoulli_``, which on a CPU costs twice what
``torch.rand`` does for the same elements (4.6 ms against 2.2 ms for a ``(32, 24, 1024)``
tensor, one thread, an AMD EPYC; it does not get faster with more threads), and applies it as
a boolean mask and a scale: two multiplications forward and two backward. :class:`Dropout`
keeps an element where ``rand ≥ p`` — the same Bernoulli(1 − p) law, to float32's resolution
of 2⁻²⁴ — and holds the mask as float32 ``0`` or ``1 / (1 − p)``, so forward and backward are
one multiplication each: forward + backward 1.75× faster at that shape. The mask takes 4 bytes
an element where ``nn.Dropout``'s takes 1.

The fast path is for float32 tensors on a CPU while training. Everything else is
``nn.Dropout``'s own: on a GPU dropout is already one fused kernel; a bfloat16 or float16
uniform draw is too coarse for ``p``; ``torch.compile`` fuses dropout itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class _ScaledMask(torch.autograd.Function):
    """``x · mask`` with ``mask = (rand ≥ p) / (1 − p)``, saved for the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float) -> Tensor:
        mask = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state) with a faster mask for float32 CPU tensors (see the module)."""

    def forward(self, x: Tensor) -> Tensor:
        fast = (
            self.training
            and 0.0 < self.p < 1.0
            and not self.inplace
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and not torch.compiler.is_compiling()
        )
        return _ScaledMask.apply(x, self.p) if fast else super().forward(x)


__all__ = ["Dropout"]
