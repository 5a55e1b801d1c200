"""The gradient study (skipln.analysis.gradients): what it measures, the paper's claim at tiny widths, the command.

Liu et al. 2020 (arXiv 2105.07205): unrolling ``λ·x + F(x)`` over the blocks puts ``λ^(L−l)`` into
``∂loss/∂x_l``; LN removes it. The numbers below are measured on the study's own models at tiny
widths (seeded, float32 where finite), and say where the claim holds and where it does not.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import Tensor, nn

from skipln.analysis import gradients as study
from skipln.analysis.gradients import (
    OptimizerSpec,
    Probe,
    ResNetProbe,
    ResNetSettings,
    TransformerProbe,
    TransformerSettings,
    joint_norm,
    load_config,
    measure_init,
    measure_training,
    read_gradients,
    stream_tensors,
)
from skipln.errors import ConfigError
from skipln.skip import BlockSite, PostLN, RecursiveSkipLN, ResiDual, Scaled, SkipStrategy

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "analysis" / "gradients.yaml"
FLOAT32_THEN_64 = (torch.float32, torch.float64)
SGD = OptimizerSpec("torch.optim.SGD", {"lr": 0.1})
ADAM = OptimizerSpec("torch.optim.Adam", {"lr": 5e-4, "betas": [0.9, 0.98]})


# --------------------------------------------------------------------------- a toy stack with exact gradients


class ZeroBodyLayer(nn.Module):
    """A residual layer whose body outputs zeros: ``y = skip(x, 0)``, so ``∂y/∂x`` is the skip path alone."""

    def __init__(self, skip: SkipStrategy, features: int, site: BlockSite) -> None:
        super().__init__()
        self.connection = skip.build(features, site=site)
        self.body = nn.Linear(features, features)

    def forward(self, h: Tensor) -> Tensor:
        return self.connection(h, lambda x: 0.0 * self.body(x))


class ToyNet(nn.Module):
    def __init__(self, skip: SkipStrategy, depth: int, features: int = 8) -> None:
        super().__init__()
        self.stem = nn.Linear(features, features)
        self.layers = nn.Sequential(*(ZeroBodyLayer(skip, features, BlockSite(i, depth)) for i in range(depth)))
        self.boundary = skip.build_boundary(features, site=BlockSite(depth - 1, depth))

    def forward(self, x: Tensor) -> Tensor:
        return self.boundary(self.layers(self.boundary.enter(self.stem(x))))


class ToyProbe(Probe):
    """``loss = sum(output)``: ``∂loss/∂x_L`` is all ones, so ``∂loss/∂x_l = λ^(L−l)`` everywhere exactly."""

    name = "toy"
    blocks_per_layer = 1

    def build(self, skip: SkipStrategy, depth: int) -> nn.Module:
        return ToyNet(skip, depth)

    def stack(self, net: nn.Module) -> tuple[list[nn.Module], nn.Module]:
        return list(net.layers), net.boundary

    def batches(self, seed: int) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield torch.randn(4, 8, generator=generator)

    def loss(self, net: nn.Module, batch: Tensor) -> Tensor:
        return net(batch.to(next(net.parameters()).dtype)).sum()

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return SGD.build(net.parameters())


ONES_NORM = math.sqrt(4 * 8)  # ‖∂loss/∂x_L‖ of ToyProbe: a 4×8 tensor of ones


def test_input_gradient_of_a_scaled_stack_is_lambda_to_the_remaining_layers() -> None:
    reading, dtype = measure_init(ToyProbe(), Scaled(1.5), 6, seed=0, dtypes=FLOAT32_THEN_64)
    assert dtype == torch.float32
    expected = [1.5 ** (6 - l) * ONES_NORM for l in range(7)]
    assert reading.inputs == pytest.approx(expected, rel=1e-5)
    assert len(reading.params) == 6


def test_init_reading_falls_back_to_float64_where_float32_overflows() -> None:
    # 10^40 > float32's 3.4e38: the gradient at the input is inf in float32, finite in float64.
    reading, dtype = measure_init(ToyProbe(), Scaled(10.0), 40, seed=0, dtypes=FLOAT32_THEN_64)
    assert dtype == torch.float64
    assert reading.inputs[0] == pytest.approx(1e40 * ONES_NORM, rel=1e-9)


def test_a_reading_no_precision_can_hold_is_kept_non_finite_not_dropped() -> None:
    reading, dtype = measure_init(ToyProbe(), Scaled(10.0), 40, seed=0, dtypes=(torch.float32,))
    assert dtype == torch.float32
    assert len(reading.inputs) == 41 and not math.isfinite(reading.inputs[0]) and not reading.finite


def test_training_stops_after_the_first_non_finite_step() -> None:
    readings = list(measure_training(ToyProbe(), Scaled(10.0), 40, seed=0, dtype=torch.float32, steps=5))
    assert len(readings) == 1 and not readings[0].finite
    finite = list(measure_training(ToyProbe(), Scaled(1.0), 4, seed=0, dtype=torch.float32, steps=3))
    assert len(finite) == 3 and all(r.finite for r in finite)


def test_joint_norm_does_not_overflow_where_the_norm_is_finite() -> None:
    big = torch.full((100,), 1e30, dtype=torch.float32)  # squares overflow float32
    assert joint_norm([big, big]) == pytest.approx(1e30 * math.sqrt(200), rel=1e-6)
    assert math.isinf(joint_norm([torch.tensor([1.0, math.inf])]))
    assert math.isnan(joint_norm([torch.tensor([math.nan, 1.0])]))
    assert joint_norm([]) == 0.0


def test_a_tensor_held_twice_by_a_stream_counts_once() -> None:
    x = torch.ones(3)
    stream = ResiDual().build_boundary(3).enter(x)  # both streams start as the same tensor
    assert len(stream_tensors(stream)) == 1
    with pytest.raises(TypeError, match="residual stream"):
        stream_tensors([x])


def test_read_gradients_reads_a_two_stream_strategy_at_every_layer() -> None:
    net = ToyNet(ResiDual(), depth=3)
    batch = torch.randn(4, 8)
    reading = read_gradients(net, list(net.layers), net.boundary, lambda: net(batch).sum())
    assert len(reading.inputs) == 4 and reading.finite and all(v > 0 for v in reading.inputs)


# --------------------------------------------------------------------------- the paper's claim, at tiny widths


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Probe]]:
    with pytest.MonkeyPatch.context() as patch:  # the tokenizer is trained into a private cache
        patch.setenv("SKIPLN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield {
            # The study's Transformer widths (d 64, 4 heads, FFN 128) on batches of 8: at d 16 LN(0.5·x + F)
            # no longer holds the gradient (the body's variance outweighs λ²), which is not the study's model.
            "transformer": TransformerProbe("transformer", TransformerSettings(64, 4, 128, 500, 16, 8, 0.15, "math", ADAM)),
            "resnet": ResNetProbe("resnet", ResNetSettings("basic", 4, 16, SGD)),
            "preact_resnet": ResNetProbe("preact_resnet", ResNetSettings("preact", 4, 16, SGD)),
        }


@pytest.fixture(scope="module")
def input_gradient(probes: dict[str, Probe]):  # type: ignore[no-untyped-def]
    """``‖∂loss/∂x_l‖`` at initialisation (seed 0) for every layer; each (model, strategy, depth) measured once."""

    @functools.cache
    def measure(model: str, skip: SkipStrategy, depth: int) -> tuple[float, ...]:
        torch.set_num_threads(1)
        return measure_init(probes[model], skip, depth, seed=0, dtypes=FLOAT32_THEN_64)[0].inputs

    return measure


def growth(input_gradient, model: str, skip: SkipStrategy, shallow: int, deep: int) -> float:  # type: ignore[no-untyped-def]
    return input_gradient(model, skip, deep)[0] / input_gradient(model, skip, shallow)[0]


def test_xskip_2_input_gradient_grows_like_2_per_block_in_the_resnet(input_gradient) -> None:  # type: ignore[no-untyped-def]
    factor = growth(input_gradient, "resnet", Scaled(2.0), 6, 48)
    assert factor > 1e10  # 2^42 ≈ 4e12
    assert math.log(factor) / 42 == pytest.approx(math.log(2), rel=0.1)


def test_xskip_2_input_gradient_grows_like_2_per_block_in_the_transformer(input_gradient) -> None:  # type: ignore[no-untyped-def]
    # Two blocks a layer; F adds its own share on top of λ (no norm bounds its Jacobian).
    factor = growth(input_gradient, "transformer", Scaled(2.0), 6, 24)
    assert factor > 1e9
    assert math.log(2) <= math.log(factor) / (2 * 18) <= 1.25 * math.log(2)


def test_xskip_half_input_gradient_vanishes_with_depth_in_the_transformer(input_gradient) -> None:  # type: ignore[no-untyped-def]
    assert growth(input_gradient, "transformer", Scaled(0.5), 6, 48) < 1e-4


@pytest.mark.parametrize(
    "skip", [PostLN(2.0), PostLN(1.0), PostLN(0.5), RecursiveSkipLN(2), RecursiveSkipLN(3)], ids=lambda s: s.tag
)
def test_layer_norm_keeps_the_transformer_input_gradient_within_10x_from_depth_6_to_48(input_gradient, skip) -> None:  # type: ignore[no-untyped-def]
    assert 0.1 < growth(input_gradient, "transformer", skip, 6, 48) < 10


def test_post_ln_input_gradient_collapses_in_the_first_training_steps_but_rskip_ln_3_holds(probes) -> None:  # type: ignore[no-untyped-def]
    def change(skip: SkipStrategy) -> float:
        readings = list(measure_training(probes["transformer"], skip, 24, seed=0, dtype=torch.float32, steps=10))
        assert len(readings) == 10
        return readings[-1].inputs[0] / readings[0].inputs[0]

    assert change(PostLN(1.0)) < 0.05
    assert change(RecursiveSkipLN(3)) > 0.2


def test_layer_norm_tames_lambda_2_in_the_resnet(input_gradient) -> None:  # type: ignore[no-untyped-def]
    assert growth(input_gradient, "resnet", PostLN(2.0), 6, 48) < 100
    assert growth(input_gradient, "resnet", RecursiveSkipLN(3), 6, 48) < 10
    assert growth(input_gradient, "resnet", Scaled(2.0), 6, 48) > 1e10


def test_preact_resnet_doubles_the_gradient_per_block_inside_a_stage_but_not_at_its_input(input_gradient) -> None:  # type: ignore[no-untyped-def]
    # The head's BatchNorm divides by the output's scale (∝ 2^L) and the zero-padded channels of each
    # new stage drop the gradient they carry: the input gradient stays flat while each stage doubles it.
    inputs = input_gradient("preact_resnet", Scaled(2.0), 48)
    last_stage = range(34, 47)  # blocks 32..47; skip the stage's first two
    assert [inputs[l] / inputs[l + 1] for l in last_stage] == pytest.approx([2.0] * len(last_stage), rel=0.05)
    assert 0.1 < growth(input_gradient, "preact_resnet", Scaled(2.0), 6, 48) < 10


# --------------------------------------------------------------------------- configuration


def test_quick_config_replaces_only_what_it_names() -> None:
    full, quick = load_config(CONFIG), load_config(CONFIG, quick=True)
    assert full.depths == (6, 12, 24, 48, 96) and quick.depths == (3, 6)
    assert quick.models["transformer"].dim == 16
    assert quick.models["transformer"].heads == 2 and quick.models["transformer"].max_length == full.models["transformer"].max_length


def test_study_lists_plain_and_post_ln_at_lambda_1_by_their_names() -> None:
    tags = [cell.tag for cell in study.study_cells(load_config(CONFIG))]
    assert {"skip", "post_ln", "xskip-2", "xskip_ln-0.5", "rskip_ln-r3", "admin", "b2t"} <= set(tags)
    assert len(tags) == len(set(tags))


def _write_config(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(CONFIG.read_text())
    change(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unknown_setting_is_an_error_that_names_it(tmp_path: Path) -> None:
    path = _write_config(tmp_path, lambda d: d["models"]["resnet"].update(widht=8))
    with pytest.raises(ConfigError, match=r"models\.resnet\.widht"):
        load_config(path)


def test_resnet_depths_must_split_into_three_stages(tmp_path: Path) -> None:
    path = _write_config(tmp_path, lambda d: d.update(depths=[6, 8]))
    with pytest.raises(ConfigError, match="multiple of 3"):
        load_config(path)


def test_a_strategy_that_is_not_a_skip_strategy_is_rejected(tmp_path: Path) -> None:
    path = _write_config(tmp_path, lambda d: d.update(baselines=[{"class_path": "torch.nn.Linear"}]))
    with pytest.raises(ConfigError, match=r"baselines\[0\].*not a skipln\.skip\.base\.SkipStrategy"):
        load_config(path)


def test_a_missing_config_file_says_how_to_fix_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert study.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err


# --------------------------------------------------------------------------- the command


def test_quick_run_writes_tables_and_figures_and_logs_one_mlflow_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    out, figures = tmp_path / "results", tmp_path / "figures"
    argv = ["--config", str(CONFIG), "--quick", "--models", "resnet", "--out", str(out), "--figures", str(figures)]
    assert study.main([*argv, "--tracking-uri", uri]) == 0

    layers = pd.read_csv(out / "gradients.csv", keep_default_na=False, na_values=["nan", ""])
    assert list(layers.columns) == study.LAYER_COLUMNS
    assert set(layers.depth) == {3, 6} and set(layers.phase) == {"init", "train"}
    assert set(pd.read_csv(out / "skipped.csv").strategy) == {"residual"}  # not for post-activation ResNets
    assert {"pre_ln", "rskip_ln-r2-rms"} <= set(layers.strategy)  # Pre-LN in every block; a norm chosen in YAML
    slopes = pd.read_csv(out / "slopes.csv")
    assert slopes.loc[slopes.strategy == "xskip-2", "slope_per_block"].item() > 0.3
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs == ["gradients_depth.png", "gradients_resnet_layers.png", "gradients_training.png"]
    assert all((figures / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("skipln-gradients")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["study"] == "gradients"
    assert run.data.params["depths"] == "[3, 6]"
    logged = {a.path for folder in ("tables", "figures") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"tables/gradients.csv", "tables/summary.csv", "figures/gradients_depth.png"} <= logged
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(tmp_path)


def test_the_study_runs_as_a_module_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "skipln.analysis.gradients", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
