"""python -m skipln.average: the mean of a run's last N checkpoints, as a checkpoint test/predict accept."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from conftest import CONFIGS, DEFAULTS
from skipln.average import AVERAGED_FROM_KEY, main
from skipln.cli import cli_main


def write(path: Path, step: int, weight: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "global_step": step,
            "state_dict": {"w": torch.full((2,), weight, dtype=torch.float32), "bn.num_batches_tracked": torch.tensor(step)},
            "optimizer_states": [{"state": {}}],
            "loops": {},
            "hyper_parameters": {"num_classes": 10},
        },
        path,
    )
    return path


def test_the_weights_are_the_mean_and_counters_the_newest(tmp_path: Path) -> None:
    files = [write(tmp_path / f"step{s}.ckpt", s, w) for s, w in [(10, 1.0), (20, 2.0), (30, 6.0)]]
    out = main([*map(str, files), "--last", "3", "--output", str(tmp_path / "avg.ckpt")])
    averaged = torch.load(out, weights_only=True)
    assert torch.allclose(averaged["state_dict"]["w"], torch.full((2,), 3.0))
    assert averaged["state_dict"]["w"].dtype == torch.float32
    assert averaged["state_dict"]["bn.num_batches_tracked"].item() == 30


def test_the_result_keeps_the_config_and_drops_the_training_state(tmp_path: Path) -> None:
    files = [write(tmp_path / f"step{s}.ckpt", s, 1.0) for s in (1, 2)]
    averaged = torch.load(main([str(tmp_path), "--last", "2"]), weights_only=True)
    assert averaged["hyper_parameters"] == {"num_classes": 10}
    assert "optimizer_states" not in averaged and "loops" not in averaged
    assert [entry["global_step"] for entry in averaged[AVERAGED_FROM_KEY]] == [1, 2]
    assert (tmp_path / "averaged-last2.ckpt").is_file() and len(files) == 2


def test_the_last_n_are_the_latest_steps_and_last_ckpt_counts_once(tmp_path: Path) -> None:
    for step, weight in [(10, 100.0), (20, 2.0), (30, 4.0)]:
        write(tmp_path / f"step{step}.ckpt", step, weight)
    write(tmp_path / "last.ckpt", 30, 4.0)
    averaged = torch.load(main([str(tmp_path), "--last", "2", "-o", str(tmp_path / "out" / "a.ckpt")]), weights_only=True)
    assert torch.allclose(averaged["state_dict"]["w"], torch.full((2,), 3.0))
    assert [Path(e["path"]).name for e in averaged[AVERAGED_FROM_KEY]] == ["step20.ckpt", "step30.ckpt"]


def test_too_few_checkpoints_say_how_to_keep_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "step1.ckpt", 1, 1.0)
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--last", "5"])
    assert "every_n_train_steps" in capsys.readouterr().err


def test_checkpoints_of_different_networks_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "step1.ckpt", 1, 1.0)
    torch.save({"global_step": 2, "state_dict": {"other": torch.zeros(2)}}, tmp_path / "step2.ckpt")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--last", "2"])
    assert "different networks" in capsys.readouterr().err


def test_a_run_id_is_found_under_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "mlruns" / "7" / "abc123" / "checkpoints"
    write(folder / "step1.ckpt", 1, 1.0)
    assert main(["abc123", "--last", "1", "--root", str(tmp_path / "mlruns")]).parent == folder


def test_an_unknown_run_id_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["nosuchrun", "--root", str(tmp_path)])
    assert "run id" in capsys.readouterr().err


@pytest.mark.slow
def test_an_averaged_checkpoint_is_accepted_by_test(workdir: Path) -> None:
    short = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"]
    keep_every_step = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.monitor=step",
        "--trainer.callbacks.mode=max",
        "--trainer.callbacks.save_top_k=3",
        "--trainer.callbacks.filename=step{step}",
    ]
    cli_main(["fit", f"--config={CONFIGS / 'quickstart' / 'resnet.yaml'}", *short, *keep_every_step], default_config_files=[DEFAULTS])
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("skipln").experiment_id])
    averaged = main([run.info.run_id, "--last", "3"])
    assert [e["global_step"] for e in torch.load(averaged, weights_only=True)[AVERAGED_FROM_KEY]] == [2, 3, 4]
    cli_main(["test", f"--ckpt_path={averaged}", *short], default_config_files=[DEFAULTS])
    assert "test/acc" in client.get_run(run.info.run_id).data.metrics
