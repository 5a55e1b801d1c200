"""The sweep runner: grids expand to cells × seeds, each an MLflow run that is made once, resumed when
interrupted, and skipped when done."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from mlflow.entities import Run

from conftest import DEFAULTS, REPO
from skipln import sweep as sweep_module
from skipln.sweep import (
    Action,
    SweepError,
    checkpoint_to_test,
    config_value,
    decide,
    is_running_here,
    load_grid,
    main,
    overrides,
    read_store,
    run_child,
)
from sweep_support import EXPERIMENT, new_store

# --- grid files ----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def configs(workdir: Path) -> Path:
    """A working directory with a few (empty) config files to name in grids."""
    for name in ("base.yaml", "skip/a.yaml", "skip/b.yaml", "skip/c.yaml", "net/small.yaml", "net/large.yaml"):
        write(workdir / "configs" / name, "trainer:\n  max_epochs: 1\n")
    return workdir


GRID = """
name: demo
base: configs/base.yaml
axes:
  net:
    small: configs/net/small.yaml
    large: [configs/net/large.yaml, --data.init_args.batch_size=8]
  skip: [configs/skip/a.yaml, configs/skip/b.yaml, configs/skip/c.yaml]
seeds: [0, 1]
"""


def test_grid_runs_every_cell_once_per_seed_all_cells_of_a_seed_first(configs: Path) -> None:
    grid = load_grid(write(configs / "grid.yaml", GRID))
    runs = grid.runs()
    assert len(runs) == 2 * 3 * 2
    assert [seed for _, seed in runs] == [0] * 6 + [1] * 6
    assert [cell.key for cell, _ in runs[:6]] == [
        "net=small,skip=a", "net=small,skip=b", "net=small,skip=c",
        "net=large,skip=a", "net=large,skip=b", "net=large,skip=c",
    ]  # fmt: skip
    assert [cell.key for cell, _ in runs[6:]] == [cell.key for cell, _ in runs[:6]]


def test_cell_keys_do_not_depend_on_the_order_of_axes_or_the_seeds(configs: Path) -> None:
    reordered = GRID.replace("seeds: [0, 1]", "seeds: 5")
    net, skip = reordered.index("  net:"), reordered.index("  skip:")
    reordered = reordered[:net] + reordered[skip : reordered.index("seeds")] + reordered[net:skip] + reordered[reordered.index("seeds") :]
    first = load_grid(write(configs / "one.yaml", GRID))
    second = load_grid(write(configs / "two.yaml", reordered))
    assert [axis for axis, _ in second.axes] == ["skip", "net"]
    assert {cell.key for cell in first.cells()} == {cell.key for cell in second.cells()}
    assert len({cell.key for cell in first.cells()}) == 6


def test_a_run_applies_base_then_each_axis_in_the_files_order(configs: Path) -> None:
    grid = load_grid(write(configs / "grid.yaml", GRID))
    cell = next(c for c in grid.cells() if c.key == "net=large,skip=b")
    assert grid.items(cell) == (
        "configs/base.yaml", "configs/net/large.yaml", "--data.init_args.batch_size=8", "configs/skip/b.yaml",
    )  # fmt: skip
    assert cell.name == "large-b"


def test_labels_are_file_names_override_values_or_the_mappings_keys(configs: Path) -> None:
    grid = load_grid(
        write(
            configs / "grid.yaml",
            "name: lr\naxes:\n  lr: [--model.init_args.optimizer.init_args.lr=0.1, --model.init_args.optimizer.init_args.lr=0.05]\n"
            "  skip: [configs/skip/a.yaml, [configs/skip/b.yaml, --trainer.max_epochs=3]]\n  net: {tiny: configs/net/small.yaml}\n",
        )
    )
    assert [cell.key for cell in grid.cells()][:2] == ["lr=0.1,net=tiny,skip=a", "lr=0.1,net=tiny,skip=b+3"]
    assert grid.seeds == (0,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nseed: [1]\n", "unknown key(s) 'seed'"),
        ("name: x\naxes:\n  skip: [configs/skip/a.yaml, configs/skip/missing.yaml]\n", "config file configs/skip/missing.yaml does not exist"),
        ("name: x\nbase: [configs/nowhere.yaml]\n", "'base': config file configs/nowhere.yaml does not exist"),
        ("axes: {}\n", "'name' must be a name"),
        ("name: two words\n", "'name' must be a name"),
        ("name: x\naxes:\n  skip: [configs/skip/a.yaml, configs/net/../skip/a.yaml]\n", "two choices have the label 'a'"),
        ("name: x\naxes:\n  lr: [--model.lr]\n", "must read --key=value"),
        ("name: x\naxes:\n  skip: []\n", "axis 'skip' has no choices"),
        ("name: x\nseeds: [0, 0]\n", "'seeds' repeats a seed"),
        ("name: x\nseeds: [-1]\n", "'seeds' must be a non-empty list of integers >= 0"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_a_bad_grid_file_is_a_clear_error_naming_what_is_wrong(configs: Path, text: str, message: str) -> None:
    with pytest.raises(SweepError, match="grid file .*grid.yaml") as error:
        load_grid(write(configs / "grid.yaml", text))
    assert message in str(error.value)


def test_a_missing_grid_file_is_a_clear_error(workdir: Path) -> None:
    with pytest.raises(SweepError, match="grid file sweeps/nope.yaml does not exist"):
        load_grid("sweeps/nope.yaml")


# --- command line, store, checkpoints ------------------------------------------------------


def test_extra_arguments_become_overrides_and_config_files(configs: Path) -> None:
    items = overrides(["--trainer.max_epochs", "2", "--data.init_args.batch_size=4", "--config", "configs/base.yaml"], configs)
    assert items == ("--trainer.max_epochs=2", "--data.init_args.batch_size=4", "configs/base.yaml")
    with pytest.raises(SweepError, match="unexpected argument 'oops'"):
        overrides(["oops"], configs)
    with pytest.raises(SweepError, match="config file configs/missing.yaml does not exist"):
        overrides(["--config=configs/missing.yaml"], configs)


def test_the_store_comes_from_the_configs_with_later_files_and_overrides_winning(configs: Path) -> None:
    write(configs / "team.yaml", "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
          "    - class_path: lightning.pytorch.loggers.MLFlowLogger\n      init_args:\n        experiment_name: team\n"
          "        tracking_uri: sqlite:///mlruns/mlflow.db\n")  # fmt: skip
    store = read_store([str(DEFAULTS), "team.yaml"], configs)
    assert store.experiment == "team"
    assert store.tracking_uri == f"sqlite:///{configs / 'mlruns' / 'mlflow.db'}"
    assert read_store([str(DEFAULTS), "--trainer.logger.init_args.tracking_uri=http://127.0.0.1:5000"], configs).tracking_uri == "http://127.0.0.1:5000"
    assert config_value([str(DEFAULTS), "--trainer.default_root_dir=runs"], "trainer.default_root_dir", configs) == "runs"


def test_the_best_checkpoint_recorded_in_last_ckpt_is_tested_else_last(tmp_path: Path) -> None:
    assert checkpoint_to_test(tmp_path, tmp_path) is None
    best = tmp_path / "best-epoch003.ckpt"
    torch.save({"callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_path": best.name}}}, tmp_path / "last.ckpt")
    assert checkpoint_to_test(tmp_path, tmp_path) == tmp_path / "last.ckpt"  # the best file is gone
    torch.save({}, best)
    assert checkpoint_to_test(tmp_path, tmp_path) == best


def test_a_child_process_output_is_kept_and_its_exit_status_returned(tmp_path: Path) -> None:
    started: list[int] = []
    code = run_child([sys.executable, "-c", "print('epoch 1: loss 0.5'); raise SystemExit(3)"], tmp_path / "fit.log",
                     echo=False, on_start=started.append)  # fmt: skip
    assert code == 3
    assert "epoch 1: loss 0.5" in (tmp_path / "fit.log").read_text()
    assert len(started) == 1


def test_a_run_counts_as_running_here_only_while_its_process_lives() -> None:
    run_id = "0123456789abcdef0123456789abcdef"
    script = "import time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script, f"--run_id={run_id}"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"  # it has replaced the forked copy of us
        host = socket.gethostname()
        assert is_running_here(run_id, host, str(child.pid))
        assert not is_running_here("another-run", host, str(child.pid))
        assert not is_running_here(run_id, "another-host", str(child.pid))
    finally:
        child.kill()
        child.wait()
    assert not is_running_here(run_id, host, str(child.pid))


# --- what happens to an existing run -------------------------------------------------------


def fake_run(status: str, state: str | None = None) -> Run:
    tags = {} if state is None else {sweep_module.STATE_TAG: state}
    return SimpleNamespace(info=SimpleNamespace(status=status), data=SimpleNamespace(tags=tags))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("status", "state", "last_ckpt", "here", "action"),
    [
        ("FINISHED", "tested", False, False, Action.SKIP),
        ("FINISHED", "fitted", True, False, Action.TEST),  # the runner stopped between fit and test
        ("FAILED", "fitted", True, False, Action.TEST),  # the test crashed
        ("RUNNING", "fitting", True, False, Action.RESUME),  # the process was killed
        ("RUNNING", "fitting", False, False, Action.RESTART),
        ("FAILED", "fitting", True, False, Action.RESUME),
        ("FAILED", "fitting", False, False, Action.RESTART),
        ("KILLED", None, False, False, Action.RESTART),
        ("RUNNING", "fitting", True, True, Action.BUSY),  # another runner on this machine has it
        ("FAILED", "diverged", True, False, Action.SKIP),  # a result: the same seed would diverge again
    ],
)
def test_what_a_sweep_does_with_an_existing_run(status: str, state: str | None, last_ckpt: bool, here: bool, action: Action) -> None:
    assert decide(fake_run(status, state), has_last_checkpoint=last_ckpt, running_here=here) is action


def test_diverged_runs_are_run_again_only_when_asked() -> None:
    run = fake_run("FAILED", "diverged")
    assert decide(run, has_last_checkpoint=True, running_here=False, retry_diverged=True) is Action.RESUME


def test_a_cell_without_a_run_gets_a_new_one() -> None:
    assert decide(None, has_last_checkpoint=False, running_here=False) is Action.NEW


# --- sweeps against a real store, with a stand-in for main.py ------------------------------


class FakeCLI:
    """Stands in for ``python main.py fit|test``: logs into the given run, writes checkpoints, as the CLI does.

    ``fail`` holds (stage, config file) pairs whose child exits with status 1 (the run ends FAILED);
    ``diverge`` config files whose fit the DivergenceGuard stops; ``interrupt_at`` makes the n-th
    child (0-based) raise KeyboardInterrupt (Ctrl-C).
    """

    def __init__(self, tracking_uri: str, fail: Sequence[tuple[str, str]] = (), interrupt_at: int | None = None) -> None:
        self.client = mlflow.MlflowClient(tracking_uri)
        self.fail = set(fail)
        self.diverge: set[str] = set()
        self.interrupt_at = interrupt_at
        self.calls: list[tuple[str, str, dict[str, str], list[str]]] = []

    def __call__(self, command: Sequence[str], log: Path, *, echo: bool = True, cwd: Path | None = None,
                 on_start: Callable[[int], None] | None = None) -> int:  # fmt: skip
        stage, args = command[2], list(command[3:])
        options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        run_id = options["trainer.logger.init_args.run_id"]
        self.calls.append((stage, run_id, options, configs))
        log.write_text(f"{stage} of {run_id}\n")
        if on_start is not None:
            on_start(os.getpid())
        if len(self.calls) - 1 == self.interrupt_at:
            raise KeyboardInterrupt
        if any((stage, config) in self.fail for config in configs):
            self.client.set_terminated(run_id, "FAILED")
            return 1
        if stage == "fit" and self.diverge & set(configs):
            self.client.set_tag(run_id, "failure_reason", "training diverged: the loss is nan at step 3 (epoch 0) of …")
            self.client.set_terminated(run_id, "FAILED")
            return 1
        run = self.client.get_run(run_id)
        if stage == "fit":
            folder = Path(cwd or ".") / "mlruns" / run.info.experiment_id / run_id / "checkpoints"
            folder.mkdir(parents=True, exist_ok=True)
            best = folder / "best-epoch000.ckpt"
            torch.save({}, best)
            torch.save({"callbacks": {"ModelCheckpoint": {"best_model_path": str(best)}}}, folder / "last.ckpt")
            self.client.log_metric(run_id, "val/acc", 0.5 + 0.1 * int(options["seed_everything"]), step=1)
        else:
            self.client.log_metric(run_id, "test/acc", 0.9, step=1)
        self.client.set_terminated(run_id, "FINISHED")
        return 0

    def stages(self) -> list[tuple[str, str]]:
        return [(stage, configs[-1]) for stage, _, _, configs in self.calls]


@pytest.fixture
def repo(configs: Path) -> Path:
    """A working directory laid out like the repository: main.py, configs/defaults.yaml, an empty store."""
    write(configs / "main.py", "raise SystemExit('the tests replace the child processes')\n")
    shutil.copyfile(DEFAULTS, configs / "configs" / "defaults.yaml")
    new_store(configs)
    write(configs / "sweeps" / "demo.yaml", "name: demo\nbase: configs/base.yaml\naxes:\n  skip: [configs/skip/a.yaml, configs/skip/b.yaml]\nseeds: [0, 1]\n")
    return configs


def store_client(repo: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")


def demo_runs(repo: Path) -> dict[tuple[str, str], Run]:
    client = store_client(repo)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return {(r.data.tags["sweep_cell"], r.data.tags["seed"]): r for r in runs}


@pytest.fixture
def fake_cli(repo: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCLI:
    cli = FakeCLI(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    monkeypatch.setattr(sweep_module, "run_child", cli)
    return cli


def sweep(*args: str) -> int:
    return main(["run", "sweeps/demo.yaml", "--quiet", *args])


def test_each_cell_and_seed_is_one_tagged_run_fitted_then_tested_on_its_best_checkpoint(repo: Path, fake_cli: FakeCLI) -> None:
    assert sweep("--trainer.max_epochs=2") == 0
    runs = demo_runs(repo)
    assert set(runs) == {("skip=a", "0"), ("skip=b", "0"), ("skip=a", "1"), ("skip=b", "1")}
    run = runs[("skip=b", "1")]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "b-s1"
    assert {k: run.data.tags[k] for k in ("sweep", "sweep_cell", "sweep_cell_index", "seed", "sweep.skip", "sweep_state")} == {
        "sweep": "demo", "sweep_cell": "skip=b", "sweep_cell_index": "1", "seed": "1", "sweep.skip": "b", "sweep_state": "tested",
    }  # fmt: skip
    fit, test = [call for call in fake_cli.calls if call[1] == run.info.run_id]
    assert fit[0] == "fit" and test[0] == "test"
    assert fit[3] == ["configs/base.yaml", "configs/skip/b.yaml"]
    assert fit[2]["seed_everything"] == "1" and fit[2]["trainer.max_epochs"] == "2"
    assert fit[2]["trainer.logger.init_args.experiment_name"] == EXPERIMENT
    assert "ckpt_path" not in fit[2]
    assert test[2]["ckpt_path"].endswith(f"{run.info.run_id}/checkpoints/best-epoch000.ckpt")
    logs = [a.path for a in store_client(repo).list_artifacts(run.info.run_id, "sweep")]
    assert logs == ["sweep/fit.log", "sweep/test.log"]


def test_running_again_skips_the_runs_that_are_done(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep() == 0
    calls = len(fake_cli.calls)
    assert sweep() == 0
    assert len(fake_cli.calls) == calls
    assert "4 of 4 runs complete" in capsys.readouterr().out
    assert len(demo_runs(repo)) == 4


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cli.fail = {("fit", "configs/skip/a.yaml")}
    assert sweep() == 1
    runs = demo_runs(repo)
    assert runs[("skip=a", "0")].info.status == "FAILED"
    assert runs[("skip=a", "0")].data.tags["sweep_fit_exit"] == "1"
    assert runs[("skip=b", "1")].data.tags["sweep_state"] == "tested"
    assert fake_cli.stages() == [("fit", "configs/skip/a.yaml"), ("fit", "configs/skip/b.yaml"), ("test", "configs/skip/b.yaml")] * 2
    assert "fit failed (exit 1)" in capsys.readouterr().out


def test_a_diverged_run_is_kept_as_a_result_untested_and_not_retried(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cli.diverge = {"configs/skip/b.yaml"}
    assert sweep() == 0  # divergence is what some strategies do: not an error of the sweep
    runs = demo_runs(repo)
    assert runs[("skip=b", "0")].data.tags["sweep_state"] == "diverged"
    assert ("test", "configs/skip/b.yaml") not in fake_cli.stages()
    assert "4 of 4 runs complete (2 diverged)" in capsys.readouterr().out
    calls = len(fake_cli.calls)
    assert sweep() == 0
    assert len(fake_cli.calls) == calls
    fake_cli.diverge.clear()
    assert sweep("--retry-diverged") == 0
    assert fake_cli.stages()[calls:] == [("fit", "configs/skip/b.yaml"), ("test", "configs/skip/b.yaml")] * 2
    retried = demo_runs(repo)[("skip=b", "0")]
    assert retried.data.tags["sweep_state"] == "tested"
    assert "failure_reason" not in retried.data.tags  # it described the attempt before


def test_failed_and_interrupted_runs_are_retried_in_the_same_run_resuming_from_last_ckpt(repo: Path, fake_cli: FakeCLI) -> None:
    fake_cli.fail = {("fit", "configs/skip/a.yaml")}
    sweep("--max-runs=1")  # skip=a, seed 0: FAILED, no checkpoint
    fake_cli.fail = set()
    sweep("--max-runs=1")  # the same run again, from scratch
    failed_then_done = demo_runs(repo)[("skip=a", "0")]
    assert failed_then_done.data.tags["sweep_state"] == "tested"
    assert failed_then_done.data.tags["sweep_attempts"] == "2"
    assert [c[1] for c in fake_cli.calls] == [failed_then_done.info.run_id] * 3
    assert "ckpt_path" not in fake_cli.calls[1][2]

    # A run whose process died: still RUNNING, with a last.ckpt from its fit.
    client = store_client(repo)
    client.update_run(failed_then_done.info.run_id, status="RUNNING")
    client.set_tag(failed_then_done.info.run_id, "sweep_state", "fitting")
    fake_cli.calls.clear()
    sweep("--max-runs=1")
    stage, run_id, options, _ = fake_cli.calls[0]
    assert (stage, run_id) == ("fit", failed_then_done.info.run_id)
    assert options["ckpt_path"].endswith(f"{run_id}/checkpoints/last.ckpt")
    assert demo_runs(repo)[("skip=a", "0")].info.status == "FINISHED"


def test_a_run_that_fitted_but_failed_its_test_is_only_tested_again(repo: Path, fake_cli: FakeCLI) -> None:
    fake_cli.fail = {("test", "configs/skip/a.yaml")}
    sweep("--max-runs=1")
    assert demo_runs(repo)[("skip=a", "0")].info.status == "FAILED"
    fake_cli.fail = set()
    fake_cli.calls.clear()
    sweep("--max-runs=1")
    assert fake_cli.stages() == [("test", "configs/skip/a.yaml")]
    assert demo_runs(repo)[("skip=a", "0")].data.tags["sweep_state"] == "tested"


def test_max_runs_stops_after_n_runs_and_leaves_the_rest(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep("--max-runs=3") == 0
    assert len(demo_runs(repo)) == 3
    assert "1 not run yet" in capsys.readouterr().out


def test_shards_split_a_sweep_between_runners(repo: Path, fake_cli: FakeCLI) -> None:
    assert sweep("--shard=2/2") == 0
    assert set(demo_runs(repo)) == {("skip=b", "0"), ("skip=b", "1")}
    assert sweep("--shard=1/2") == 0
    assert len(demo_runs(repo)) == 4


def test_dry_run_shows_the_commands_and_changes_nothing(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep("--dry-run") == 0
    out = capsys.readouterr().out
    assert "would run 4" in out
    assert "main.py fit --config configs/base.yaml --config configs/skip/a.yaml --seed_everything=0" in out
    assert fake_cli.calls == []
    assert demo_runs(repo) == {}


def test_a_changed_grid_is_refused_rather_than_mixed_into_old_runs(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    sweep("--max-runs=1")
    assert sweep("--trainer.max_epochs=9") == 2
    err = capsys.readouterr().err
    assert "1 run(s) of sweep 'demo' were made with other arguments" in err
    assert "now:  configs/base.yaml configs/skip/a.yaml --trainer.max_epochs=9" in err
    assert sweep("--trainer.max_epochs=9", "--name=demo_long") == 0  # a new name is a new sweep


def test_editing_a_config_file_after_its_runs_is_warned_about(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    sweep()
    write(repo / "configs" / "skip" / "a.yaml", "# a comment does not count\ntrainer:\n  max_epochs: 1\n")
    sweep()
    assert "warning" not in capsys.readouterr().out
    write(repo / "configs" / "skip" / "a.yaml", "trainer:\n  max_epochs: 2\n")
    assert sweep() == 0
    assert "warning: the config files of 2 run(s) changed since they were made" in capsys.readouterr().out


def test_ctrl_c_ends_the_run_killed_and_stops_the_sweep(repo: Path, fake_cli: FakeCLI, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cli.interrupt_at = 0
    assert sweep() == 130
    (run,) = demo_runs(repo).values()
    assert run.info.status == "KILLED"
    assert len(fake_cli.calls) == 1
    assert "run the same command again to resume" in capsys.readouterr().err


def test_running_from_outside_the_repository_is_a_clear_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "sweeps/demo.yaml"]) == 2
    assert "main.py does not exist: run the sweep from the repository root" in capsys.readouterr().err


CIFAR_STRATEGIES = ["skip", "xskip0.5", "xskip2", "xskip_ln0.5", "post_ln", "xskip_ln2", "rskip_ln2", "rskip_ln3"]
MT_STRATEGIES = ["post_ln", "xskip0.5", "xskip2", "xskip_ln0.5", "xskip_ln2", "rskip_ln2", "rskip_ln3", "pre_ln"]


@pytest.mark.parametrize(
    ("name", "nets", "strategies"),
    [
        ("cifar10_paper", ["resnet20", "resnet56", "preact_resnet110"], CIFAR_STRATEGIES),
        ("cifar100_paper", ["resnet20", "resnet56", "preact_resnet110"], CIFAR_STRATEGIES),
        ("iwslt14_paper", [], MT_STRATEGIES),
        ("quickstart_resnet", [], CIFAR_STRATEGIES),
        ("quickstart_transformer", [], MT_STRATEGIES),
    ],
)
def test_the_paper_grids_cover_the_papers_strategies_with_three_seeds(
    monkeypatch: pytest.MonkeyPatch, name: str, nets: list[str], strategies: list[str]
) -> None:
    monkeypatch.chdir(REPO)
    grid = load_grid(REPO / "sweeps" / f"{name}.yaml")  # every config file it names exists
    axes = {axis: [choice.label for choice in choices] for axis, choices in grid.axes}
    assert (grid.name, grid.seeds) == (name, (0, 1, 2))
    assert axes == ({"net": nets} if nets else {}) | {"skip": strategies}


def test_every_shipped_grid_loads_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        assert load_grid(path).name == path.stem


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_a_real_run_is_trained_tested_and_then_skipped(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    write(repo / "tiny.yaml", "model:\n  class_path: sweep_support.TinyClassifier\ndata:\n  class_path: sweep_support.Blobs\n"
          "trainer:\n  max_epochs: 2\n  enable_progress_bar: false\n  enable_model_summary: false\n  log_every_n_steps: 1\n")  # fmt: skip
    write(repo / "sweeps" / "tiny.yaml", "name: tiny\nbase: tiny.yaml\n")
    args = ["run", "sweeps/tiny.yaml", "--main", str(REPO / "main.py"), "--quiet"]
    assert main(args) == 0, capsys.readouterr().out
    client = store_client(repo)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep_state"] == "tested"
    assert {"val/acc", "train/loss_epoch", "test/acc"} <= set(run.data.metrics)
    assert run.data.params["seed_everything"] == "0"
    capsys.readouterr()
    assert main(args) == 0
    assert "1 of 1 runs complete" in capsys.readouterr().out
