"""A trained model from its checkpoint alone.

A checkpoint written by a run of the CLI holds the config of its task (network and strategy
included: :mod:`skipln.tasks.hparams`) and of its data module (Lightning's
``datamodule_hyper_parameters``). So, with nothing else given:

- in Python, ``TranslationTask.load_from_checkpoint(path)`` (or ``ClassificationTask``) rebuilds
  the network with its strategy and loads the weights;
- on the command line, ``main.py test|predict --ckpt_path path`` takes the model and data from
  the checkpoint (:func:`checkpoint_config`); ``--config`` files and options still override them,
  except the network, which is always the checkpoint's (LightningCLI re-applies a checkpoint's
  hyperparameters over the config).

A checkpoint whose weights do not fit the network it is loaded into (an older checkpoint
without its config, or a network built in Python) fails with one line that names the
strategy each side has (:func:`check_weights_fit`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skipln.errors import ConfigError
from skipln.tasks.hparams import CLASS_PATH_KEY, INSTANTIATOR_KEY

#: Where Lightning keeps a task's and a data module's hyperparameters in a checkpoint.
MODEL_HPARAMS_KEY = "hyper_parameters"
DATA_HPARAMS_KEY = "datamodule_hyper_parameters"
#: Arguments a task keeps out of its hyperparameters (so that the command line wins over them) but
#: records beside them, as the defaults of a run that names no config: ``{argument: value}``.
RUN_DEFAULTS_KEY = "skipln_run_defaults"
#: How many key names an error message quotes.
_QUOTED = 3


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's contents, tensors memory-mapped (cheap for large files), with a clear error if unreadable."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"checkpoint '{file}' does not exist: give the path of a .ckpt file (a run's checkpoints/ folder)")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated file, a non-zip pickle, …: all say "not a usable checkpoint"
        raise ConfigError(f"cannot read checkpoint '{file}': {type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ConfigError(f"'{file}' is not a Lightning checkpoint (it has no state_dict): give a .ckpt written by a fit")
    return checkpoint


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A full training checkpoint's contents (loop and callback states too), tensors memory-mapped; None if it does not load."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # a truncated or foreign file
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def run_checkpoint_dir(run_id: str, root: str | os.PathLike[str] = "mlruns") -> Path:
    """The checkpoint folder of an MLflow run: ``<root>/<experiment id>/<run id>/checkpoints``, where the CLI writes it.

    ``root`` is the fit's ``trainer.default_root_dir`` (``mlruns`` in ``configs/defaults.yaml``).
    """
    matches = sorted(Path(root).glob(f"*/{run_id}/checkpoints"))
    if not matches:
        raise ConfigError(
            f"'{run_id}' is neither a file, a folder nor a run with checkpoints under '{root}' (looked for "
            f"{root}/<experiment id>/{run_id}/checkpoints): check the run id, or pass the folder the runs are in"
        )
    return matches[0]


def checkpoint_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` and ``data`` configs (``class_path``/``init_args``) a checkpoint holds; either may be absent.

    Only hyperparameters that LightningCLI saved name their class; those of a task built in
    Python do not, and give no config.
    """
    config: dict[str, Any] = {}
    for key, hparams_key in (("model", MODEL_HPARAMS_KEY), ("data", DATA_HPARAMS_KEY)):
        hparams = checkpoint.get(hparams_key)
        if isinstance(hparams, Mapping) and CLASS_PATH_KEY in hparams:
            init_args = {k: v for k, v in hparams.items() if k not in (CLASS_PATH_KEY, INSTANTIATOR_KEY)}
            config[key] = {"class_path": hparams[CLASS_PATH_KEY], "init_args": init_args}
    run_defaults = checkpoint.get(RUN_DEFAULTS_KEY)
    if "model" in config and isinstance(run_defaults, Mapping):
        config["model"]["init_args"] = {**run_defaults, **config["model"]["init_args"]}
    return config


# -- does a checkpoint fit a network? ---------------------------------------------------------


def check_weights_fit(task: nn.Module, checkpoint: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError if ``checkpoint``'s weights do not fit ``task`` (names or shapes).

    Call it from ``LightningModule.on_load_checkpoint``, which Lightning calls before it loads the
    state dict: instead of PyTorch's many-line list of unexpected keys, the message says which
    strategy the checkpoint was trained with and which one the configured network has. A task
    with ``strict_loading = False`` (Lightning's switch for partial loading) is not checked. The
    ``strict`` argument of ``load_from_checkpoint`` does not reach this hook: partial loading
    there goes through ``torch.load`` and ``task.load_state_dict(…, strict=False)``.
    """
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, Mapping) or getattr(task, "strict_loading", True) is False:
        return
    own = task.state_dict()
    unexpected = [k for k in saved if k not in own]
    missing = [k for k in own if k not in saved]
    resized = [k for k in own if k in saved and tuple(own[k].shape) != tuple(getattr(saved[k], "shape", ()))]
    if not (unexpected or missing or resized):
        return
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} of its weights are not in the network ({_quote(unexpected)})")
    if missing:
        problems.append(f"{len(missing)} of the network's are not in it ({_quote(missing)})")
    if resized:
        k = resized[0]
        problems.append(f"{len(resized)} differ in shape (e.g. '{k}': {tuple(saved[k].shape)} saved, {tuple(own[k].shape)} configured)")
    raise ConfigError(
        f"the checkpoint's weights do not fit the configured network: it was trained with {_saved_strategy(checkpoint)}, "
        f"the configured network has {_configured_strategy(task)}; {'; '.join(problems)}. Configure the network it was "
        "trained with, or let the checkpoint rebuild it (main.py test|predict --ckpt_path without the model's --config; "
        "in Python, <Task>.load_from_checkpoint(path))."
    )


def _quote(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:_QUOTED])
    return f"e.g. {shown}" + (", …" if len(keys) > _QUOTED else "")


def _saved_strategy(checkpoint: Mapping[str, Any]) -> str:
    hparams = checkpoint.get(MODEL_HPARAMS_KEY)
    net = hparams.get("net") if isinstance(hparams, Mapping) else None
    if not isinstance(net, Mapping):
        return "an unrecorded network (the checkpoint holds no network config)"
    net_class = str(net.get("class_path", "?")).rsplit(".", 1)[-1]
    skip = (net.get("init_args") or {}).get("skip")
    if not isinstance(skip, Mapping):
        return f"network {net_class} (strategy not recorded)"
    args = ", ".join(f"{k}={v!r}" for k, v in (skip.get("init_args") or {}).items())
    return f"network {net_class} with skip strategy {str(skip.get('class_path', '?')).rsplit('.', 1)[-1]}({args})"


def _configured_strategy(task: nn.Module) -> str:
    net = getattr(task, "net", task)
    skip = getattr(net, "skip", None)
    return f"network {type(net).__name__} with skip strategy {skip!r}" if skip is not None else f"network {type(net).__name__}"


# -- the command line ---------------------------------------------------------------------------

#: Subcommands that evaluate a trained model, and so may take its config from its checkpoint.
EVALUATING_SUBCOMMANDS = ("validate", "test", "predict")


def with_checkpoint_config(argv: list[str]) -> list[str]:
    """``argv`` with the checkpoint's model and data configs put first, if it evaluates a ``--ckpt_path``.

    They go right after the subcommand, so ``--config`` files and options given after them
    still override them: ``main.py test --ckpt_path best.ckpt`` needs nothing else, and
    ``--config other_data.yaml`` tests the same model on other data.
    """
    subcommand = next((i for i, word in enumerate(argv) if word in (*EVALUATING_SUBCOMMANDS, "fit")), None)
    if subcommand is None or argv[subcommand] not in EVALUATING_SUBCOMMANDS:
        return argv
    paths = option_values(argv[subcommand + 1 :], "--ckpt_path")
    if not paths or not Path(paths[-1]).is_file():
        return argv  # "last", "best" or a missing file: Lightning resolves or reports them
    config = checkpoint_config(load_checkpoint(paths[-1]))
    given = [f"--{key}={json.dumps(value)}" for key, value in config.items()]
    return [*argv[: subcommand + 1], *given, *argv[subcommand + 1 :]]


def option_values(args: Sequence[str], option: str) -> list[str]:
    """The values ``args`` gives ``option`` (``--option value`` or ``--option=value``), in order (the last one counts)."""
    given = [(i, word) for i, word in enumerate(args) if word == option and i + 1 < len(args) or word.startswith(f"{option}=")]
    return [args[i + 1] if word == option else word.split("=", 1)[1] for i, word in given]


__all__ = [
    "DATA_HPARAMS_KEY",
    "MODEL_HPARAMS_KEY",
    "RUN_DEFAULTS_KEY",
    "check_weights_fit",
    "checkpoint_config",
    "load_checkpoint",
    "read_checkpoint",
    "run_checkpoint_dir",
    "with_checkpoint_config",
]
