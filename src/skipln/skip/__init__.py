"""The strategy library: every skip connection a model can be built with.

Name any of these (or your own :class:`SkipStrategy` subclass) in YAML::

    model:
      init_args:
        net:
          init_args:
            skip:
              class_path: skipln.skip.RecursiveSkipLN
              init_args: {recursions: 2}

docs/strategies.md compares them all (formula, source, knobs, cost, where each is meaningful).
Every strategy that normalizes takes ``norm`` (:mod:`skipln.skip.norms`: LayerNorm, RMSNorm,
DyT, BatchNorm); the models' stochastic depth is in :mod:`skipln.skip.stochastic_depth`.
"""

from skipln.skip.admin import Admin
from skipln.skip.b2t import B2T
from skipln.skip.base import (
    BlockSite,
    ChannelScale,
    FinalNorm,
    NormFactory,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
    channel_axis,
    layer_norm,
    needs_profiling,
    profile,
)
from skipln.skip.classic import Plain, PostLN, PreLN, Scaled
from skipln.skip.deepnorm import DeepNorm
from skipln.skip.learnable import LearnableSkipLN
from skipln.skip.norms import NORM_KINDS, TOKEN_NORMS, DyT, ModelNorms, RMSNorm2d
from skipln.skip.recursive import RecursiveSkipLN
from skipln.skip.residual import ResiDual
from skipln.skip.rezero import ReZero, SkipInit
from skipln.skip.sandwich import SandwichLN
from skipln.skip.stochastic_depth import DropPath, DroppedBranch, linear_drop_rates, split_branch

__all__ = [
    "Admin",
    "B2T",
    "BlockSite",
    "ChannelScale",
    "DeepNorm",
    "DropPath",
    "DroppedBranch",
    "DyT",
    "FinalNorm",
    "LearnableSkipLN",
    "ModelNorms",
    "NORM_KINDS",
    "NormFactory",
    "Plain",
    "PostLN",
    "PreLN",
    "RMSNorm2d",
    "ReZero",
    "RecursiveSkipLN",
    "ResiDual",
    "SandwichLN",
    "Scaled",
    "SkipConnection",
    "SkipInit",
    "SkipStrategy",
    "StackBoundary",
    "TOKEN_NORMS",
    "channel_axis",
    "layer_norm",
    "linear_drop_rates",
    "needs_profiling",
    "profile",
    "split_branch",
]
