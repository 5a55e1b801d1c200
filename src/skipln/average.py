"""Checkpoint averaging: ``python -m skipln.average <run id | folder | checkpoints…> --last N``.

The mean of the weights of a run's last ``N`` checkpoints, as Vaswani et al. (2017) evaluated
their WMT Transformers (base: the last 5 checkpoints, written every 10 minutes; big: the last
20) and as fairseq's ``scripts/average_checkpoints.py`` computes it. The result is a checkpoint
that ``main.py test|predict --ckpt_path`` and ``<Task>.load_from_checkpoint`` accept; it keeps
the newest checkpoint's config, tokenizer and MLflow run (so ``test`` reports into the run that
trained it), and drops the optimizer and loop state: it is for evaluation, not for resuming.

"Last" is by training step, read from each checkpoint: files that hold the same step (``last.ckpt``
beside the step checkpoint it duplicates) count once. Floating-point tensors are averaged (in
float64, then cast back); integer tensors (counters such as BatchNorm's ``num_batches_tracked``)
are the newest checkpoint's. A ``<run id>`` is looked up under ``--root`` (``mlruns``, where the
CLI keeps ``<experiment id>/<run id>/checkpoints/``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skipln.checkpoints import load_checkpoint, run_checkpoint_dir
from skipln.errors import ConfigError, SkipLNError

#: What an averaged checkpoint records about its sources: ``[{"path": …, "global_step": …}, …]``.
AVERAGED_FROM_KEY = "skipln_averaged_from"
#: Training state that means nothing for averaged weights (Lightning's keys, and WeightAveraging's).
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "current_model_state", "averaging_state")


@dataclass(frozen=True)
class Source:
    """A checkpoint file and the training step it was written at."""

    path: Path
    global_step: int


def find_checkpoints(targets: Sequence[str], root: str | os.PathLike[str] = "mlruns") -> list[Path]:
    """The checkpoint files that ``targets`` name: files, folders of ``.ckpt`` files, or MLflow run ids."""
    files: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_file():
            files.append(path)
            continue
        folder = path if path.is_dir() else run_checkpoint_dir(target, root)
        found = sorted(folder.glob("*.ckpt"))
        if not found:
            raise ConfigError(f"no .ckpt file in '{folder}': give checkpoint files, a folder of them, or a run id")
        files.extend(found)
    return files


def select_last(files: Sequence[Path], last: int) -> list[Source]:
    """The ``last`` checkpoints of the latest steps, oldest first; one file per step."""
    if last < 1:
        raise ConfigError(f"--last must be at least 1, got {last}")
    by_step: dict[int, Path] = {}
    for path in files:
        step = int(load_checkpoint(path).get("global_step", -1))
        # Prefer a named step checkpoint over last.ckpt when both hold the same step.
        if step not in by_step or by_step[step].name == "last.ckpt":
            by_step[step] = path
    if len(by_step) < last:
        raise ConfigError(
            f"asked to average the last {last} checkpoints but found {len(by_step)} distinct steps in "
            f"{len(files)} files: keep more during the fit (a ModelCheckpoint with every_n_train_steps and "
            "save_top_k, as configs/transformer/wmt14_*.yaml have) or lower --last"
        )
    return [Source(by_step[step], step) for step in sorted(by_step)[-last:]]


def average_checkpoints(sources: Sequence[Source]) -> dict[str, Any]:
    """The newest checkpoint with its ``state_dict`` replaced by the mean over ``sources``."""
    if not sources:
        raise ConfigError("no checkpoints to average")
    newest = load_checkpoint(sources[-1].path)
    reference = newest["state_dict"]
    sums: dict[str, torch.Tensor] = {k: v.double().clone() for k, v in reference.items() if torch.is_floating_point(v)}
    for source in sources[:-1]:
        state = load_checkpoint(source.path)["state_dict"]
        if set(state) != set(reference):
            differ = sorted(set(state) ^ set(reference))
            raise ConfigError(
                f"'{source.path}' and '{sources[-1].path}' hold different networks (keys such as '{differ[0]}' are in "
                "only one of them): average checkpoints of one run"
            )
        for key in sums:
            if state[key].shape != reference[key].shape:
                raise ConfigError(
                    f"'{key}' has shape {tuple(state[key].shape)} in '{source.path}' but {tuple(reference[key].shape)} "
                    f"in '{sources[-1].path}': average checkpoints of one run"
                )
            sums[key] += state[key].double()
    averaged = {k: (sums[k] / len(sources)).to(v.dtype) if k in sums else v.clone() for k, v in reference.items()}
    result = {k: v for k, v in newest.items() if k not in TRAINING_STATE_KEYS}
    result["state_dict"] = averaged
    result[AVERAGED_FROM_KEY] = [{"path": str(s.path), "global_step": s.global_step} for s in sources]
    return result


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m skipln.average",
        description="Average the weights of a run's last N checkpoints into one checkpoint for test/predict.",
    )
    parser.add_argument("targets", nargs="+", help="checkpoint files, folders of them, or MLflow run ids")
    parser.add_argument("--last", type=int, default=5, help="how many of the latest checkpoints to average (default 5)")
    parser.add_argument("--root", default="mlruns", help="where run ids are looked up (default: mlruns)")
    parser.add_argument("--output", "-o", help="the averaged checkpoint (default: averaged-last<N>.ckpt beside the newest)")
    args = parser.parse_args(argv)
    try:
        sources = select_last(find_checkpoints(args.targets, args.root), args.last)
        output = Path(args.output) if args.output else sources[-1].path.with_name(f"averaged-last{args.last}.ckpt")
        save_checkpoint(average_checkpoints(sources), output)
    except SkipLNError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    steps = ", ".join(str(s.global_step) for s in sources)
    print(f"averaged {len(sources)} checkpoints (steps {steps}) into {output}")
    return output


if __name__ == "__main__":
    main()
