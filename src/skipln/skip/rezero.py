"""A learnable gate on the body, zero at initialisation: ReZero and SkipInit."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip.base import (
    BlockSite,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    Sublayer,
    format_number,
    identity,
    resolve_site,
)
from skipln.validation import check_finite

INV_SQRT_DEPTH = "inv_sqrt_depth"


class _GatedBranchConnection(SkipConnection):
    def __init__(self, init: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        # A 0-dim parameter does not promote a bf16 stream, so no cast is needed here.
        return (shortcut or identity)(x) + self.alpha * sublayer(x)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():g}"


class ReZero(SkipStrategy):
    """ReZero: ``y = x + α·F(x)``, one learnable scalar α per block, initialised at 0; no norm.

    Bachlechner et al. 2020, "ReZero is All You Need: Fast Convergence at Large Depth"
    (arXiv 2003.04887). Every block is the identity at initialisation, so signals and
    gradients pass a stack of any depth unchanged; the model learns how much of each body to
    let in. The ``norm`` a model passes is not used: ReZero removes normalization from the
    residual path (keep a model's own norms inside the body if it has any).
    """

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _GatedBranchConnection(0.0)

    @property
    def tag(self) -> str:
        return "rezero"


class SkipInit(SkipStrategy):
    """SkipInit: ``y = x + α·F(x)``, one learnable scalar α per block, initialised at 0 or small.

    De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity
    Function in Deep Networks" (arXiv 2002.10444): batch norm lets deep ResNets train because
    it down-weights each residual branch at initialisation; a learnable scalar starting at 0
    (or at most ``1/√d`` for ``d`` residual blocks) does the same without BN. The same
    formula as :class:`ReZero`, for convolutional networks, with a configurable start.

    Args:
        init: α at initialisation: a real number (0 by default), or ``"inv_sqrt_depth"``
            for ``1/√d`` with ``d`` the number of residual blocks in the stack
            (``depth × sublayers`` of the block's :class:`BlockSite`).
    """

    def __init__(self, init: float | Literal["inv_sqrt_depth"] = 0.0) -> None:
        if init == INV_SQRT_DEPTH:
            self.init: float | str = INV_SQRT_DEPTH
        elif isinstance(init, str):
            raise ConfigError(f"SkipInit: 'init' must be a finite real number or {INV_SQRT_DEPTH!r}, got {init!r}")
        else:
            self.init = check_finite("init", init, "SkipInit")

    def initial_alpha(self, site: BlockSite | None = None) -> float:
        """α at initialisation for a block at ``site``."""
        if self.init == INV_SQRT_DEPTH:
            site = resolve_site(site)
            return 1.0 / math.sqrt(site.depth * site.sublayers)
        return float(self.init)

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _GatedBranchConnection(self.initial_alpha(site))

    @property
    def tag(self) -> str:
        if self.init == 0.0:
            return "skipinit"
        return f"skipinit-{self.init if isinstance(self.init, str) else format_number(self.init)}"
