"""skipln: a PyTorch Lightning research toolkit for skip connections.

Reproduces and extends Liu et al., "Rethinking Skip Connection with Layer Normalization in
Transformers and ResNets" (COLING 2020, arXiv 2105.07205).
"""

__version__ = "0.1.0"
