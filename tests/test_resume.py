"""An interrupted fit (SIGTERM, SIGKILL) resumes with ``--ckpt_path last`` to exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml
from mlflow.entities import Run
from torch.utils.data import Dataset, TensorDataset

from conftest import DEFAULTS, REPO
from skipln.cli import cli_main
from skipln.data.batching import TokenBatchSampler
from skipln.data.image_loaders import training_loader
from skipln.data.resumable import EpochSampler, ResumableDataLoader
from skipln.errors import ConfigError
from skipln.models.resnet import ResNet
from skipln.resumable_runs import find_last_checkpoint
from skipln.resume import SIGINT_EXIT_CODE, SIGTERM_EXIT_CODE
from skipln.run_vocabulary import CHECKPOINT_DIR_TAG, FIT_STATE_TAG, HOST_TAG, PID_TAG
from skipln.skip import Plain
from skipln.tasks.classification import ClassificationTask

TESTS = Path(__file__).resolve().parent

#: A digits ResNet-8 (the real data, augmentation on), 5 batches an epoch, 2 epochs; last.ckpt every 3 steps.
TINY = {
    "model": {
        "class_path": "skipln.tasks.classification.ClassificationTask",
        "init_args": {
            "net": {
                "class_path": "skipln.models.resnet.ResNet",
                "init_args": {"depth": 8, "block": "basic", "num_classes": 10, "in_channels": 1, "skip": {"class_path": "skipln.skip.Plain"}},
            },
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}},
            "schedule": {"class_path": "skipln.optim.MultiStep"},
            "num_classes": 10,
        },
    },
    "data": {"class_path": "skipln.data.digits.DigitsDataModule", "init_args": {"batch_size": 256}},
    "trainer": {
        "max_epochs": 2,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"monitor": "val/loss", "mode": "min", "save_top_k": 1, "save_last": True},
            },
            {"class_path": "skipln.resume.ResumeState", "init_args": {"every_n_train_steps": 3}},
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        ],
    },
}
#: A one-layer Transformer with dropout on the embedded En→De corpus, token-count batches, 5 an epoch.
TINY_TRANSLATION = {
    "model": {
        "class_path": "skipln.tasks.translation.TranslationTask",
        "init_args": {
            "net": {
                "class_path": "skipln.models.transformer.Transformer",
                "init_args": {
                    "vocab_size": 1000,
                    "encoder_layers": 1,
                    "decoder_layers": 1,
                    "dim": 32,
                    "ffn_dim": 64,
                    "heads": 2,
                    "dropout": 0.1,
                    "share_all_embeddings": True,
                    "skip": {"class_path": "skipln.skip.PostLN"},
                },
            },
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-3}},
            "schedule": {"class_path": "skipln.optim.InverseSqrt", "init_args": {"warmup_steps": 4}},
            "label_smoothing": 0.1,
            "beam_size": 1,
        },
    },
    "data": {
        "class_path": "skipln.data.translation.TranslationDataModule",
        "init_args": {"src_lang": "en", "tgt_lang": "de", "vocab_size": 1000, "max_tokens": 1024},
    },
    "trainer": {
        **TINY["trainer"],
        "limit_train_batches": 5,
        "limit_val_batches": 2,
        "use_distributed_sampler": False,
    },
}
STEPS_PER_EPOCH = 5


def signal_at(name: str, step: int) -> list[str]:
    """Arguments that make a fresh (not resumed) fit send itself ``name`` when step ``step`` starts."""
    return ["--trainer.callbacks+=skipln_test_support.SignalAtStep", f"--trainer.callbacks.signal={name}", f"--trainer.callbacks.step={step}"]


@pytest.fixture
def tiny(workdir: Path) -> Path:
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def fit_in_process(config: Path, *args: str) -> None:
    cli_main(["fit", f"--config={config}", *args], default_config_files=[DEFAULTS])


def fit_in_subprocess(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), "fit", f"--config={config}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def client(workdir: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def runs(workdir: Path) -> list[Run]:
    c = client(workdir)
    return c.search_runs([c.get_experiment_by_name("skipln").experiment_id], order_by=["attributes.start_time ASC"])


def last_checkpoint(workdir: Path, run: Run) -> dict[str, Any]:
    path = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)


def metric_histories(workdir: Path, run: Run) -> dict[str, set[tuple[int, float]]]:
    """Every logged (step, value) of every metric; a step logged twice (replayed after SIGKILL) counts once."""
    c = client(workdir)
    return {key: {(m.step, m.value) for m in c.get_metric_history(run.info.run_id, key)} for key in run.data.metrics}


def assert_same_training(workdir: Path, reference: Run, resumed: Run, steps: int = 2 * STEPS_PER_EPOCH) -> None:
    """Bit-identical final weights, metric states, optimizer and schedule; the same metrics at every step."""
    a, b = last_checkpoint(workdir, reference), last_checkpoint(workdir, resumed)
    assert a["global_step"] == b["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True):
        assert state_a.keys() == state_b.keys()
        for key, value in state_a.items():
            assert torch.equal(value, state_b[key]) if isinstance(value, torch.Tensor) else value == state_b[key], key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert resumed.data.metrics == reference.data.metrics
    assert metric_histories(workdir, resumed) == metric_histories(workdir, reference)


# -- end to end through main.py ---------------------------------------------------------------


@pytest.mark.slow
def test_a_fit_stopped_by_sigterm_mid_epoch_resumes_to_the_same_weights_and_metrics(workdir: Path, tiny: Path) -> None:
    fit_in_process(tiny)
    stopped = fit_in_subprocess(workdir, tiny, *signal_at("SIGTERM", 6))
    assert stopped.returncode == SIGTERM_EXIT_CODE, stopped.stderr[-3000:]
    reference, interrupted = runs(workdir)
    # The exact state of the step it stopped at: the second batch of the second epoch.
    checkpoint = last_checkpoint(workdir, interrupted)
    assert checkpoint["global_step"] == 7
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags["interrupted"].startswith("SIGTERM at step 7")
    assert "--ckpt_path last" in interrupted.data.tags["resume_command"]

    fit_in_process(tiny, *signal_at("SIGTERM", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.run_id == interrupted.info.run_id
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumes"] == "1"
    assert "resume_command" not in resumed.data.tags
    assert_same_training(workdir, reference, resumed)


@pytest.mark.slow
def test_ctrl_c_stops_after_the_step_with_its_checkpoint_ends_killed_and_resumes_exactly(workdir: Path, tiny: Path) -> None:
    fit_in_process(tiny)
    stopped = fit_in_subprocess(workdir, tiny, *signal_at("SIGINT", 6))
    assert stopped.returncode == SIGINT_EXIT_CODE, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    reference, interrupted = runs(workdir)
    assert last_checkpoint(workdir, interrupted)["global_step"] == 7  # the step Ctrl+C fell in, finished and saved
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags["interrupted"].startswith("SIGINT at step 7") and "holds this step" in interrupted.data.tags["interrupted"]
    assert "--ckpt_path last" in interrupted.data.tags["resume_command"]

    fit_in_process(tiny, *signal_at("SIGINT", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    assert_same_training(workdir, reference, resumed)


@pytest.mark.slow
def test_a_fit_with_data_loader_workers_resumes_from_sigterm_to_the_same_weights_and_metrics(workdir: Path, tiny: Path) -> None:
    workers = "--data.init_args.num_workers=2"  # the CIFAR modules' default; the digits augment with random crops
    fit_in_process(tiny, workers)
    stopped = fit_in_subprocess(workdir, tiny, workers, *signal_at("SIGTERM", 6))
    assert stopped.returncode == SIGTERM_EXIT_CODE, stopped.stderr[-3000:]
    assert last_checkpoint(workdir, runs(workdir)[1])["global_step"] == 7

    fit_in_process(tiny, workers, *signal_at("SIGTERM", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.status == "FINISHED"
    assert_same_training(workdir, reference, resumed)


@pytest.mark.slow
def test_a_translation_fit_with_dropout_resumes_from_sigterm_to_the_same_result(workdir: Path) -> None:
    config = workdir / "tiny_translation.yaml"
    config.write_text(yaml.safe_dump(TINY_TRANSLATION))
    fit_in_process(config)
    stopped = fit_in_subprocess(workdir, config, *signal_at("SIGTERM", 6))
    assert stopped.returncode == SIGTERM_EXIT_CODE, stopped.stderr[-3000:]
    assert last_checkpoint(workdir, runs(workdir)[1])["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2}
    ]

    fit_in_process(config, *signal_at("SIGTERM", 6), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.status == "FINISHED"
    assert_same_training(workdir, reference, resumed)


@pytest.mark.slow
def test_a_fit_killed_outright_resumes_from_its_periodic_checkpoint_to_the_same_result(workdir: Path, tiny: Path) -> None:
    fit_in_process(tiny)
    killed = fit_in_subprocess(workdir, tiny, *signal_at("SIGKILL", 8))
    assert killed.returncode == -signal.SIGKILL
    reference, interrupted = runs(workdir)
    assert interrupted.info.status == "RUNNING"  # nothing could close it
    # Steps 7 and 8 were trained and logged after the newest checkpoint: the resume replays them.
    checkpoint = last_checkpoint(workdir, interrupted)
    assert checkpoint["global_step"] == 6
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]

    fit_in_process(tiny, *signal_at("SIGKILL", 8), "--ckpt_path=last")

    reference, resumed = runs(workdir)
    assert resumed.info.run_id == interrupted.info.run_id
    assert [r.info.status for r in runs(workdir)] == ["FINISHED", "FINISHED"]
    assert "without closing the run" in resumed.data.tags["interrupted"]
    assert_same_training(workdir, reference, resumed)


def test_ckpt_path_last_without_an_interrupted_run_is_a_clear_error(workdir: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fit_in_process(tiny, "--ckpt_path=last")
    assert exit_info.value.code == 2
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert message.startswith("error: --ckpt_path last: ")
    assert "Drop --ckpt_path to start a new run" in message


def test_last_ckpt_holds_the_final_state_even_when_validation_stopped_improving(workdir: Path) -> None:
    # ModelCheckpoint(save_last=True) alone would leave last.ckpt at epoch 0, the best one here.
    cli = cli_main(
        ["fit", "--model=skipln_test_support.WorseningValidation", "--data=lightning.pytorch.demos.boring_classes.BoringDataModule",
         "--trainer.max_epochs=3", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"],
        default_config_files=[DEFAULTS],
    )
    assert cli is not None
    (run,) = runs(workdir)
    folder = workdir / "mlruns" / run.info.experiment_id / run.info.run_id / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000-step2.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert (last["global_step"], last["epoch"]) == (6, 2)
    torch.testing.assert_close(last["state_dict"], cli.model.state_dict())


# -- which run `--ckpt_path last` picks ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> mlflow.MlflowClient:
    # One database for these tests (creating one takes seconds), one experiment each.
    return mlflow.MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture
def store(shared_store: mlflow.MlflowClient, tmp_path: Path) -> mlflow.MlflowClient:
    shared_store.create_experiment(f"exp-{tmp_path.name}")
    return shared_store


def make_run(store: mlflow.MlflowClient, tmp_path: Path, status: str, params: dict[str, str], tags: dict[str, str] | None = None) -> str:
    experiment = store.get_experiment_by_name(f"exp-{tmp_path.name}").experiment_id
    run_id = store.create_run(experiment, tags=tags or {}).info.run_id
    for key, value in params.items():
        store.log_param(run_id, key, value)
    folder = tmp_path / run_id
    folder.mkdir()
    torch.save({"state_dict": {}, "loops": {}}, folder / "last.ckpt")
    store.set_tag(run_id, CHECKPOINT_DIR_TAG, str(folder))
    if status != "RUNNING":
        store.set_terminated(run_id, status)
    return run_id


def test_last_picks_the_newest_unfinished_run_with_the_same_config(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    config = {"model.lr": "0.1", "ckpt_path": "last"}
    older = make_run(store, tmp_path, "KILLED", {"model.lr": "0.1", "ckpt_path": "None"})
    newer = make_run(store, tmp_path, "FAILED", {"model.lr": "0.1", "ckpt_path": "None"})
    make_run(store, tmp_path, "FINISHED", {"model.lr": "0.1"})
    found = find_last_checkpoint(store, f"exp-{tmp_path.name}", config, tmp_path)
    assert found.run_id == newer != older
    assert found.checkpoint == tmp_path / newer / "last.ckpt"


def test_last_goes_by_how_the_fit_ended_not_by_the_status_a_later_test_left(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    interrupted_then_tested = make_run(store, tmp_path, "FINISHED", {}, {FIT_STATE_TAG: "interrupted"})
    make_run(store, tmp_path, "KILLED", {}, {FIT_STATE_TAG: "finished"})  # a fitted run whose `test` was stopped
    assert find_last_checkpoint(store, f"exp-{tmp_path.name}", {}, tmp_path).run_id == interrupted_then_tested


def test_last_refuses_a_run_with_another_config_and_names_the_difference(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    make_run(store, tmp_path, "KILLED", {"trainer.max_epochs": "3"})
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: 3 → 5"):
        find_last_checkpoint(store, f"exp-{tmp_path.name}", {"trainer.max_epochs": "5"}, tmp_path)


def test_last_leaves_a_run_that_is_still_running_here_and_one_that_diverged(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    import socket

    make_run(store, tmp_path, "RUNNING", {}, {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getppid())})
    make_run(store, tmp_path, "FAILED", {}, {"failure": "diverged"})
    with pytest.raises(ConfigError, match="is RUNNING"):
        find_last_checkpoint(store, f"exp-{tmp_path.name}", {}, tmp_path)


def test_last_takes_a_running_run_whose_process_is_gone(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = make_run(store, tmp_path, "RUNNING", {}, {HOST_TAG: socket.gethostname(), PID_TAG: str(dead.pid)})
    assert find_last_checkpoint(store, f"exp-{tmp_path.name}", {}, tmp_path).run_id == run_id


def test_last_skips_a_truncated_last_ckpt_for_an_older_checkpoint(store: mlflow.MlflowClient, tmp_path: Path) -> None:
    run_id = make_run(store, tmp_path, "KILLED", {})
    folder = tmp_path / run_id
    torch.save({"state_dict": {}, "loops": {}}, folder / "best.ckpt")
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:100])
    assert find_last_checkpoint(store, f"exp-{tmp_path.name}", {}, tmp_path).checkpoint == folder / "best.ckpt"


# -- data order --------------------------------------------------------------------------------


def batches(loader: ResumableDataLoader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [batch[0] for batch in loader]


def make_loader() -> ResumableDataLoader:
    data = TensorDataset(torch.arange(23))
    return ResumableDataLoader(data, batch_size=4, sampler=EpochSampler(data, seed=7))


def test_a_resumed_loader_continues_the_epoch_where_the_checkpoint_left_it() -> None:
    whole = batches(make_loader(), epoch=1)
    loader = make_loader()
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    first = [next(iterator)[0] for _ in range(2)]
    resumed = make_loader()
    resumed.load_state_dict(loader.state_dict())
    rest = batches(resumed, epoch=1)
    assert [b.tolist() for b in first + rest] == [b.tolist() for b in whole]
    assert len(resumed) == len(whole)  # Lightning plans with the whole epoch's length


class RandomlyAugmented(Dataset):
    """23 examples, each its index and a random number drawn when it is loaded (as an augmentation draws them)."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([float(index)]), torch.rand(1)


def interrupted_and_resumed(make: Any, epoch: int, after: int) -> list[list[float]]:
    """The batches of ``epoch``: the first ``after`` from one loader, the rest from a new one resumed from its state."""
    loader = make()
    loader.sampler.set_epoch(epoch)
    iterator = iter(loader)
    first = [next(iterator) for _ in range(after)]
    state = loader.state_dict()
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(epoch)
    return [torch.cat(batch, dim=1).flatten().tolist() for batch in [*first, *resumed]]


def whole_epoch(make: Any, epoch: int) -> list[list[float]]:
    loader = make()
    loader.sampler.set_epoch(epoch)
    return [torch.cat(batch, dim=1).flatten().tolist() for batch in loader]


def test_a_resumed_loader_with_workers_augments_the_rest_of_the_epoch_as_the_uninterrupted_one() -> None:
    def make() -> ResumableDataLoader:
        return training_loader(RandomlyAugmented(), batch_size=4, num_workers=2, pin_memory=False)

    assert interrupted_and_resumed(make, epoch=1, after=3) == whole_epoch(make, epoch=1)


def test_without_example_seeding_workers_augment_a_resumed_epoch_differently() -> None:
    # Why the seeding exists: the same batches, but other random numbers after the resume.
    def make() -> ResumableDataLoader:
        data = RandomlyAugmented()
        return ResumableDataLoader(data, batch_size=4, sampler=EpochSampler(data, seed=0), num_workers=2)

    resumed, whole = interrupted_and_resumed(make, epoch=1, after=3), whole_epoch(make, epoch=1)
    assert [batch[0::2] for batch in resumed] == [batch[0::2] for batch in whole]  # the same examples
    assert resumed != whole


def test_a_loader_resumed_at_the_end_of_an_epoch_gives_the_next_epoch_whole() -> None:
    loader = make_loader()
    batches(loader, epoch=0)
    resumed = make_loader()
    resumed.load_state_dict(loader.state_dict())
    assert [b.tolist() for b in batches(resumed, epoch=1)] == [b.tolist() for b in batches(make_loader(), epoch=1)]


def test_the_epoch_order_depends_on_seed_and_epoch_only_not_on_the_global_random_state() -> None:
    torch.manual_seed(1)
    first = batches(make_loader(), epoch=2)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    again = batches(make_loader(), epoch=2)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert torch.equal(torch.get_rng_state(), state)  # starting an epoch draws no global random numbers


def test_a_loader_whose_sampler_cannot_skip_drops_the_batches_already_trained_on() -> None:
    loader = ResumableDataLoader(TensorDataset(torch.arange(10)), batch_size=3)  # e.g. Lightning's overfit_batches
    loader.load_state_dict({"epoch": 0, "batches": 2})
    assert [batch[0].tolist() for batch in loader] == [[6, 7, 8], [9]]


def test_token_batches_skip_the_batches_a_checkpoint_already_trained_on() -> None:
    sampler = TokenBatchSampler([3, 5, 2, 8, 4, 4, 6, 1, 7, 2], max_tokens=10, seed=0)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.skip(2)
    assert list(sampler) == whole[2:]
    assert list(sampler) == whole  # only the next iteration is shortened


# -- metric states -----------------------------------------------------------------------------


def make_task() -> ClassificationTask:
    return ClassificationTask(ResNet(depth=8, block="basic", num_classes=10, in_channels=1, skip=Plain()), torch.optim.SGD, num_classes=10)


def test_checkpoints_carry_the_running_training_metrics_and_the_best_accuracy() -> None:
    keys = make_task().state_dict().keys()
    assert {"train_loss.mean_value", "train_metrics.acc.tp", "val_acc_best.max_value"} <= set(keys)
    assert not any(key.startswith(("val_metrics.", "test_metrics.")) for key in keys)


def test_a_checkpoint_written_before_metric_states_were_saved_still_loads_strictly() -> None:
    task = make_task()
    old = {"state_dict": {k: v for k, v in task.state_dict().items() if not k.startswith(("train_", "val_acc_best"))}}
    task.on_load_checkpoint(old)
    task.load_state_dict(old["state_dict"], strict=True)
