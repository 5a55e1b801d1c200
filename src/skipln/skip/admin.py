"""Admin: Post-LN whose skip is scaled per feature by ω, set from a profiling pass."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from skipln.skip.base import (
    BlockSite,
    ChannelScale,
    NormFactory,
    Shortcut,
    SkipConnection,
    SkipStrategy,
    Sublayer,
    channel_axis,
    identity,
    resolve_norm,
    resolve_site,
)
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix


def _variance(t: Tensor) -> float:
    """Variance over every element (a population variance, as Admin's profiling computes it)."""
    return t.detach().float().var(unbiased=False).item()


class _AdminConnection(SkipConnection):
    def __init__(self, norm: NormFactory, features: int, stack: str) -> None:
        super().__init__()
        self.norm = norm(features)
        self.omega = ChannelScale(features, 1.0, channel_axis(self.norm))
        self.stack = stack
        # Persisted, so a model restored from a checkpoint of a profiled one is not profiled again.
        self.register_buffer("profiled", torch.tensor(False))
        # A Python mirror of the buffer, so forward and needs_profiling never sync a GPU.
        self._profiled = False
        self._state: dict[str, Any] | None = None
        self._ratio: float | None = None
        self.register_load_state_dict_post_hook(_sync_profiled_flag)

    @property
    def needs_profiling(self) -> bool:
        return not self._profiled

    def start_profiling(self, state: dict[str, Any]) -> None:
        self._state, self._ratio = state, None

    def stop_profiling(self, commit: bool) -> None:
        if commit and self._ratio is not None:
            self.omega.fill_(self._ratio)
            self.profiled.fill_(True)
            self._profiled = True
        self._state, self._ratio = None, None

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        skip = (shortcut or identity)(x)
        branch = sublayer(x)
        if self._state is not None:
            return self._profile(skip, branch, self._state)
        if self.training and not self._profiled:
            warnings.warn(
                "Admin: training before the profiling pass, so ω = 1 and the block is plain Post-LN; "
                "call skipln.skip.profile(net, run) once before the first update (docs/strategies.md shows where a task does).",
            )
        return self.norm(self.omega(skip) + branch)

    def _profile(self, skip: Tensor, branch: Tensor, state: dict[str, Any]) -> Tensor:
        # Admin's rule, block by block along the stack: ω_1 = 1 and
        # ω_{i+1}² = Var[ω_i·x_i] + Var[F_i(x_i)], the variance the i-th sum would have without
        # the norms before it. With unit-variance LN outputs, ω_i² = 1 + Σ_{j<i} Var[F_j].
        ratio = state.get(self.stack, 1.0)
        self._ratio = ratio
        scaled = ratio * skip
        state[self.stack] = math.sqrt(_variance(scaled) + _variance(branch))
        return self.norm(scaled + branch)

    def extra_repr(self) -> str:
        return f"stack={self.stack!r}, profiled={self._profiled}"


def _sync_profiled_flag(module: _AdminConnection, incompatible_keys: Any) -> None:
    module._profiled = bool(module.profiled)


class Admin(SkipStrategy):
    """Admin: ``y = LN(ω ⊙ x + F(x))`` with a per-feature ω set from one profiling pass.

    Liu et al. 2020, "Understanding the Difficulty of Training Transformers" (EMNLP 2020,
    arXiv 2004.08249). Post-LN training is unstable because each block's output depends
    strongly on its own body (an amplified effect of parameter updates); Admin re-weights
    the skip so the stream carries the variance the preceding bodies have accumulated:
    ``ω_i = √(Σ_{j<i} Var[F_j(x_{j-1})])``, counting the stack's input as variance 1. As in
    the authors' code, the pass computes it block by block: ``ω_1 = 1``,
    ``ω_{i+1}² = Var[ω_i·x_i] + Var[F_i(x_i)]``, per stack (encoder and decoder apart).
    After initialisation ω is an ordinary learnable parameter.

    ω stays 1 (Post-LN) until :func:`skipln.skip.profile` runs the model once on a training
    batch; a training task does so before its first update when
    :func:`skipln.skip.needs_profiling` says so (a warning says when it was forgotten).
    Under stochastic depth the pass runs as training does, so the dropped branches take part
    in the variances, as the authors' dropout did.

    Args:
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, norm: NormKind | None = None) -> None:
        self.norm = check_norm_kind(norm, "Admin")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        return _AdminConnection(resolve_norm(norm, self.norm, "Admin"), features, resolve_site(site).stack)

    @property
    def tag(self) -> str:
        return "admin" + norm_suffix(self.norm)
