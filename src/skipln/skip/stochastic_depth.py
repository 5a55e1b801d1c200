"""Stochastic depth: drop a residual block's branch for whole samples while training.

Huang et al. 2016, "Deep Networks with Stochastic Depth" (ECCV): during training each block's
body ``F`` is skipped for a random subset of the batch, block ℓ of ``L`` with probability
``p_ℓ = ℓ/L · p`` (the *linear decay rule*, ``p`` the rate of the last block); at inference
every block runs. timm calls ``p`` ``drop_path_rate`` (its schedule starts at 0 for the first
block instead of ``p/L``); fairseq's LayerDrop (Fan et al. 2019) drops whole layers at one rate.

As in timm, a kept branch is divided by ``1 − p_ℓ`` while training ("inverted" scaling), so
``E[drop(F(x))] = F(x)`` and inference is the plain model with no rescaling — what the cached
incremental decoder and a checkpoint's user need.

A model applies the drop to the branch *before* the strategy combines it with the skip: it
hands the connection ``DroppedBranch(F, drop)`` instead of ``F``. For a strategy that adds
``F(x)`` (scaled or not, inside a norm or not) that is exactly right, and it needs to do
nothing. A strategy that transforms the body's output before adding it (Sandwich-LN's second
norm) takes the two apart with :func:`split_branch` and drops after its transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.validation import is_real

Sublayer = Callable[[Tensor], Tensor]


def check_drop_rate(value: float, owner: str, name: str = "drop_path_rate") -> float:
    """Validate a drop probability in [0, 1), naming it in the error."""
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{owner}: '{name}' must be a probability in [0, 1), got {value!r}")
    return float(value)


def linear_drop_rates(rate: float, depth: int) -> list[float]:
    """``p_ℓ = ℓ/L · rate`` for blocks ℓ = 1 … L (Huang et al. 2016's linear decay rule), in order."""
    return [rate * (index + 1) / depth for index in range(depth)]


class DropPath(nn.Module):
    """Zero a branch for a random ``rate`` of the samples (rows of dimension 0) and scale the rest by ``1/(1 − rate)``.

    In evaluation mode, or at rate 0, the branch passes unchanged.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = check_drop_rate(rate, "DropPath", "rate")

    def forward(self, branch: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return branch
        keep = 1.0 - self.rate
        mask = torch.empty((branch.shape[0],) + (1,) * (branch.dim() - 1), dtype=branch.dtype, device=branch.device)
        return branch * mask.bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4g}"


@dataclass(frozen=True)
class DroppedBranch:
    """A block's body under stochastic depth: called, ``drop(body(x))``.

    It is a plain ``Sublayer`` to every strategy; :func:`split_branch` gives one that must drop
    at another place the two parts.
    """

    body: Sublayer
    drop: DropPath

    def __call__(self, x: Tensor) -> Tensor:
        return self.drop(self.body(x))


def _keep(branch: Tensor) -> Tensor:
    return branch


def split_branch(sublayer: Sublayer) -> tuple[Sublayer, Callable[[Tensor], Tensor]]:
    """``(body, drop)`` of a :class:`DroppedBranch`; ``(sublayer, identity)`` for any other body."""
    if isinstance(sublayer, DroppedBranch):
        return sublayer.body, sublayer.drop
    return sublayer, _keep


def with_drop(body: Sublayer, drop: DropPath | None) -> Sublayer:
    """What a model hands a connection: ``body`` itself without stochastic depth, else a :class:`DroppedBranch`."""
    return body if drop is None else DroppedBranch(body, drop)


def drop_path_or_none(rate: float) -> DropPath | None:
    """A :class:`DropPath` for a block, or ``None`` at rate 0 (the model then runs exactly as without it)."""
    return DropPath(rate) if rate > 0.0 else None


__all__ = [
    "DropPath",
    "DroppedBranch",
    "check_drop_rate",
    "drop_path_or_none",
    "linear_drop_rates",
    "split_branch",
    "with_drop",
]
