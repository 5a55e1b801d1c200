"""GradientMonitor: the gradient at the first and last block's input, their ratio and the parameter norm, every N steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.gradient_monitor import GradientMonitor, find_stacks
from skipln.models.resnet import ResNet
from skipln.models.transformer import Transformer
from skipln.skip import Plain, PostLN, Scaled
from skipln.skip.residual import ResiDual

FIRST, LAST, RATIO, PARAMS = "grad/first_block_input", "grad/last_block_input", "grad/last_over_first", "grad/param_total"


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call: (step, metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((int(step or 0), dict(metrics)))

    def grad_records(self) -> list[tuple[int, dict[str, float]]]:
        return [(step, m) for step, m in self.records if any(k.startswith("grad/") for k in m)]


class BlockStack(LightningModule):
    """Three residual blocks ``x + tanh(W x)`` (or ``λx + …``) in one ModuleList, then a linear read-out; SGD lr 0."""

    def __init__(self, scale: float = 1.0, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        strategy = Plain() if scale == 1.0 else Scaled(scale)
        self.stem = nn.Linear(3, width)
        self.bodies = nn.ModuleList(nn.Linear(width, width) for _ in range(3))
        self.blocks = nn.ModuleList(strategy.build(width) for _ in range(3))
        self.head = nn.Linear(width, 1)
        self.data = torch.randn(8, 3), torch.randn(8, 1)

    def run(self, x: Tensor, keep: list[Tensor] | None = None) -> Tensor:
        h = self.stem(x)
        for body, block in zip(self.bodies, self.blocks):
            if keep is not None:
                h.retain_grad()
                keep.append(h)
            h = block(h, lambda t, body=body: torch.tanh(body(t)))
        return self.head(h)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = self.data
        return nn.functional.mse_loss(self.run(x), y)

    def train_dataloader(self) -> Any:
        return [0] * 16

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(model: LightningModule, monitor: GradientMonitor, steps: int, logger: Logger | None = None, **trainer: Any) -> RecordingLogger:
    recorder = RecordingLogger()
    Trainer(
        max_steps=steps, logger=[recorder] + ([logger] if logger else []), callbacks=[monitor],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        log_every_n_steps=1000, **trainer,
    ).fit(model)
    return recorder


def by_hand(model: BlockStack) -> dict[str, float]:
    keep: list[Tensor] = []
    model.zero_grad()
    x, y = model.data
    nn.functional.mse_loss(model.run(x, keep), y).backward()
    first, last = keep[0].grad.norm().item(), keep[-1].grad.norm().item()
    params = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    return {FIRST: first, LAST: last, RATIO: last / first, PARAMS: params}


def test_the_logged_values_equal_a_hand_computation_of_the_block_input_gradients() -> None:
    model = BlockStack(scale=1.5)
    (step, metrics), = fit(model, GradientMonitor(every_n_steps=1), steps=1).grad_records()
    expected = by_hand(BlockStack(scale=1.5))
    assert step == 0 and set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5), key


def test_gradients_are_logged_at_every_nth_optimizer_step_only() -> None:
    records = fit(BlockStack(), GradientMonitor(every_n_steps=3), steps=7).grad_records()
    assert [step for step, _ in records] == [0, 3, 6]


def test_with_gradient_accumulation_the_norm_covers_every_micro_batch_of_the_step() -> None:
    single = fit(BlockStack(), GradientMonitor(every_n_steps=1), steps=1).grad_records()[0][1]
    accumulated = fit(BlockStack(), GradientMonitor(every_n_steps=1), steps=1, accumulate_grad_batches=2).grad_records()[0][1]
    # The same batch twice, each micro-batch's loss halved: sqrt(2 · (g/2)²) = g/√2 at the blocks.
    assert accumulated[FIRST] == pytest.approx(single[FIRST] / math.sqrt(2), rel=1e-5)


def test_every_n_steps_0_turns_the_monitor_off() -> None:
    model = BlockStack()
    monitor = GradientMonitor(every_n_steps=0)
    assert fit(model, monitor, steps=3).grad_records() == []
    assert all(not block._forward_pre_hooks for block in model.blocks)


def test_the_hooks_are_removed_when_fitting_ends() -> None:
    model = BlockStack()
    fit(model, GradientMonitor(every_n_steps=1), steps=2)
    assert all(not block._forward_pre_hooks for block in model.blocks)


@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_a_bad_interval_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="every_n_steps"):
        GradientMonitor(every_n_steps=value)


class Translator(LightningModule):
    """A 2+2-layer Transformer on one random batch (teacher forcing), for the metric names of two stacks."""

    def __init__(self, skip: Any = PostLN()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Transformer(vocab_size=20, skip=skip, encoder_layers=2, decoder_layers=2, dim=16, ffn_dim=32, heads=2)
        self.src, self.tgt = torch.randint(4, 20, (3, 5)), torch.randint(4, 20, (3, 6))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        logits = self.net(self.src, torch.full((3,), 5), self.tgt)
        return nn.functional.cross_entropy(logits.flatten(0, 1), self.tgt.flatten())

    def train_dataloader(self) -> Any:
        return [0] * 4

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_a_transformer_gets_encoder_and_decoder_metrics() -> None:
    (_, metrics), = fit(Translator(), GradientMonitor(every_n_steps=1), steps=1).grad_records()
    stacks = ("encoder", "decoder")
    names = {f"grad/{s}/{m}" for s in stacks for m in ("first_block_input", "last_block_input", "last_over_first")}
    assert set(metrics) == names | {PARAMS}
    assert all(math.isfinite(v) and v > 0 for v in metrics.values())


def test_a_stream_of_several_tensors_counts_each_of_them() -> None:
    (_, metrics), = fit(Translator(skip=ResiDual()), GradientMonitor(every_n_steps=1), steps=1).grad_records()
    assert metrics["grad/encoder/last_block_input"] > 0 and metrics["grad/decoder/first_block_input"] > 0


def test_a_resnet_is_one_stack_whose_first_and_last_blocks_are_the_first_and_last_connections() -> None:
    net = ResNet(depth=8, block="basic", num_classes=10, in_channels=1)
    (stack,) = find_stacks(net)
    assert stack.label == "blocks" and stack.first is net.blocks[0].connection and stack.last is net.blocks[-1].connection


def test_under_bf16_mixed_the_values_match_float32_closely() -> None:
    exact = fit(BlockStack(), GradientMonitor(every_n_steps=1), steps=1).grad_records()[0][1]
    mixed = fit(BlockStack(), GradientMonitor(every_n_steps=1), steps=1, precision="bf16-mixed").grad_records()[0][1]
    for key, value in exact.items():
        assert mixed[key] == pytest.approx(value, rel=0.05), key


def test_the_metrics_land_in_the_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="grad", tracking_uri=uri)
    fit(BlockStack(), GradientMonitor(every_n_steps=2), steps=4, logger=logger)
    client = mlflow.MlflowClient(uri)
    for key in (FIRST, LAST, RATIO, PARAMS):
        assert [m.step for m in client.get_metric_history(logger.run_id, key)] == [0, 2], key


# -- through the CLI: on by default (configs/defaults.yaml), off from the command line ---------

CLI_SHORT = [
    "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false", "--model.init_args.net.init_args.depth=8",
]


def cli_run_metrics(workdir: Path, *extra: str) -> dict[str, list[int]]:
    from conftest import CONFIGS, DEFAULTS

    from skipln.cli import cli_main

    cli_main(["fit", f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}", *CLI_SHORT, *extra], default_config_files=[DEFAULTS])
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    return {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics if k.startswith("grad/")}


@pytest.mark.slow
def test_every_cli_run_logs_the_gradient_metrics_by_default(workdir: Path) -> None:
    assert cli_run_metrics(workdir) == {key: [0] for key in (FIRST, LAST, RATIO, PARAMS)}  # every 50 steps


@pytest.mark.slow
def test_a_monitor_given_on_the_command_line_replaces_the_default_one(workdir: Path) -> None:
    steps = cli_run_metrics(workdir, "--trainer.callbacks+=skipln.gradient_monitor.GradientMonitor", "--trainer.callbacks.every_n_steps=2")
    assert steps == {key: [0, 2] for key in (FIRST, LAST, RATIO, PARAMS)}


@pytest.mark.slow
def test_every_n_steps_0_on_the_command_line_turns_it_off(workdir: Path) -> None:
    steps = cli_run_metrics(workdir, "--trainer.callbacks+=skipln.gradient_monitor.GradientMonitor", "--trainer.callbacks.every_n_steps=0")
    assert steps == {}


def test_a_compiled_network_logs_only_the_parameter_norm_with_a_warning() -> None:
    compiled_blocks = BlockStack()
    for block in compiled_blocks.blocks:
        block.compile(backend="eager")  # Dynamo traces the blocks (and their hooks); no code generation
    with pytest.warns(UserWarning, match="compiled"):
        records = fit(compiled_blocks, GradientMonitor(every_n_steps=1), steps=2).grad_records()
    assert [set(m) for _, m in records] == [{PARAMS}, {PARAMS}]
