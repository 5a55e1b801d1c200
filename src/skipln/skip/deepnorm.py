"""DeepNorm: Post-LN with an up-weighted skip and a down-scaled body at initialisation."""

from __future__ import annotations

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
    resolve_norm,
    resolve_site,
)
from skipln.validation import check_finite
from skipln.skip.norms import NormKind, check_norm_kind, norm_suffix

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""The projections an attention body exposes (see :meth:`SkipConnection.init_branch`)."""


def deepnorm_constants(site: BlockSite) -> tuple[float, float]:
    """``(α, β)`` of Wang et al. 2022 (DeepNet, Table 1) for a block at ``site``.

    ``N`` is the number of encoder layers and ``M`` of decoder layers; the stack's own depth
    is ``site.depth`` and the other stack's is ``site.encoder_depth`` / ``site.decoder_depth``
    (0: the model has no such stack).

    ============================  ======================  ========================
    architecture                  α                       β
    ============================  ======================  ========================
    encoder-only                  (2N)^¼                  (8N)^-¼
    decoder-only                  (2M)^¼                  (8M)^-¼
    encoder-decoder: encoder      0.81·(N⁴M)^(1/16)       0.87·(N⁴M)^(-1/16)
    encoder-decoder: decoder      (3M)^¼                  (12M)^-¼
    ============================  ======================  ========================
    """
    if site.stack == "encoder":
        n, m = site.depth, site.decoder_depth
        if m == 0:
            return (2 * n) ** 0.25, (8 * n) ** -0.25
        return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
    if site.stack == "decoder":
        m, n = site.depth, site.encoder_depth
        if n == 0:
            return (2 * m) ** 0.25, (8 * m) ** -0.25
        return (3 * m) ** 0.25, (12 * m) ** -0.25
    raise ConfigError(
        f"DeepNorm: α and β are derived for Transformer 'encoder' and 'decoder' stacks (Wang et al. 2022); "
        f"got a block in stack {site.stack!r}. For a fixed skip scale in a ResNet use skipln.skip.PostLN(scale=...)."
    )


def deepnorm_init(branch: nn.Module, beta: float) -> None:
    """Xavier-normal initialisation of a body's weights as DeepNet prescribes.

    In every attention module of ``branch`` (one exposing ``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``, or a ``torch.nn.MultiheadAttention``) the query and key
    projections get gain 1 and the value and output projections gain ``beta``; every other
    ``nn.Linear`` (the feed-forward layers) gets gain ``beta``. Biases are left as they are.

    Raises:
        ConfigError: ``branch`` holds no ``nn.Linear`` layer (e.g. a convolutional body).
    """
    done: set[nn.Module] = set()
    for module in branch.modules():
        if isinstance(module, nn.MultiheadAttention):
            _init_torch_attention(module, beta)
            done.add(module.out_proj)
        elif all(isinstance(getattr(module, name, None), nn.Linear) for name in ATTENTION_PROJECTIONS):
            for name, gain in zip(ATTENTION_PROJECTIONS, (1.0, 1.0, beta, beta), strict=True):
                layer = getattr(module, name)
                nn.init.xavier_normal_(layer.weight, gain=gain)
                done.add(layer)
    for module in branch.modules():
        if isinstance(module, nn.Linear) and module not in done:
            nn.init.xavier_normal_(module.weight, gain=beta)
            done.add(module)
    if not done:
        raise ConfigError(
            f"DeepNorm: its initialisation scales the Linear layers of Transformer bodies (attention projections, "
            f"feed-forward layers), but the body {type(branch).__name__} has none. DeepNorm is meant for Transformers."
        )


def _init_torch_attention(attention: nn.MultiheadAttention, beta: float) -> None:
    if attention.in_proj_weight is not None:
        # Packed [q; k; v] rows: each chunk is a view, initialised in place with its own fans.
        q, k, v = attention.in_proj_weight.data.chunk(3)
    else:
        q, k, v = attention.q_proj_weight.data, attention.k_proj_weight.data, attention.v_proj_weight.data
    nn.init.xavier_normal_(q, gain=1.0)
    nn.init.xavier_normal_(k, gain=1.0)
    nn.init.xavier_normal_(v, gain=beta)
    nn.init.xavier_normal_(attention.out_proj.weight, gain=beta)


class _DeepNormConnection(SkipConnection):
    def __init__(self, alpha: float, beta: float, norm: NormFactory, features: int) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.norm = norm(features)

    def forward(self, x: Tensor, sublayer: Sublayer, shortcut: Shortcut | None = None) -> Tensor:
        return self.norm(self.alpha * (shortcut or identity)(x) + sublayer(x))

    def init_branch(self, branch: nn.Module) -> None:
        deepnorm_init(branch, self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}, beta={self.beta:.4g}"


class DeepNorm(SkipStrategy):
    """DeepNorm: ``y = LN(α·x + F(x))``, with the body initialised at gain ``β``.

    Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers" (arXiv 2203.00555).
    α > 1 up-weights the skip, and a small β shrinks the body's value, output and
    feed-forward weights (Xavier-normal, gain β; query/key gain 1), which bounds the size of
    the model update and lets Post-LN Transformers train at depths where they otherwise
    diverge. Both constants come from the encoder and decoder depths: see
    :func:`deepnorm_constants` (for 6+6 layers: encoder α ≈ 1.42, β ≈ 0.50; decoder α ≈ 2.06,
    β ≈ 0.34). Transformers only: a ResNet ("backbone") block is rejected.

    Args:
        alpha: override α for every block (``None``: the paper's value from depth).
        beta: override β for every block (``None``: the paper's value from depth).
        norm: the kind of ``LN``: ``null`` (the model's), ``layer``, ``rms``, ``dyt`` or
            ``batch`` (see :mod:`skipln.skip.norms`).
    """

    def __init__(self, alpha: float | None = None, beta: float | None = None, norm: NormKind | None = None) -> None:
        self.alpha = _check_optional_positive("alpha", alpha)
        self.beta = _check_optional_positive("beta", beta)
        self.norm = check_norm_kind(norm, "DeepNorm")

    def build(self, features: int, *, norm: NormFactory | None = None, site: BlockSite | None = None) -> SkipConnection:
        alpha, beta = deepnorm_constants(resolve_site(site))
        return _DeepNormConnection(
            alpha if self.alpha is None else self.alpha,
            beta if self.beta is None else self.beta,
            resolve_norm(norm, self.norm, "DeepNorm"),
            features,
        )

    @property
    def tag(self) -> str:
        tag = "deepnorm"
        if self.alpha is not None:
            tag += f"-a{format_number(self.alpha)}"
        if self.beta is not None:
            tag += f"-b{format_number(self.beta)}"
        return tag + norm_suffix(self.norm)


def _check_optional_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = check_finite(name, value, "DeepNorm")
    if value <= 0:
        raise ConfigError(f"DeepNorm: '{name}' must be a real number > 0, or null for the paper's value; got {value!r}")
    return value
