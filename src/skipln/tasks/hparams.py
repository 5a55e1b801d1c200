"""What a task stores as hyperparameters, so a checkpoint can rebuild its network.

Built by the CLI (LightningCLI with ``load_from_checkpoint_support``, its default), a task's
hyperparameters are the config it was built from: the network and the optimizer appear as
``class_path``/``init_args`` dicts, strategies and linked values included. Kept in the
checkpoint, they let ``TranslationTask.load_from_checkpoint(path)`` and ``main.py test
--ckpt_path path`` rebuild the same network with nothing else given.

Built in Python, the same arguments are live objects (an ``nn.Module``, an optimizer
factory): those stay out of the hyperparameters (the weights are in the state dict already,
and a module in the hparams would be copied and pickled), so such a checkpoint is loaded
with ``load_from_checkpoint(path, net=…)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from lightning.pytorch import LightningModule

#: The key under which Lightning's CLI marks hyperparameters that are the parsed config
#: (``lightning.pytorch.cli.instantiate_module`` rebuilds the module from them).
INSTANTIATOR_KEY = "_instantiator"
#: The key that names the task's class in such hyperparameters (LightningCLI's subclass mode).
CLASS_PATH_KEY = "_class_path"
#: Arguments that are configs under the CLI and live objects in Python.
BUILT_ARGUMENTS: tuple[str, ...] = ("net", "optimizer")


def save_task_hyperparameters(task: LightningModule, ignore: Sequence[str]) -> None:
    """Save the task's ``__init__`` arguments but ``ignore`` (not logged), the network's config among them where there is one.

    Call it from the task's ``__init__``. The first save leaves the built arguments out; if the
    hyperparameters turn out to be the CLI's config (plain dicts), they are saved again with them.
    """
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    task.save_hyperparameters(logger=False, ignore=[*ignore, *BUILT_ARGUMENTS], frame=caller)
    if INSTANTIATOR_KEY in task.hparams:
        task.save_hyperparameters(logger=False, ignore=list(ignore), frame=caller)


__all__ = ["BUILT_ARGUMENTS", "CLASS_PATH_KEY", "INSTANTIATOR_KEY", "save_task_hyperparameters"]
