"""The study's settings: ``configs/analysis/gradients.yaml`` read into a :class:`StudyConfig`.

Every key is checked as it is read (type, range, choice) and a key nobody reads is an error, so
a typo fails at once with a one-line :class:`~skipln.errors.ConfigError` instead of after an
hour of measuring. ``quick:`` holds overrides that ``--quick`` merges over the rest.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from skipln.errors import ConfigError
from skipln.skip import SkipStrategy
from skipln.validation import is_int, is_real

DEFAULT_CONFIG = Path("configs/analysis/gradients.yaml")
KINDS = ("transformer", "resnet")
ATTENTION = ("math", "default")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


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
        if not is_int(value) or value < minimum:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, name: str, low: float = -math.inf, high: float = math.inf) -> float:
        value = self.raw(name)
        if not is_real(value) or not low < value < high:
            raise ConfigError(f"{_where(self.source, self._path(name))} must be a number in ({low:g}, {high:g}), got {value!r}")
        return float(value)

    def integers(self, name: str, minimum: int = 0) -> tuple[int, ...]:
        values = self.raw(name)
        if (
            not isinstance(values, list)
            or not values
            or any(not is_int(v) or v < minimum for v in values)
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
            or any(not is_real(v) or not 0 < v < math.inf for v in values)
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
    """The study's Transformer: an encoder stack under a masked-token head (see
    :class:`~skipln.analysis.gradients.masked_lm.MaskedLMEncoder`)."""

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
