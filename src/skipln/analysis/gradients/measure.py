"""Reading gradients: ``‖∂loss/∂x_l‖`` at every layer's input and each layer's parameter gradient, in one backward pass.

Norms are computed so that they do not overflow where the gradient itself is finite (float32
gradients of 1e20 have squares beyond float32's range); ``inf``/``nan`` are kept, never dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def joint_norm(tensors: Sequence[Tensor]) -> float:
    """The Euclidean norm of several tensors together, without overflowing where the norm is finite.

    Squares of float32 gradients overflow long before the gradients do (1e20² > 3.4e38), and
    those of float64 ones beyond 1e154, so the entries are scaled by the largest one first
    (in float64). ``nan`` entries give ``nan``, ``inf`` entries ``inf``; a norm beyond float64's
    range gives ``inf``.
    """
    if not tensors:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).double()
    if flat.numel() == 0:
        return 0.0
    peak = flat.abs().max().item()  # nan if any entry is nan
    if peak == 0.0 or not math.isfinite(peak):
        return peak
    return peak * torch.linalg.vector_norm(flat / peak).item()


def combine_norms(norms: Iterable[float]) -> float:
    """The norm of several tensors together, from their norms (without overflow where finite)."""
    values = np.asarray(list(norms), dtype=np.float64)
    if values.size == 0:
        return 0.0
    if np.isnan(values).any():
        return math.nan
    peak = float(values.max())
    if peak == 0.0 or math.isinf(peak):
        return peak
    return peak * float(np.sqrt(np.sum((values / peak) ** 2)))


def stream_tensors(h: Any) -> list[Tensor]:
    """The tensors a residual stream holds: itself, or the tensor fields of a strategy's stream object.

    Some strategies pass more than a tensor between blocks (ResiDual's two streams, B2T's
    layer input); the gradient at a layer's input is then the gradient with respect to all
    of them together. A tensor held twice (ResiDual's two streams start as one) counts once.
    """
    if isinstance(h, Tensor):
        return [h]
    if dataclasses.is_dataclass(h) and not isinstance(h, type):
        found: dict[int, Tensor] = {}
        for f in dataclasses.fields(h):
            value = getattr(h, f.name)
            if isinstance(value, Tensor):
                found.setdefault(id(value), value)
        return list(found.values())
    raise TypeError(f"cannot read the gradient of a residual stream of type {type(h).__name__}")


@dataclass(frozen=True)
class Reading:
    """One forward and backward pass.

    Attributes:
        loss: the loss.
        inputs: ``‖∂loss/∂x_l‖`` for ``l = 0 … L``: each layer's input, then the stack's output.
        params: the norm of each layer's parameter gradient, ``l = 0 … L − 1``.
    """

    loss: float
    inputs: tuple[float, ...]
    params: tuple[float, ...]

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.loss, *self.inputs, *self.params))


def read_gradients(net: nn.Module, layers: Sequence[nn.Module], end: nn.Module, compute_loss: Callable[[], Tensor]) -> Reading:
    """Run ``compute_loss`` forward and backward and read the gradient at every layer of the stack.

    The gradient at a layer's input is captured by a forward pre-hook on the layer (and on
    ``end`` for the stack's output) that retains the gradient of the stream it receives.
    Parameter gradients are left in ``.grad`` for an optimizer step.
    """
    captured: list[list[Tensor] | None] = [None] * (len(layers) + 1)

    def capture(index: int) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            tensors = stream_tensors(args[0])
            for t in tensors:
                if t.requires_grad:
                    t.retain_grad()
            captured[index] = tensors

        return hook

    handles = [module.register_forward_pre_hook(capture(i)) for i, module in enumerate([*layers, end])]
    try:
        net.zero_grad(set_to_none=True)
        loss = compute_loss()
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    inputs = []
    for index, tensors in enumerate(captured):
        if tensors is None:
            raise RuntimeError(f"the forward pass never reached layer {index} of {len(layers)}: the probe's stack() is wrong")
        inputs.append(joint_norm([t.grad for t in tensors if t.grad is not None]))
    params = [joint_norm([p.grad for p in layer.parameters() if p.grad is not None]) for layer in layers]
    return Reading(loss.item(), tuple(inputs), tuple(params))
