"""The strategy library: every skip connection a model can be built with.

Name any of these (or your own :class:`SkipStrategy` subclass) in YAML::

    model:
      init_args:
        net:
          init_args:
            skip:
              class_path: skipln.skip.RecursiveSkipLN
              init_args: {recursions: 2}
"""

from skipln.skip.base import (
    BlockSite,
    FinalNorm,
    NormFactory,
    SkipConnection,
    SkipStrategy,
    StackBoundary,
    layer_norm,
)
from skipln.skip.classic import Plain, PostLN, PreLN, Scaled
from skipln.skip.recursive import RecursiveSkipLN

__all__ = [
    "BlockSite",
    "FinalNorm",
    "NormFactory",
    "Plain",
    "PostLN",
    "PreLN",
    "RecursiveSkipLN",
    "Scaled",
    "SkipConnection",
    "SkipStrategy",
    "StackBoundary",
    "layer_norm",
]
