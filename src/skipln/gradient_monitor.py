"""Gradients in every run: the paper's signal, logged to MLflow as training goes.

:class:`GradientMonitor` logs, every ``every_n_steps`` optimizer steps,

=====================================  ===================================================
metric                                 value
=====================================  ===================================================
``grad/first_block_input``             ``‖∂loss/∂x‖`` where ``x`` enters the first residual block
``grad/last_block_input``              the same at the last residual block
``grad/last_over_first``               their ratio: ≫ 1 gradients vanish towards the input, ≪ 1 they explode
``grad/param_total``                   the 2-norm of all parameter gradients together
=====================================  ===================================================

A model with several stacks of blocks (the Transformer's encoder and decoder) gets the first
three per stack: ``grad/encoder/first_block_input``, ``grad/decoder/last_over_first``, ….

How it finds the blocks without the model knowing: every residual block is a
:class:`~skipln.skip.SkipConnection` (the strategy contract), and a model keeps the blocks of
one stack in one ``nn.ModuleList`` (``encoder_layers``, ``decoder_layers``, ``blocks``). The
connections are grouped by that list, in the order the model registered them, and a forward
pre-hook on the first and last of each stack puts a tensor hook on the block's input. The
tensor hook receives ``∂loss/∂x`` summed over every use of ``x`` (the skip path and the body):
the gradient at the block's input, not a parameter gradient. A strategy whose stream is more
than a tensor (ResiDual's two streams, B2T's layer input) counts every tensor of the stream.

What the numbers mean across settings:

* Gradient accumulation: the norm over the activations of every micro-batch of the step.
* DDP: each rank sees the gradient of its own loss; the logged value is the norm over all
  ranks' activations of the gradient of the averaged loss, ``sqrt(Σ_r ‖g_r‖²) / world_size``
  (equal to one process on the whole batch when the shards are equal), the same on every rank.
  The parameter norm is taken after DDP's all-reduce.
* Mixed precision: bf16 needs nothing; with fp16's loss scaling the activation gradients are
  divided by the scale (parameter gradients are already unscaled at this point).
* Values are before gradient clipping (Lightning clips after ``on_before_optimizer_step``).
* ``torch.compile``: the block-input gradients are not logged for a compiled network (tensor
  hooks traced into a compiled graph fired on some steps only); ``grad/param_total`` is.

Metrics go straight to the run's loggers at the step they belong to, so the interval is this
callback's own, independent of ``trainer.log_every_n_steps``. On the steps in between, the hooks
return at once; measured costs are in docs/gradients.md ("Gradients in every run").
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import grad_norm, rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from skipln.errors import ConfigError
from skipln.skip import SkipConnection
from skipln.validation import is_int

PREFIX = "grad"
FIRST, LAST, RATIO, PARAMS = "first_block_input", "last_block_input", "last_over_first", "param_total"


@dataclasses.dataclass(frozen=True)
class Stack:
    """The residual blocks of one ``nn.ModuleList``: its label in metric names, its first and last connection."""

    label: str
    first: SkipConnection
    last: SkipConnection


def find_stacks(module: nn.Module) -> list[Stack]:
    """The stacks of skip connections in ``module``, grouped by the ``nn.ModuleList`` that holds their blocks.

    A stack's label is the list's attribute name without a ``_layers`` suffix (``encoder``,
    ``decoder``, ``blocks``). Connections nested in another connection are not counted.
    """
    groups: dict[str, list[tuple[str, SkipConnection]]] = defaultdict(list)
    outer: list[str] = []
    for name, child in module.named_modules():
        if not isinstance(child, SkipConnection) or any(name.startswith(o + ".") for o in outer):
            continue
        outer.append(name)
        parts = name.split(".")
        index = max((i for i, part in enumerate(parts) if part.isdigit()), default=len(parts) - 1)
        groups[".".join(parts[:index])].append((name, child))
    stacks = []
    for key, members in groups.items():
        label = (key.rsplit(".", 1)[-1] or "blocks").removesuffix("_layers")
        stacks.append(Stack(label, members[0][1], members[-1][1]))
    return stacks


def stream_tensors(x: Any) -> list[Tensor]:
    """The tensors a block receives: ``x`` itself, or the tensor fields of a stream object (once each)."""
    if isinstance(x, Tensor):
        candidates = [x]
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        candidates = [getattr(x, field.name) for field in dataclasses.fields(x)]
    else:
        candidates = []
    seen: set[int] = set()
    tensors = []
    for tensor in candidates:
        if isinstance(tensor, Tensor) and tensor.requires_grad and id(tensor) not in seen:
            seen.add(id(tensor))
            tensors.append(tensor)
    return tensors


class GradientMonitor(Callback):
    """Logs the gradient at the input of the first and last residual block, and the total parameter gradient.

    Args:
        every_n_steps: log at optimizer steps 0, N, 2N, …; 0 turns the monitor off.

    See the module's docstring for the metrics and how they behave under accumulation, DDP and
    mixed precision.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if not is_int(every_n_steps) or every_n_steps < 0:
            raise ConfigError(f"GradientMonitor: 'every_n_steps' must be an integer >= 0 (0 turns it off), got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self._stacks: list[Stack] = []
        self._handles: list[RemovableHandle] = []
        self._armed = False
        self._compiled = False  # a block's forward ran inside torch.compile: no block-input gradients
        self._warned = False
        self._squares: dict[str, Tensor] = {}  # squared norms, summed over micro-batches; kept on the device

    @property
    def enabled(self) -> bool:
        return self.every_n_steps > 0

    # -- hooks on the blocks ----------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit" or self._handles:
            return
        self._stacks = find_stacks(pl_module)
        if not self._stacks:
            rank_zero_warn(
                "GradientMonitor: the model has no skipln.skip.SkipConnection, so no block-input gradients are logged "
                "(only grad/param_total)"
            )
        several = len(self._stacks) > 1
        for stack in self._stacks:
            prefix = f"{PREFIX}/{stack.label}/" if several else f"{PREFIX}/"
            for connection, key in ((stack.first, prefix + FIRST), (stack.last, prefix + LAST)):
                self._handles.append(connection.register_forward_pre_hook(self._pre_hook(key)))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._stacks = [], []

    def _pre_hook(self, key: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if torch.compiler.is_compiling():
                # Tensor hooks traced into a compiled graph fire on some steps and not on others
                # (measured with torch 2.14): no number beats a wrong one. Traced, this hook is a no-op.
                self._compiled = True
                return
            if not self._armed or not torch.is_grad_enabled() or not args:
                return
            for tensor in stream_tensors(args[0]):
                tensor.register_hook(self._grad_hook(key))

        return hook

    def _grad_hook(self, key: str) -> Any:
        def hook(grad: Tensor) -> None:
            square = grad.detach().float().square().sum()
            self._squares[key] = self._squares[key] + square if key in self._squares else square

        return hook

    # -- when to measure and log ------------------------------------------------------------

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        due = self.enabled and trainer.global_step % self.every_n_steps == 0
        if due and not self._armed:
            self._squares = {}
        self._armed = due

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if not self._armed:
            return
        self._armed = False
        metrics = self._block_metrics(trainer) if not self._compiled else {}
        if self._compiled and not self._warned:
            self._warned = True
            rank_zero_warn(
                "GradientMonitor: the network is compiled (torch.compile), so only grad/param_total is logged; the "
                "block-input gradients need an eager network (compile: false)"
            )
        total = grad_norm(pl_module, norm_type=2).get("grad_2.0_norm_total")
        metrics[f"{PREFIX}/{PARAMS}"] = float(total) if total is not None else 0.0
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A batch that ends without an optimizer step still measured into _squares (accumulation);
        # stay armed only while the same step is due.
        self._armed = self._armed and self.enabled and trainer.global_step % self.every_n_steps == 0

    def _block_metrics(self, trainer: Trainer) -> dict[str, float]:
        keys = [key for stack_keys in self._keys() for key in stack_keys]
        device = trainer.strategy.root_device
        zero = torch.zeros((), device=device)
        squares = torch.stack([self._squares.get(key, zero).to(device, torch.float32) for key in keys]) if keys else zero[None]
        if trainer.world_size > 1:
            squares = trainer.strategy.reduce(squares, reduce_op="sum")
        squares = squares.double().cpu()
        norms = squares.sqrt() / trainer.world_size / _loss_scale(trainer)
        metrics = dict(zip(keys, norms.tolist()))
        for first, last in self._keys():
            ratio_key = last.removesuffix(LAST) + RATIO
            metrics[ratio_key] = metrics[last] / metrics[first] if metrics[first] > 0 else math.nan
        return metrics

    def _keys(self) -> list[tuple[str, str]]:
        several = len(self._stacks) > 1
        pairs = []
        for stack in self._stacks:
            prefix = f"{PREFIX}/{stack.label}/" if several else f"{PREFIX}/"
            pairs.append((prefix + FIRST, prefix + LAST))
        return pairs


def _loss_scale(trainer: Trainer) -> float:
    """fp16's current loss scale (the activation gradients carry it), 1 without a scaler."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


__all__ = ["GradientMonitor", "Stack", "find_stacks", "stream_tensors"]
