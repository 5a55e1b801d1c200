"""Sweeps without Ray: grid files (list and search-space axes), where runs are tracked, and what a
sweep does with each existing run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from mlflow.entities import Run

from conftest import DEFAULTS, REPO
from skipln.run_vocabulary import STATE_TAG
from skipln.sweep.cli import main
from skipln.sweep.grid import SweepError, load_grid, overrides
from skipln.sweep.records import Action, checkpoint_to_test, decide
from skipln.sweep.store import config_value, read_store
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


SEARCH = """
name: tuned
axes:
  skip: [configs/skip/a.yaml, configs/skip/b.yaml]
  lr: {key: model.init_args.optimizer.init_args.lr, loguniform: [1.0e-4, 1.0e-1]}
search: {trials: 8, metric: val/acc, mode: max}
seeds: 5
"""


def test_a_search_axis_is_tuned_in_every_cell_of_the_list_axes(configs: Path) -> None:
    grid = load_grid(write(configs / "grid.yaml", SEARCH))
    assert [cell.key for cell in grid.cells()] == ["skip=a", "skip=b"]
    (axis,) = grid.search_axes
    assert (axis.axis, axis.key, axis.distribution, axis.args) == ("lr", "model.init_args.optimizer.init_args.lr", "loguniform", (1e-4, 0.1))
    assert axis.override(0.003) == "--model.init_args.optimizer.init_args.lr=0.003"
    assert grid.search is not None and (grid.search.trials, grid.search.metric, grid.search.mode) == (8, "val/acc", "max")
    assert (grid.search.grace_period, grid.search.reduction_factor, grid.search_seed) == (1, 3, 0)


def test_a_search_axis_becomes_a_ray_tune_domain(configs: Path) -> None:
    from ray.tune.search.sample import Categorical, Float

    grid = load_grid(write(configs / "grid.yaml", SEARCH.replace("loguniform: [1.0e-4, 1.0e-1]", "choice: [16, 32]")))
    assert isinstance(grid.search_axes[0].domain(), Categorical)
    grid = load_grid(write(configs / "grid.yaml", SEARCH))
    domain = grid.search_axes[0].domain()
    assert isinstance(domain, Float) and (domain.lower, domain.upper) == (1e-4, 0.1)


def test_a_grid_search_axis_tries_every_value_with_ray_tunes_own_generator(configs: Path) -> None:
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from skipln.sweep.search import _search_algorithm

    grid = load_grid(write(configs / "grid.yaml", SEARCH.replace("loguniform: [1.0e-4, 1.0e-1]", "grid_search: [0.03, 0.1, 0.3]")))
    assert grid.search_axes[0].domain() == {"grid_search": [0.03, 0.1, 0.3]}
    assert isinstance(_search_algorithm(grid), BasicVariantGenerator)
    assert isinstance(_search_algorithm(load_grid(write(configs / "grid.yaml", SEARCH))), OptunaSearch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("loguniform: [1.0e-4, 1.0e-1]", "grid_search: []"), "'grid_search' takes a non-empty list of values"),
        (("loguniform: [1.0e-4, 1.0e-1]", "normal: [0, 1]"), "one distribution of uniform, loguniform, randint, choice"),
        (("loguniform: [1.0e-4, 1.0e-1]", "loguniform: [0.1, 1.0e-4]"), "takes [low, high] with low < high"),
        (("loguniform: [1.0e-4, 1.0e-1]", "loguniform: [0, 1]"), "'loguniform' needs low > 0"),
        (("key: model.init_args.optimizer.init_args.lr", "key: 'model lr'"), "'key' must be a dotted config key"),
        (("search: {trials: 8, metric: val/acc, mode: max}", ""), "'search' is missing"),
        (("mode: max", "mode: up"), "'mode' must be max or min"),
        (("trials: 8", "trials: 0"), "'trials' must be an integer >= 1"),
        (("mode: max}", "mode: max, patience: 3}"), "unknown key(s) 'patience'"),
        (("metric: val/acc, ", ""), "'search' needs 'metric'"),
    ],
)
def test_a_bad_search_space_is_a_clear_error(configs: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(SweepError, match="grid file .*grid.yaml") as error:
        load_grid(write(configs / "grid.yaml", SEARCH.replace(*change)))
    assert message in str(error.value)


def test_search_settings_without_a_search_axis_are_refused(configs: Path) -> None:
    with pytest.raises(SweepError, match="'search' is given but no axis is a search space"):
        load_grid(write(configs / "grid.yaml", "name: x\nsearch: {trials: 2, metric: val/acc, mode: max}\n"))


# --- what happens to an existing run -------------------------------------------------------


def fake_run(status: str, state: str | None = None) -> Run:
    tags = {} if state is None else {STATE_TAG: state}
    return SimpleNamespace(info=SimpleNamespace(status=status), data=SimpleNamespace(tags=tags))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("status", "state", "last_ckpt", "action"),
    [
        ("FINISHED", "tested", False, Action.SKIP),
        ("FINISHED", "fitted", True, Action.TEST),  # the driver stopped between fit and test
        ("FAILED", "fitted", True, Action.TEST),  # the test crashed
        ("RUNNING", "fitting", True, Action.RESUME),  # the process was killed
        ("RUNNING", "fitting", False, Action.RESTART),
        ("FAILED", "fitting", True, Action.RESUME),
        ("FAILED", "fitting", False, Action.RESTART),
        ("KILLED", None, False, Action.RESTART),
        ("FAILED", "diverged", True, Action.SKIP),  # a result: the same seed would diverge again
    ],
)
def test_what_a_sweep_does_with_an_existing_run(status: str, state: str | None, last_ckpt: bool, action: Action) -> None:
    assert decide(fake_run(status, state), has_last_checkpoint=last_ckpt) is action


def test_diverged_runs_are_run_again_only_when_asked() -> None:
    assert decide(fake_run("FAILED", "diverged"), has_last_checkpoint=True, retry_diverged=True) is Action.RESUME


def test_a_cell_without_a_run_gets_a_new_one() -> None:
    assert decide(None, has_last_checkpoint=False) is Action.NEW


# --- the command line, without running anything -------------------------------------------


@pytest.fixture
def repo(configs: Path) -> Path:
    """A working directory laid out like the repository: main.py, configs/defaults.yaml, an empty store."""
    write(configs / "main.py", "raise SystemExit('not run by these tests')\n")
    write(configs / "configs" / "defaults.yaml", DEFAULTS.read_text())
    new_store(configs)
    write(configs / "sweeps" / "demo.yaml", "name: demo\nbase: configs/base.yaml\naxes:\n  skip: [configs/skip/a.yaml, configs/skip/b.yaml]\nseeds: [0, 1]\n")
    return configs


def store_runs(repo: Path) -> list[Run]:
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_dry_run_shows_the_commands_and_changes_nothing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "sweeps/demo.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would run 4 of 4 runs" in out
    assert "main.py fit --config configs/base.yaml --config configs/skip/a.yaml --seed_everything=0" in out
    assert store_runs(repo) == []


def test_dry_run_of_a_search_says_what_it_would_search(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "sweeps" / "tuned.yaml", SEARCH)
    assert main(["run", "sweeps/tuned.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would search skip=a: 8 trials, max val/acc, over model.init_args.optimizer.init_args.lr ~ loguniform[0.0001, 0.1]" in out
    assert "would run 10 of 10 runs" in out and "(at the searched values)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-trial=0"], "--cpus-per-trial and --gpus-per-trial must be >= 0, not both 0"),
        (["--gpus-per-trial=1.5"], "--gpus-per-trial above 1 must be a whole number"),
        (["--max-retries=-1"], "--max-retries must be >= 0"),
        (["--name=two words"], "--name must be letters"),
    ],
)
def test_bad_resources_are_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["run", "sweeps/demo.yaml", *args]) == 2
    assert message in capsys.readouterr().err


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




# --- planning against the store -------------------------------------------------------------


def planner(repo: Path, *extra: str):  # type: ignore[no-untyped-def]
    from skipln.sweep.launch import Launcher
    from skipln.sweep.runner import Sweep
    from skipln.sweep.store import Store

    uri = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    launcher = Launcher("python", repo / "main.py", repo, Store(uri, EXPERIMENT), experiment_id, repo / "configs" / "defaults.yaml")
    messages: list[str] = []
    return Sweep(load_grid(repo / "sweeps" / "demo.yaml", root=repo), launcher, client, tuple(extra), out=messages.append), messages


def test_a_new_run_gets_the_sweeps_tags_and_a_later_plan_finds_it(repo: Path) -> None:
    sweep, _ = planner(repo)
    first = sweep.plan({})
    assert [p.action for p in first] == [Action.NEW] * 4
    sweep.create_run(first[1], None)
    run = sweep.client.get_run(first[1].run_id)
    assert run.info.run_name == "b-s0"
    assert {k: run.data.tags[k] for k in ("sweep", "sweep_cell", "sweep_cell_index", "seed", "sweep.skip")} == {
        "sweep": "demo", "sweep_cell": "skip=b", "sweep_cell_index": "1", "seed": "0", "sweep.skip": "b",
    }  # fmt: skip
    again = sweep.plan({})
    assert again[1].run_id == first[1].run_id and again[1].action is Action.RESTART  # made, never started


def test_a_changed_grid_is_refused_rather_than_mixed_into_old_runs(repo: Path) -> None:
    sweep, _ = planner(repo)
    sweep.create_run(sweep.plan({})[0], None)
    changed, _ = planner(repo, "--trainer.max_epochs=9")
    with pytest.raises(SweepError, match=r"1 run\(s\) of sweep 'demo' were made with other arguments") as error:
        changed.plan({})
    assert "now:  configs/base.yaml configs/skip/a.yaml --trainer.max_epochs=9" in str(error.value)
    changed.accept_changed = True
    assert len(changed.plan({})) == 4


def test_editing_a_config_file_after_its_runs_is_warned_about(repo: Path) -> None:
    sweep, messages = planner(repo)
    sweep.create_run(sweep.plan({})[0], None)
    write(repo / "configs" / "skip" / "a.yaml", "# a comment does not count\ntrainer:\n  max_epochs: 1\n")
    sweep.plan({})
    assert messages == []
    write(repo / "configs" / "skip" / "a.yaml", "trainer:\n  max_epochs: 2\n")
    sweep.plan({})
    assert messages and "the config files of 1 run(s) changed since they were made" in messages[0]


def test_moving_part_of_a_config_into_a_file_it_names_is_no_edit(repo: Path) -> None:
    # jsonargparse reads `net: parts/net.yaml` as that file's contents: the runs' configuration did not change.
    write(repo / "configs" / "skip" / "a.yaml", "model:\n  init_args:\n    net:\n      class_path: N\n      init_args: {depth: 8}\n")
    sweep, messages = planner(repo)
    sweep.create_run(sweep.plan({})[0], None)
    write(repo / "configs" / "skip" / "parts" / "net.yaml", "class_path: N\ninit_args:\n  depth: 8\n")
    write(repo / "configs" / "skip" / "a.yaml", "model:\n  init_args:\n    net: parts/net.yaml\n")
    sweep.plan({})
    assert messages == []
    write(repo / "configs" / "skip" / "parts" / "net.yaml", "class_path: N\ninit_args:\n  depth: 9\n")
    sweep.plan({})
    assert messages and "the config files of 1 run(s) changed since they were made" in messages[0]


def test_closing_a_search_marks_stopped_trials_pruned_and_a_trial_stopped_after_its_fit_ended_fitted(workdir: Path) -> None:
    from skipln.sweep.search import _close_trials

    client = mlflow.MlflowClient(new_store(workdir))
    experiment_id = client.create_experiment(EXPERIMENT)
    parent = client.create_run(experiment_id).info.run_id

    def trial(state: str, status: str | None) -> str:
        run_id = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, STATE_TAG: state}).info.run_id
        if status is not None:
            client.set_terminated(run_id, status)
        return run_id

    killed_mid_fit, stopped_at_its_end, completed = trial("fitting", None), trial("fitting", "FINISHED"), trial("fitted", "FINISHED")
    _close_trials(SimpleNamespace(client=client, launcher=SimpleNamespace(experiment_id=experiment_id)), parent, set())

    runs = {run_id: client.get_run(run_id) for run_id in (killed_mid_fit, stopped_at_its_end, completed)}
    assert [(r.data.tags[STATE_TAG], r.info.status) for r in runs.values()] == [
        ("pruned", "FINISHED"), ("fitted", "FINISHED"), ("fitted", "FINISHED")
    ]
