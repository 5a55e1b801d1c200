"""The gradient study: gradient norms layer by layer, against depth, for every skip strategy.

Liu et al. 2020 ("Rethinking Skip Connection with Layer Normalization in Transformers and
ResNets", arXiv 2105.07205) argue that unrolling ``λ·x + F(x)`` over blocks ``l..L`` puts a
factor ``λ^(L−l)`` into ``∂loss/∂x_l`` — exponential explosion for λ > 1, vanishing for λ < 1
— and that LN (``LN(λ·x + F(x))``) removes it. This command measures it::

    python -m skipln.analysis.gradients --out results/gradients --figures docs/images
    python -m skipln.analysis.gradients --quick --out /tmp/gradients

For each model of ``configs/analysis/gradients.yaml`` (an encoder-only Transformer trained as a
masked language model on the embedded gettext corpus, CIFAR ResNets with post- and
pre-activation blocks on scikit-learn's digits), each depth ``L``, each strategy and each λ, it
records at every layer ``l`` the norm of ``∂loss/∂x_l`` (the gradient at the layer's input;
``l = L`` is the stack's output) and of the layer's parameter gradient: at initialisation for
several seeds, and over the first training steps. Under ``--out`` it writes:

- ``gradients.csv``: the long table, one row per (model, strategy, λ, depth, phase, step, seed,
  layer) with ``input_grad_norm`` and ``param_grad_norm`` (``inf``/``nan`` where the
  arithmetic overflowed: recorded, never dropped; empty for the stack's output, which has no
  parameters), at initialisation and at every ``record_every``-th training step;
- ``readings.csv``: one row per forward/backward pass (every training step): the loss, the
  input gradient at the first and last layer, the parameter gradient;
- ``summary.csv``: per (model, strategy, depth): ``‖∂loss/∂x_0‖`` at initialisation
  (geometric mean, min and max over seeds), at the stack's output, their ratio, and what the
  training steps did;
- ``slopes.csv``: per (model, strategy): the slope of ``ln ‖∂loss/∂x_0‖`` per residual block
  beside the paper's prediction (``ln λ`` for xSkip, 0 under LN), and the growth from the
  smallest depth to each other;
- ``skipped.csv``: strategies a model cannot hold, with the model's own reason.

Under ``--figures`` (default: ``--out``): ``gradients_<model>_layers.png`` (log gradient norm
against layer, a line per λ, xSkip beside xSkip+LN), ``gradients_depth.png`` (the input
gradient against depth) and ``gradients_training.png`` (over the training steps). All of it,
with the resolved config and a markdown summary, is logged as the artifacts of one MLflow run
(experiment ``skipln-gradients``, tag ``study=gradients``). ``--replot`` rebuilds summaries,
figures and the run from the CSVs without measuring again.

Depth ``L`` counts a stack's layers: Transformer encoder layers, two residual blocks each;
ResNet residual blocks (a ResNet-(2L+2)). docs/gradients.md reports what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from skipln.errors import ConfigError, SkipLNError
from skipln.models.resnet import ResNet
from skipln.models.transformer import Embedder, EncoderLayer, LayerSpec, SinusoidalPositions
from skipln.skip import BlockSite, Plain, PostLN, RecursiveSkipLN, Scaled, SkipStrategy, needs_profiling, profile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_CONFIG = Path("configs/analysis/gradients.yaml")
KINDS = ("transformer", "resnet")
ATTENTION = ("math", "default")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

# The three families whose λ the study sweeps; every other strategy is its own family.
XSKIP, XSKIP_LN, RSKIP_LN = "xskip", "xskip_ln", "rskip_ln"


# =========================================================================== configuration


def _where(source: str, key: str) -> str:
    return f"{source}: '{key}'"


class _Section:
    """A mapping of the YAML file, read key by key with clear errors; unknown keys are errors too."""

    def __init__(self, data: Any, key: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{_where(source, key or '<top level>')} must be a mapping of settings, got {data!r}")
        self.data, self.key, self.source = data, key, source
        self.read: set[str] = set()

    def _path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def raw(self, name: str) -> Any:
        if name not in self.data:
            raise ConfigError(f"{self.source}: missing '{self._path(name)}' (see configs/analysis/gradients.yaml for every setting)")
        self.read.add(name)
        return self.data[name]

    def section(self, name: str) -> _Section:
        return _Section(self.raw(name), self._path(name), self.source)

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, name: str, low: float = -math.inf, high: float = math.inf) -> float:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be a number in ({low:g}, {high:g}), got {value!r}")
        return float(value)

    def integers(self, name: str, minimum: int = 0) -> tuple[int, ...]:
        values = self.raw(name)
        if (
            not isinstance(values, list)
            or not values
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values)
            or len(set(values)) != len(values)
        ):
            raise ConfigError(
                f"{_where(self.source, self._path(name))} must be a non-empty list of distinct integers >= {minimum}, got {values!r}"
            )
        return tuple(values)

    def numbers(self, name: str) -> tuple[float, ...]:
        values = self.raw(name)
        if (
            not isinstance(values, list)
            or not values
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf for v in values)
            or len(set(values)) != len(values)
        ):
            raise ConfigError(
                f"{_where(self.source, self._path(name))} must be a non-empty list of distinct positive numbers, got {values!r}"
            )
        return tuple(float(v) for v in values)

    def choice(self, name: str, choices: Iterable[str]) -> str:
        value, choices = self.raw(name), tuple(choices)
        if value not in choices:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def text(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be a non-empty string, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ConfigError(
                f"{self.source}: unknown setting(s) {', '.join(self._path(k) for k in unknown)}; "
                f"'{self.key or '<top level>'}' takes {', '.join(sorted(self.read))}"
            )


def instantiate(spec: Any, base: type, where: str) -> Any:
    """An object from ``{class_path: ..., init_args: {...}}`` (or a bare ``class_path`` string) that is a ``base``."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str) or set(spec) - {"class_path", "init_args"}:
        raise ConfigError(f"{where} must be a class_path string or {{class_path: ..., init_args: {{...}}}}, got {spec!r}")
    cls = _import_class(spec["class_path"], where)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{where}: {spec['class_path']} is not a {base.__module__}.{base.__qualname__}")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ConfigError(f"{where}: init_args must be a mapping, got {init_args!r}")
    try:
        return cls(**init_args)
    except TypeError as error:  # an unknown or missing argument
        raise ConfigError(f"{where}: cannot build {spec['class_path']} with {dict(init_args)}: {error}") from error


def _import_class(path: str, where: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{where}: cannot import {path!r} ({error}); give a full dotted path such as skipln.skip.PreLN") from error


@dataclass(frozen=True)
class OptimizerSpec:
    """``class_path``/``init_args`` of a ``torch.optim.Optimizer``, built per trajectory."""

    class_path: str
    init_args: Mapping[str, Any]

    @classmethod
    def read(cls, spec: Any, where: str) -> OptimizerSpec:
        if isinstance(spec, str):
            spec = {"class_path": spec}
        if not isinstance(spec, Mapping) or "class_path" not in spec:
            raise ConfigError(f"{where} must be {{class_path: torch.optim.<Name>, init_args: {{...}}}}, got {spec!r}")
        cls_ = _import_class(spec["class_path"], where)
        if not (isinstance(cls_, type) and issubclass(cls_, torch.optim.Optimizer)):
            raise ConfigError(f"{where}: {spec['class_path']} is not a torch.optim.Optimizer")
        result = cls(spec["class_path"], dict(spec.get("init_args") or {}))
        result.build([nn.Parameter(torch.zeros(1))], where)  # fail now, not after an hour of measuring
        return result

    def build(self, params: Iterable[nn.Parameter], where: str = "optimizer") -> torch.optim.Optimizer:
        cls = _import_class(self.class_path, where)
        try:
            return cls(params, **self.init_args)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: cannot build {self.class_path} with {dict(self.init_args)}: {error}") from error


@dataclass(frozen=True)
class TransformerSettings:
    """The study's Transformer: an encoder stack under a masked-token head (see :class:`MaskedLMEncoder`)."""

    dim: int
    heads: int
    ffn_dim: int
    vocab_size: int
    max_length: int
    batch_size: int
    mask_fraction: float
    attention: str
    optimizer: OptimizerSpec

    @classmethod
    def read(cls, section: _Section) -> TransformerSettings:
        section.choice("kind", ["transformer"])
        settings = cls(
            dim=section.integer("dim", 1),
            heads=section.integer("heads", 1),
            ffn_dim=section.integer("ffn_dim", 1),
            vocab_size=section.integer("vocab_size", 16),
            max_length=section.integer("max_length", 2),
            batch_size=section.integer("batch_size", 1),
            mask_fraction=section.number("mask_fraction", 0.0, 1.0),
            attention=section.choice("attention", ATTENTION),
            optimizer=OptimizerSpec.read(section.raw("optimizer"), f"{section.source}: '{section.key}.optimizer'"),
        )
        section.done()
        if settings.dim % settings.heads:
            raise ConfigError(f"{section.source}: '{section.key}.heads' ({settings.heads}) must divide dim ({settings.dim})")
        return settings


@dataclass(frozen=True)
class ResNetSettings:
    """The study's ResNet (:class:`skipln.models.resnet.ResNet`) on scikit-learn's digits."""

    block: str
    width: int
    batch_size: int
    optimizer: OptimizerSpec

    @classmethod
    def read(cls, section: _Section) -> ResNetSettings:
        section.choice("kind", ["resnet"])
        settings = cls(
            block=section.choice("block", ("basic", "preact")),
            width=section.integer("width", 1),
            batch_size=section.integer("batch_size", 1),
            optimizer=OptimizerSpec.read(section.raw("optimizer"), f"{section.source}: '{section.key}.optimizer'"),
        )
        section.done()
        return settings


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study measures; read from YAML by :func:`load_config`."""

    depths: tuple[int, ...]
    lambdas: tuple[float, ...]
    recursions: tuple[int, ...]
    baselines: tuple[SkipStrategy, ...]
    seeds: tuple[int, ...]
    init_dtypes: tuple[torch.dtype, ...]
    steps: int
    record_every: int
    train_seed: int
    train_dtype: torch.dtype
    models: Mapping[str, TransformerSettings | ResNetSettings]
    profile_depths: tuple[int, ...]
    training_depth: int
    tracking_uri: str
    experiment: str
    threads: int
    resolved: Mapping[str, Any]
    """The YAML mapping after ``--quick`` and ``--models`` (logged with the run)."""

    def record_step(self, step: int) -> bool:
        """Whether training step ``step`` goes into the long table with every layer (readings.csv has every step)."""
        return step % self.record_every == 0 or step == self.steps - 1


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values; mappings are merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path = DEFAULT_CONFIG, *, quick: bool = False, models: Sequence[str] | None = None) -> StudyConfig:
    """Read the study's settings.

    Args:
        path: the YAML file (``configs/analysis/gradients.yaml``).
        quick: apply the file's ``quick:`` overrides (a tiny study, for tests and a first try).
        models: study only these of the file's ``models`` (all of them when ``None``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"gradient study config '{path}' not found (resolved from {Path.cwd()}): run from the repository root, "
            f"or pass --config <file> (the study's settings are in configs/analysis/gradients.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    source = str(path)
    top = _Section(data, "", source)
    overrides = top.raw("quick") if "quick" in data else {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: 'quick' must be a mapping of settings to replace, got {overrides!r}")
    data = {k: v for k, v in data.items() if k != "quick"}
    if quick:
        data = merge(data, overrides)
    models_section = _Section(data.get("models"), "models", source)
    wanted = list(models_section.data) if models is None else list(models)
    for name in wanted:
        if name not in models_section.data:
            raise ConfigError(f"model {name!r} is not configured in {source} (it has {', '.join(models_section.data) or 'none'})")
    data["models"] = {name: models_section.data[name] for name in wanted}
    return _read(data, source)


def _read_model(section: _Section) -> TransformerSettings | ResNetSettings:
    kind = section.choice("kind", KINDS)
    return TransformerSettings.read(section) if kind == "transformer" else ResNetSettings.read(section)


def _dtypes(section: _Section, name: str) -> tuple[torch.dtype, ...]:
    values = section.raw(name)
    if not isinstance(values, list) or not values or any(v not in DTYPES for v in values):
        raise ConfigError(
            f"{_where(section.source, name)} must be a non-empty list of {', '.join(DTYPES)} (tried in order), got {values!r}"
        )
    return tuple(DTYPES[v] for v in values)


def _read(data: dict[str, Any], source: str) -> StudyConfig:
    top = _Section(data, "", source)
    models_section = top.section("models")
    models = {name: _read_model(models_section.section(name)) for name in models_section.data}
    if not models:
        raise ConfigError(f"{source}: 'models' names no model; give at least one (kind: transformer or resnet)")
    depths = top.integers("depths", 1)
    if any(isinstance(m, ResNetSettings) for m in models.values()) and any(d % 3 for d in depths):
        raise ConfigError(
            f"{source}: 'depths' {list(depths)}: a CIFAR ResNet has 3 stages of equal length, so its number of blocks "
            f"must be a multiple of 3 (e.g. 6, 12, 24, 48, 96)"
        )
    baselines = top.raw("baselines")
    if not isinstance(baselines, list):
        raise ConfigError(f"{source}: 'baselines' must be a list of strategies (class_path entries), got {baselines!r}")
    figures = top.section("figures")
    tracking = top.section("mlflow")
    steps = top.integer("steps", 1)
    config = StudyConfig(
        depths=tuple(sorted(depths)),
        lambdas=top.numbers("lambdas"),
        recursions=top.integers("recursions", 1),
        baselines=tuple(
            instantiate(spec, SkipStrategy, f"{source}: 'baselines[{i}]'") for i, spec in enumerate(baselines)
        ),
        seeds=top.integers("seeds"),
        init_dtypes=_dtypes(top, "init_dtypes"),
        steps=steps,
        record_every=top.integer("record_every", 1),
        train_seed=top.integer("train_seed"),
        train_dtype=DTYPES[top.choice("train_dtype", DTYPES)],
        models=models,
        profile_depths=figures.integers("profile_depths", 1),
        training_depth=figures.integer("training_depth", 1),
        tracking_uri=tracking.text("tracking_uri"),
        experiment=tracking.text("experiment"),
        threads=top.integer("threads", 1),
        resolved=data,
    )
    figures.done()
    tracking.done()
    models_section.done()
    top.done()
    missing = sorted(set(config.profile_depths) - set(config.depths)) + (
        [config.training_depth] if config.training_depth not in config.depths else []
    )
    if missing:
        raise ConfigError(f"{source}: figures ask for depth(s) {missing} that 'depths' {list(config.depths)} does not measure")
    return config


# =========================================================================== the strategies


@dataclass(frozen=True)
class Cell:
    """One strategy of the study.

    Attributes:
        family: ``xskip``, ``xskip_ln``, ``rskip_ln``, or the tag of a strategy studied at its defaults.
        lam: the family's λ: the skip scale of xSkip and xSkip+LN, the number of recursions of
            rSkip+LN; ``None`` for the others.
        skip: the strategy.
    """

    family: str
    lam: float | None
    skip: SkipStrategy

    @property
    def tag(self) -> str:
        return self.skip.tag


def study_cells(config: StudyConfig) -> list[Cell]:
    """Every strategy the study measures: the λ sweeps of the paper's three forms, then the baselines.

    xSkip at λ = 1 is :class:`~skipln.skip.Plain` (the tag ``skip``) and xSkip+LN at λ = 1 is
    Post-LN (``post_ln``), so each reads under its usual name.
    """
    cells = [Cell(XSKIP, lam, Plain() if lam == 1.0 else Scaled(lam)) for lam in config.lambdas]
    cells += [Cell(XSKIP_LN, lam, PostLN(lam)) for lam in config.lambdas]
    cells += [Cell(RSKIP_LN, float(r), RecursiveSkipLN(r)) for r in config.recursions]
    cells += [Cell(skip.tag, None, skip) for skip in config.baselines]
    tags = [cell.tag for cell in cells]
    repeated = sorted({t for t in tags if tags.count(t) > 1})
    if repeated:
        raise ConfigError(f"the study lists {', '.join(repeated)} twice (a baseline repeats a λ of the sweeps?); list it once")
    return cells


# =========================================================================== the models


class MaskedLMEncoder(nn.Module):
    """The Transformer's encoder stack alone, under a masked-token head: the study's Transformer.

    Built from :mod:`skipln.models.transformer`'s public pieces and wired as
    :class:`~skipln.models.transformer.Transformer` wires its encoder (``Embedder``, then
    ``EncoderLayer`` × ``layers`` between the strategy's stack boundary), with encoder-only
    :class:`~skipln.skip.BlockSite` depths (DeepNorm takes its encoder-only constants). The head
    is a linear projection to the vocabulary with no norm before it, so what the stack does to
    the scale of its output reaches the loss unchanged. Token id ``vocab_size`` is the mask.

    Args:
        vocab_size: the tokenizer's vocabulary (the embedding holds one more row: the mask).
        skip: the skip strategy of every residual block.
        layers: encoder layers (two residual blocks each).
        dim: model dimension.
        ffn_dim: hidden size of the feed-forward blocks.
        heads: attention heads.
        max_positions: the longest sentence, in tokens.
    """

    def __init__(self, vocab_size: int, skip: SkipStrategy, layers: int, dim: int, ffn_dim: int, heads: int, max_positions: int) -> None:
        super().__init__()
        self.skip = skip
        self.dim = dim
        self.mask_id = vocab_size
        spec = LayerSpec(dim, ffn_dim, heads, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, activation="relu")
        tokens = nn.Embedding(vocab_size + 1, dim)
        nn.init.normal_(tokens.weight, mean=0.0, std=dim**-0.5)
        self.embed = Embedder(tokens, SinusoidalPositions(max_positions, dim), math.sqrt(dim), dropout=0.0)
        site = partial(BlockSite, depth=layers, stack="encoder", sublayers=2, encoder_depth=layers)
        self.layers = nn.ModuleList(EncoderLayer(spec, skip, partial(site, layer=i)) for i in range(layers))
        self.boundary = skip.build_boundary(dim, site=site(layer=layers - 1, sublayer=1))
        self.head = nn.Linear(dim, vocab_size)
        nn.init.normal_(self.head.weight, mean=0.0, std=dim**-0.5)
        nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            for connection, body in layer.connections():
                connection.init_branch(body)

    @property
    def name(self) -> str:
        return f"transformer_encoder-{len(self.layers)}-d{self.dim}"

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, time, vocab)`` for right-padded ``tokens`` with ``lengths`` real tokens a row."""
        key_mask = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None])[:, None, None, :]
        h = self.boundary.enter(self.embed(tokens))
        for layer in self.layers:
            h = layer(h, key_mask)
        return self.head(self.boundary(h))


@dataclass(frozen=True)
class MaskedBatch:
    """Sentences with some tokens replaced by the mask; ``targets`` is -100 except where masked."""

    tokens: Tensor
    lengths: Tensor
    targets: Tensor


@dataclass(frozen=True)
class ImageBatch:
    images: Tensor
    labels: Tensor


class Probe(ABC):
    """A model of the study: builds it at a depth with a strategy, serves batches, computes the loss.

    ``depth`` is the number of layers of the stack; each holds ``blocks_per_layer`` residual blocks.
    """

    name: str
    blocks_per_layer: int

    @abstractmethod
    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        """A freshly initialised network (seed the global RNG first)."""

    @abstractmethod
    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        """The stack's layers in order, and the module whose input is the last layer's output."""

    @abstractmethod
    def batches(self, seed: int) -> Iterator[Any]:
        """An endless stream of training batches, the same for the same seed."""

    @abstractmethod
    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        """The training loss of ``net`` on ``batch``."""

    @abstractmethod
    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """The optimizer of the training steps."""


def _dtype_of(net: nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


class TransformerProbe(Probe):
    """:class:`MaskedLMEncoder` on the English side of the embedded gettext corpus (short sentences)."""

    blocks_per_layer = 2

    def __init__(self, name: str, settings: TransformerSettings) -> None:
        self.name = name
        self.settings = settings
        self._data: tuple[Any, Tensor] | None = None

    def _sentences(self) -> tuple[Any, Tensor]:
        if self._data is None:
            from skipln.data.translation import TranslationDataModule

            data = TranslationDataModule(vocab_size=self.settings.vocab_size)
            data.setup("fit")
            dataset = data.train_dataloader().dataset
            positions = dataset.source.lengths() + 1  # with </s>
            rows = torch.nonzero((positions >= 2) & (positions <= self.settings.max_length)).flatten()
            if len(rows) < self.settings.batch_size:
                raise ConfigError(
                    f"only {len(rows)} training sentences have at most max_length={self.settings.max_length} tokens, "
                    f"fewer than batch_size={self.settings.batch_size}: raise models.transformer.max_length"
                )
            self._data = (dataset, rows)
        return self._data

    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        s = self.settings
        return MaskedLMEncoder(s.vocab_size, skip, depth, s.dim, s.ffn_dim, s.heads, s.max_length)

    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        assert isinstance(net, MaskedLMEncoder)
        return list(net.layers), net.boundary

    def batches(self, seed: int) -> Iterator[MaskedBatch]:
        dataset, rows = self._sentences()
        generator = torch.Generator().manual_seed(seed)
        while True:
            chosen = rows[torch.randperm(len(rows), generator=generator)[: self.settings.batch_size]]
            batch = dataset.__getitems__(chosen.tolist())
            tokens, lengths = batch["src_tokens"], batch["src_lengths"]
            # Words may be masked, </s> not; every sentence gets at least one mask.
            maskable = torch.arange(tokens.shape[1])[None, :] < (lengths - 1)[:, None]
            masked = maskable & (torch.rand(tokens.shape, generator=generator) < self.settings.mask_fraction)
            forced = (torch.rand(tokens.shape, generator=generator) * maskable).argmax(dim=1)
            masked[torch.arange(len(tokens)), forced] = True
            yield MaskedBatch(tokens.masked_fill(masked, self.settings.vocab_size), lengths, tokens.masked_fill(~masked, -100))

    def loss(self, net: nn.Module, batch: MaskedBatch) -> Tensor:
        if self.settings.attention == "math":
            # Where no norm bounds the stream, attention saturates (scores of 1e30 and more). The
            # fused CPU kernel's backward then differences two roundings of the same number and
            # amplifies the error layer by layer into inf/nan; the math kernel's softmax backward
            # is exact there (a one-hot softmax passes no gradient to queries and keys).
            with sdpa_kernel([SDPBackend.MATH]):
                logits = net(batch.tokens, batch.lengths)
        else:
            logits = net(batch.tokens, batch.lengths)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return self.settings.optimizer.build(net.parameters(), "models.transformer.optimizer")


class ResNetProbe(Probe):
    """:class:`~skipln.models.resnet.ResNet` with ``depth`` blocks (a ResNet-(2·depth+2)) on scikit-learn's digits."""

    blocks_per_layer = 1

    def __init__(self, name: str, settings: ResNetSettings) -> None:
        self.name = name
        self.settings = settings
        self._images: Any | None = None

    def _train_set(self) -> Any:
        if self._images is None:
            from skipln.data.digits import DigitsDataModule

            data = DigitsDataModule(batch_size=self.settings.batch_size, augment=False)
            data.setup("fit")
            self._images = data.train_set
        return self._images

    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        return ResNet(2 * depth + 2, self.settings.block, num_classes=10, in_channels=1, width=self.settings.width, skip=skip)

    def stack(self, net: nn.Module) -> tuple[Sequence[nn.Module], nn.Module]:
        assert isinstance(net, ResNet)
        return list(net.blocks), net.boundary

    def batches(self, seed: int) -> Iterator[ImageBatch]:
        train_set = self._train_set()
        generator = torch.Generator().manual_seed(seed)
        while True:
            chosen = torch.randperm(len(train_set), generator=generator)[: self.settings.batch_size].tolist()
            images, labels = zip(*(train_set[i] for i in chosen), strict=True)
            yield ImageBatch(torch.stack(images), torch.stack(labels))

    def loss(self, net: nn.Module, batch: ImageBatch) -> Tensor:
        return nn.functional.cross_entropy(net(batch.images.to(_dtype_of(net))), batch.labels)

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return self.settings.optimizer.build(net.parameters(), "models.resnet.optimizer")


def make_probe(name: str, settings: TransformerSettings | ResNetSettings) -> Probe:
    """The probe of a model of the config, by its settings' kind."""
    if isinstance(settings, TransformerSettings):
        return TransformerProbe(name, settings)
    return ResNetProbe(name, settings)


# =========================================================================== measuring


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


# =========================================================================== the study


@dataclass
class Results:
    """What the study measured, as rows of its tables."""

    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    readings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, key: dict[str, Any], reading: Reading, *, per_layer: bool) -> None:
        self.readings.append(
            {
                **key,
                "loss": reading.loss,
                "input_first": reading.inputs[0],
                "input_last": reading.inputs[-1],
                "param_first": reading.params[0],
                "param_last": reading.params[-1],
                "param_total": combine_norms(reading.params),
            }
        )
        if per_layer:
            self.layers += [
                {
                    **key,
                    "layer": layer,
                    "input_grad_norm": norm,
                    "param_grad_norm": reading.params[layer] if layer < len(reading.params) else math.nan,
                }
                for layer, norm in enumerate(reading.inputs)
            ]


def prepare(probe: Probe, skip: SkipStrategy, depth: int, dtype: torch.dtype, seed: int) -> tuple[nn.Module, Iterator[Any]]:
    """The network of ``seed`` in ``dtype``, in training mode, and its stream of batches.

    A strategy that needs a profiling pass (Admin) gets it on the first batch, as a training
    task does before its first update.
    """
    torch.manual_seed(seed)
    net = probe.build(skip, depth).to(dtype)
    net.train()  # the gradients training sees: BN with batch statistics
    if needs_profiling(net):
        first = next(probe.batches(seed))
        profile(net, lambda: probe.loss(net, first))
    return net, probe.batches(seed)


def measure_init(probe: Probe, skip: SkipStrategy, depth: int, seed: int, dtypes: Sequence[torch.dtype]) -> tuple[Reading, torch.dtype]:
    """The gradients at initialisation (the network and the batch of ``seed``), and the precision they were read in.

    Each of ``dtypes`` is tried in order until one gives a finite reading: float32 where it
    suffices, float64 where float32 overflows. A reading that no precision can make finite is
    returned as the last one gave it.
    """
    for dtype in dtypes:
        net, batches = prepare(probe, skip, depth, dtype, seed)
        layers, end = probe.stack(net)
        batch = next(batches)
        reading = read_gradients(net, layers, end, lambda: probe.loss(net, batch))
        if reading.finite:
            break
    return reading, dtype


def measure_training(probe: Probe, skip: SkipStrategy, depth: int, seed: int, dtype: torch.dtype, steps: int) -> Iterator[Reading]:
    """The gradients of ``steps`` training steps, each read before its update.

    Stops after the first reading that is not finite: the update would fill the parameters
    with inf/nan, so training has diverged there.
    """
    net, batches = prepare(probe, skip, depth, dtype, seed)
    layers, end = probe.stack(net)
    optimizer = probe.optimizer(net)
    for _ in range(steps):
        batch = next(batches)
        reading = read_gradients(net, layers, end, lambda: probe.loss(net, batch))
        yield reading
        if not reading.finite:
            return
        optimizer.step()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def measure_cell(probe: Probe, cell: Cell, depth: int, config: StudyConfig) -> Results:
    """Every reading of one strategy at one depth: each seed at initialisation, then the training steps."""
    results = Results()
    base = {"model": probe.name, "family": cell.family, "strategy": cell.tag, "lambda": cell.lam, "depth": depth}
    for seed in config.seeds:
        reading, dtype = measure_init(probe, cell.skip, depth, seed, config.init_dtypes)
        key = {**base, "phase": "init", "step": 0, "seed": seed, "dtype": _dtype_name(dtype)}
        results.add(key, reading, per_layer=True)
    readings = measure_training(probe, cell.skip, depth, config.train_seed, config.train_dtype, config.steps)
    for step, reading in enumerate(readings):
        key = {**base, "phase": "train", "step": step, "seed": config.train_seed, "dtype": _dtype_name(config.train_dtype)}
        results.add(key, reading, per_layer=config.record_step(step) or not reading.finite)
    return results


def run_study(config: StudyConfig, log: Callable[[str], None] = print) -> Results:
    """Measure every model, depth and strategy of ``config``."""
    results = Results()
    cells = study_cells(config)
    torch.set_num_threads(config.threads)
    for name, settings in config.models.items():
        probe = make_probe(name, settings)
        not_applicable: set[str] = set()
        for depth in config.depths:
            for cell in cells:
                if cell.tag in not_applicable:
                    continue
                start = time.perf_counter()
                try:
                    measured = measure_cell(probe, cell, depth, config)
                except ConfigError as error:  # the model cannot hold this strategy
                    not_applicable.add(cell.tag)
                    results.skipped.append(
                        {"model": name, "family": cell.family, "strategy": cell.tag, "lambda": cell.lam, "reason": str(error)}
                    )
                    log(f"[{name} L={depth}] {cell.tag}: not applicable: {error}")
                    continue
                results.layers += measured.layers
                results.readings += measured.readings
                log(f"[{name} L={depth}] {cell.tag}: {time.perf_counter() - start:.1f} s")
    return results


# =========================================================================== tables

LAYER_COLUMNS = [
    "model", "family", "strategy", "lambda", "depth", "phase", "step", "seed", "dtype", "layer", "input_grad_norm",
    "param_grad_norm",
]  # fmt: skip
READING_COLUMNS = [
    "model", "family", "strategy", "lambda", "depth", "phase", "step", "seed", "dtype",
    "loss", "input_first", "input_last", "param_first", "param_last", "param_total",
]  # fmt: skip
SKIPPED_COLUMNS = ["model", "family", "strategy", "lambda", "reason"]


@dataclass(frozen=True)
class Tables:
    """The study's tables (the CSV files under ``--out``)."""

    layers: pd.DataFrame
    readings: pd.DataFrame
    skipped: pd.DataFrame

    FILES = {"layers": "gradients.csv", "readings": "readings.csv", "skipped": "skipped.csv"}

    @classmethod
    def from_results(cls, results: Results) -> Tables:
        return cls(
            pd.DataFrame(results.layers, columns=LAYER_COLUMNS),
            pd.DataFrame(results.readings, columns=READING_COLUMNS),
            pd.DataFrame(results.skipped, columns=SKIPPED_COLUMNS),
        )

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for attr, name in self.FILES.items():
            frame = getattr(self, attr)
            if attr == "layers":
                # The stack's output (layer L) has no parameters: an empty cell, not a measured nan.
                frame = frame.assign(
                    param_grad_norm=[
                        "" if layer == depth else f"{value:.4g}"
                        for layer, depth, value in zip(frame.layer, frame.depth, frame.param_grad_norm, strict=True)
                    ]
                )
            paths.append(write_csv(frame, out / name))
        return paths

    def select(self, models: Iterable[str]) -> Tables:
        """Only the rows of ``models``."""
        keep = set(models)
        return Tables(*(frame[frame.model.isin(keep)] for frame in (self.layers, self.readings, self.skipped)))

    @classmethod
    def read(cls, out: Path) -> Tables:
        missing = [name for name in cls.FILES.values() if not (out / name).is_file()]
        if missing:
            raise ConfigError(f"--replot: '{out}' lacks {', '.join(missing)}; run the study into it first (without --replot)")
        frames = {attr: pd.read_csv(out / name, keep_default_na=False, na_values=["nan", ""]) for attr, name in cls.FILES.items()}
        return cls(**frames)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a table: four significant digits (plenty for norms spread over 100 orders of magnitude),
    ``inf``/``nan`` where the arithmetic gave them, an empty λ where the strategy has none."""
    frame = frame.copy()
    if "lambda" in frame:
        frame["lambda"] = [("" if pd.isna(v) else f"{v:g}") for v in frame["lambda"]]
    frame.to_csv(path, index=False, float_format="%.4g", na_rep="nan")
    return path


def geometric_mean(values: Iterable[float]) -> float:
    """The geometric mean, which is what averages norms spread over orders of magnitude.

    ``nan`` if any value is ``nan``, ``inf`` if any is ``inf``, 0 if any is 0.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.isnan(v).any():
        return math.nan
    if np.isinf(v).any():
        return math.inf
    if (v == 0).any():
        return 0.0
    return float(np.exp(np.log(v).mean()))


def _group_keys(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    # groupby drops NaN keys (the λ of the baselines) unless told not to.
    yield from frame.groupby(keys, sort=False, dropna=False)


def summarise(readings: pd.DataFrame) -> pd.DataFrame:
    """Per (model, strategy, depth): the gradients at initialisation over seeds, and what training did."""
    keys = ["model", "family", "strategy", "lambda", "depth"]
    rows = []
    for key, group in _group_keys(readings, keys):
        init = group[group.phase == "init"]
        train = group[group.phase == "train"].sort_values("step")
        finite = train[np.isfinite(train[["loss", "input_first", "input_last", "param_total"]]).all(axis=1)]
        broken = train[~train.index.isin(finite.index)]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "seeds": len(init),
                "input_first": geometric_mean(init.input_first),
                "input_first_min": init.input_first.min(),
                "input_first_max": init.input_first.max(),
                "input_last": geometric_mean(init.input_last),
                "through_stack": geometric_mean(init.input_first / init.input_last),
                "param_first_to_last": geometric_mean(init.param_first / init.param_last),
                "loss_init": geometric_mean(init.loss),
                "train_dtype": train["dtype"].iloc[0] if len(train) else "",
                "train_input_first_step0": train.input_first.iloc[0] if len(train) else math.nan,
                "train_input_first_last": finite.input_first.iloc[-1] if len(finite) else math.nan,
                "train_loss_step0": train.loss.iloc[0] if len(train) else math.nan,
                "train_loss_last": finite.loss.iloc[-1] if len(finite) else math.nan,
                "train_steps_finite": len(finite),
                "diverged_at": broken.step.iloc[0] if len(broken) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``ln y`` against ``x``; nan unless every ``y`` is finite and positive."""
    yv = np.asarray(y, dtype=np.float64)
    if len(yv) < 2 or not np.all(np.isfinite(yv)) or not np.all(yv > 0):
        return math.nan
    return float(np.polyfit(np.asarray(x, dtype=np.float64), np.log(yv), 1)[0])


def predicted_slope(family: str, lam: float | None) -> float:
    """The paper's prediction for ``d ln‖∂loss/∂x_0‖ / d(blocks)``: ``ln λ`` for xSkip, 0 under LN (xSkip+LN, rSkip+LN)."""
    if family == XSKIP and lam is not None:
        return math.log(lam)
    if family in (XSKIP_LN, RSKIP_LN):
        return 0.0
    return math.nan


def slopes(summary: pd.DataFrame, blocks_per_layer: Mapping[str, int]) -> pd.DataFrame:
    """Per (model, strategy): how ``‖∂loss/∂x_0‖`` at initialisation scales with depth.

    ``slope_per_block`` fits ``ln ‖∂loss/∂x_0‖`` against the number of residual blocks
    (``depth × blocks_per_layer``) beside ``predicted_per_block``; ``through_stack_per_block``
    fits the ratio ``‖∂loss/∂x_0‖ / ‖∂loss/∂x_L‖`` (the stack's own gain, without what the head
    does with the output's scale); ``growth_L<d>`` is ``‖∂loss/∂x_0‖`` at depth ``d`` over its value
    at the smallest depth.
    """
    rows = []
    for key, group in _group_keys(summary, ["model", "family", "strategy", "lambda"]):
        group = group.sort_values("depth")
        model, family, strategy, lam = key
        blocks = group.depth * blocks_per_layer[model]
        row: dict[str, Any] = {
            "model": model,
            "family": family,
            "strategy": strategy,
            "lambda": lam,
            "blocks_per_layer": blocks_per_layer[model],
            "slope_per_block": _slope(blocks, group.input_first),
            "predicted_per_block": predicted_slope(family, None if pd.isna(lam) else float(lam)),
            "through_stack_per_block": _slope(blocks, group.through_stack),
        }
        first = group.input_first.iloc[0]
        for depth, value in zip(group.depth.iloc[1:], group.input_first.iloc[1:], strict=True):
            row[f"growth_L{depth}"] = value / first if first > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: float) -> str:
    if pd.isna(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.2g}"


def summary_markdown(summary: pd.DataFrame, slope_table: pd.DataFrame) -> str:
    """Markdown tables of the study's headline numbers, one per model."""
    lines = []
    for model, group in summary.groupby("model", sort=False):
        depths = sorted(group.depth.unique())
        first = depths[0]
        growth = [d for d in depths[1:] if d in (48, 96)] or depths[1:]
        lines += [
            f"### {model}",
            "",
            f"‖∂loss/∂x_0‖ at initialisation (geometric mean over seeds); growth from L = {first}; slope of "
            "ln‖∂loss/∂x_0‖ per residual block against the prediction; the same slope for the stack's own gain "
            "‖∂loss/∂x_0‖/‖∂loss/∂x_L‖.",
            "",
            "| strategy | λ | " + " | ".join(f"L={d}" for d in depths) + " | "
            + " | ".join(f"×{first}→{d}" for d in growth) + " | slope/block | predicted | stack gain/block |",
            "|---" * (2 + len(depths) + len(growth) + 3) + "|",
        ]
        fits = slope_table[slope_table.model == model].set_index("strategy")
        for strategy, rows in group.groupby("strategy", sort=False):
            by_depth = rows.set_index("depth")
            fit = fits.loc[strategy]
            lam = rows["lambda"].iloc[0]
            cells = [strategy, "" if pd.isna(lam) else f"{lam:g}"]
            cells += [_fmt(by_depth.input_first.get(d, math.nan)) for d in depths]
            cells += [_fmt(fit.get(f"growth_L{d}", math.nan)) for d in growth]
            cells += [_fmt(fit.slope_per_block), _fmt(fit.predicted_per_block), _fmt(fit.through_stack_per_block)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# =========================================================================== figures

PANELS = ("xSkip: λ·x + F(x)", "xSkip+LN: LN(λ·x + F(x))", "rSkip+LN and other strategies")


def _panel(family: str) -> int:
    return {XSKIP: 0, XSKIP_LN: 1}.get(family, 2)


def _style(family: str, lam: float, strategy: str, others: list[str]) -> dict[str, Any]:
    """One colour per λ in the two λ panels (blue below 1, red above), one per strategy in the third."""
    import matplotlib

    if family in (XSKIP, XSKIP_LN):
        if lam == 1.0:
            return {"color": "black", "label": "λ = 1"}
        position = 0.5 + math.log(lam) / (2 * math.log(2.5))  # λ = 0.4 … 2.5 spans the colour map
        return {"color": matplotlib.colormaps["coolwarm"](min(max(position, 0.0), 1.0)), "label": f"λ = {lam:g}"}
    return {"color": matplotlib.colormaps["tab20"](others.index(strategy) % 20), "label": strategy}


def _finite_label(label: str, values: Sequence[float], what: str) -> str:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    return label if not bad else f"{label} ({what} {bad[0]}: {_fmt(values[bad[0]])})"


def _figure(rows: int, cols: int, width: float = 15.0, height: float = 3.6) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One y scale per row: a panel with LN beside one without shows how much flatter it is.
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, dpi=80, sharey="row")
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2 if len(ax.get_legend_handles_labels()[0]) > 5 else 1, loc="best")


def _others(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame[frame.family.map(_panel) == 2].strategy))


def plot_layers(layers: pd.DataFrame, model: str, depths: Sequence[int], blocks_per_layer: int, path: Path) -> Path:
    """Log ‖∂loss/∂x_l‖ against layer l at initialisation: a line per λ, xSkip beside xSkip+LN; a row per depth."""
    frame = layers[(layers.model == model) & (layers.phase == "init")]
    others = _others(frame)
    fig, axes = _figure(len(depths), 3)
    for row, depth in enumerate(depths):
        at_depth = frame[frame.depth == depth]
        for (family, strategy, lam), group in _group_keys(at_depth, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            stats = group.groupby("layer").input_grad_norm.agg([geometric_mean, "min", "max"])
            style = _style(family, lam, strategy, others)
            ax.plot(stats.index, stats.geometric_mean, color=style["color"], lw=1.4,
                    label=_finite_label(style["label"], list(stats.geometric_mean), "non-finite at layer"))
            ax.fill_between(stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.15, lw=0)
            if family == XSKIP and math.isfinite(stats.geometric_mean.iloc[-1]):
                # The paper's λ^(L−l), anchored at the stack's output.
                predicted = stats.geometric_mean.iloc[-1] * np.power(lam, blocks_per_layer * (depth - stats.index.to_numpy()))
                ax.plot(stats.index, predicted, color=style["color"], lw=0.8, ls="--")
        for col, ax in enumerate(axes[row]):
            ax.set_yscale("log")
            ax.set_title(f"{model}, L = {depth}: {PANELS[col]}", fontsize=9)
            ax.set_xlabel("layer l (L: the stack's output)", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_l‖ at init", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    axes[0][0].text(0.01, 0.01, "dashed: λ^(b·(L−l)) from the output", transform=axes[0][0].transAxes, fontsize=7)
    return _save(fig, path)


def plot_depth(summary: pd.DataFrame, blocks_per_layer: Mapping[str, int], path: Path) -> Path:
    """Log ‖∂loss/∂x_0‖ at initialisation against depth L: a row per model, a line per strategy."""
    models = list(dict.fromkeys(summary.model))
    fig, axes = _figure(len(models), 3)
    for row, model in enumerate(models):
        frame = summary[summary.model == model]
        others = _others(frame)
        for (family, strategy, lam), group in _group_keys(frame, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            group = group.sort_values("depth")
            style = _style(family, lam, strategy, others)
            ax.plot(group.depth, group.input_first, marker="o", ms=3, color=style["color"], lw=1.4,
                    label=_finite_label(style["label"], list(group.input_first), "non-finite at L index"))
            ax.fill_between(group.depth, group.input_first_min, group.input_first_max, color=style["color"], alpha=0.15, lw=0)
            if family == XSKIP and math.isfinite(group.input_first.iloc[0]):
                first = group.depth.iloc[0]
                predicted = group.input_first.iloc[0] * np.power(lam, blocks_per_layer[model] * (group.depth - first))
                ax.plot(group.depth, predicted, color=style["color"], lw=0.8, ls="--")
        for col, ax in enumerate(axes[row]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted(frame.depth.unique()), [str(d) for d in sorted(frame.depth.unique())])
            ax.set_title(f"{model}: {PANELS[col]}", fontsize=9)
            ax.set_xlabel("depth L (layers)", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_0‖ at init", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    axes[0][0].text(0.01, 0.01, "dashed: λ^(b·ΔL) from the smallest L", transform=axes[0][0].transAxes, fontsize=7)
    return _save(fig, path)


def plot_training(readings: pd.DataFrame, depth: int, path: Path) -> Path:
    """Log ‖∂loss/∂x_0‖ over the training steps at one depth: a row per model, a line per strategy."""
    frame = readings[(readings.phase == "train") & (readings.depth == depth)]
    models = list(dict.fromkeys(frame.model))
    fig, axes = _figure(max(len(models), 1), 3)
    for row, model in enumerate(models):
        at_model = frame[frame.model == model]
        others = _others(at_model)
        for (family, strategy, lam), group in _group_keys(at_model, ["family", "strategy", "lambda"]):
            ax = axes[row][_panel(family)]
            group = group.sort_values("step")
            style = _style(family, lam, strategy, others)
            label = style["label"]
            finite = np.isfinite(group[["loss", "input_first", "param_total"]]).all(axis=1)
            if not finite.all():
                label += f" (non-finite at step {group.step[~finite].iloc[0]})"
            ax.plot(group.step[finite], group.input_first[finite], color=style["color"], lw=1.2, label=label)
            if not finite.all() and finite.any():  # × marks the last finite reading of a diverged run
                ax.plot(group.step[finite].iloc[-1], group.input_first[finite].iloc[-1], "x", color=style["color"], ms=7)
        for col, ax in enumerate(axes[row]):
            ax.set_yscale("log")
            ax.set_title(f"{model}, L = {depth}, training ({frame['dtype'].iloc[0] if len(frame) else ''}): {PANELS[col]}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("‖∂loss/∂x_0‖", fontsize=8)
            ax.grid(alpha=0.3, which="major")
            _legend(ax)
    return _save(fig, path)


# =========================================================================== MLflow


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"models": {"resnet": {"width": 16}}}`` → ``("models.resnet.width", "16")``."""
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name)
        else:
            yield name, str(value)[:6000]  # MLflow's longest param value


def log_run(
    config: StudyConfig,
    files: Sequence[Path],
    markdown: str,
    slope_table: pd.DataFrame,
    *,
    run_name: str,
    tags: Mapping[str, str],
    tracking_uri: str,
    experiment: str,
) -> str:
    """Log the study as one MLflow run: the config as params, the slopes as metrics, every file as an artifact.

    Returns the run's id. A local SQLite store's path is made absolute and its folder created;
    a new experiment in it keeps its artifacts beside the database (``<folder>/<experiment>/``).
    """
    from mlflow.exceptions import MlflowException

    try:
        return _log_run(config, files, markdown, slope_table, run_name, tags, tracking_uri, experiment)
    except MlflowException as error:
        raise TrackingError(
            f"could not log the study to MLflow at {tracking_uri!r} (experiment {experiment!r}): {error}. The tables and "
            f"figures are written; log them later with --replot and a reachable --tracking-uri."
        ) from error


class TrackingError(SkipLNError):
    """The MLflow store cannot be reached or written."""


def _log_run(
    config: StudyConfig,
    files: Sequence[Path],
    markdown: str,
    slope_table: pd.DataFrame,
    run_name: str,
    tags: Mapping[str, str],
    tracking_uri: str,
    experiment: str,
) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from skipln.tracking import local_store_uri

    uri = local_store_uri(tracking_uri)
    assert uri is not None
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / experiment).as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    run = client.create_run(experiment_id, run_name=run_name, tags={"study": "gradients", **tags})
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten(config.resolved)]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        now = int(time.time() * 1000)
        metrics = []
        for row in slope_table.itertuples(index=False):
            for name in ("slope_per_block", "through_stack_per_block"):
                value = getattr(row, name)
                if math.isfinite(value):
                    metrics.append(Metric(f"{row.model}/{row.strategy}/{name}", float(value), now, 0))
        for start in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[start : start + 500])
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("summary.md", markdown), ("config.yaml", yaml.safe_dump(dict(config.resolved), sort_keys=False))):
                path = Path(tmp) / name
                path.write_text(text)
                client.log_artifact(run_id, str(path))
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="figures" if path.suffix == ".png" else "tables")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# =========================================================================== the command


def report(
    tables: Tables, config: StudyConfig, out: Path, figures: Path
) -> tuple[list[Path], str, pd.DataFrame]:
    """Write the derived tables and the figures; return every file written, the markdown summary and the slopes."""
    blocks = {name: make_probe(name, settings).blocks_per_layer for name, settings in config.models.items()}
    tables = tables.select(config.models)
    if tables.readings.empty:
        raise ConfigError(f"no measurements of the models {', '.join(config.models)} to report (check --models and --out)")
    summary = summarise(tables.readings)
    slope_table = slopes(summary, blocks)
    files = tables.write(out)
    for name, frame in (("summary.csv", summary), ("slopes.csv", slope_table)):
        files.append(write_csv(frame, out / name))
    measured = [m for m in config.models if m in set(summary.model)]
    for model in measured:
        depths = [d for d in config.profile_depths if d in set(summary[summary.model == model].depth)]
        files.append(plot_layers(tables.layers, model, depths, blocks[model], figures / f"gradients_{model}_layers.png"))
    files.append(plot_depth(summary, blocks, figures / "gradients_depth.png"))
    files.append(plot_training(tables.readings, config.training_depth, figures / "gradients_training.png"))
    return files, summary_markdown(summary, slope_table), slope_table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skipln.analysis.gradients",
        description=(
            "Measure ‖∂loss/∂x_l‖ and the parameter gradient of every layer against depth, for every skip strategy "
            "and λ, in a Transformer encoder and ResNets (Liu et al. 2020's central claim). Settings: --config."
        ),
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the study's YAML (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="apply the config's `quick:` overrides: a tiny study in seconds")
    parser.add_argument("--out", type=Path, default=Path("results/gradients"), help="folder of the CSV tables (default: %(default)s)")
    parser.add_argument("--figures", type=Path, default=None, help="folder of the PNG figures (default: --out)")
    parser.add_argument("--models", nargs="+", default=None, help="study only these models of the config")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the config's mlflow.tracking_uri)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's mlflow.experiment)")
    parser.add_argument("--replot", action="store_true", help="do not measure: rebuild summaries and figures from the CSVs in --out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(argv)
    try:
        config = load_config(args.config, quick=args.quick, models=args.models)
        figures = args.figures or args.out
        start = time.perf_counter()
        if args.replot:
            tables = Tables.read(args.out)
        else:
            tables = Tables.from_results(run_study(config, log=lambda line: print(line, file=sys.stderr, flush=True)))
        files, markdown, slope_table = report(tables, config, args.out, figures)
        run_id = log_run(
            config,
            files,
            markdown,
            slope_table,
            run_name="gradients" + ("-quick" if args.quick else ""),
            tags={"quick": str(args.quick).lower(), "replot": str(args.replot).lower()},
            tracking_uri=args.tracking_uri or config.tracking_uri,
            experiment=args.experiment or config.experiment,
        )
    except SkipLNError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(markdown)
    print(f"wrote {len(files)} files under {args.out} and {figures}; MLflow run {run_id} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
