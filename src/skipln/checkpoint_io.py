"""Checkpoint files that are whole or absent: atomic writes, and clear errors for a damaged file or a full disk.

:class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` plugin (``trainer.plugins`` in
``configs/defaults.yaml``) that every checkpoint save and load of a run goes through —
``ModelCheckpoint``'s, :class:`skipln.resume.ResumeState`'s and ``trainer.save_checkpoint``'s.
A save that finds no room raises :class:`DiskFullError`, a load of a truncated or corrupt file
:class:`DamagedCheckpointError`, each saying what to do (docs/reliability.md, "Checkpoint files").
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from skipln.errors import DataError, SkipLNError
from skipln.processes import process_alive

#: The ending of a checkpoint being written (``.last.ckpt.<pid>.partial``); never a checkpoint to load.
PARTIAL_SUFFIX = ".partial"
#: The errors of a write that found no room: the disk is full, or the user's quota is used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(SkipLNError):
    """A checkpoint could not be written for want of space; the previous one is kept."""

    failure = "disk_full"


class DamagedCheckpointError(DataError):
    """A checkpoint file is truncated or corrupt."""

    failure = "damaged_checkpoint"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, ``fsync``, then an atomic rename over it.

    A process killed at any moment of a save leaves the previous file or the new one, never a
    truncated ``last.ckpt``. Lightning's own ``TorchCheckpointIO`` stages the file in the system's
    temporary folder and moves it into place: when that folder is on another file system (a
    node-local ``/tmp``, the checkpoints on shared storage) the move is a copy into the target,
    which a kill can leave half-written, and nothing is synced. Remote paths (``s3://…``) and ``storage_options`` are left to Lightning's ``TorchCheckpointIO``
    (object stores replace an object whole anyway).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(target)
        try:
            with partial.open("wb") as handle:
                self.write(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException as error:
            written = partial.stat().st_size if partial.exists() else 0
            partial.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
                raise DiskFullError(disk_full_message(target, written)) from error
            raise
        _sync_folder(target.parent)
        _remove_stale_partials(target)

    def write(self, checkpoint: dict[str, Any], handle: IO[bytes]) -> None:
        """Serialize ``checkpoint`` into the open temporary file (the step fault-injection tests interrupt)."""
        torch.save(checkpoint, handle)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" not in str(path) and Path(path).is_file():
            # Before loading: torch.load does not check the archive's CRCs, and loads a flipped byte silently.
            check_checkpoint(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def partial_path(target: Path) -> Path:
    """The temporary file a save of ``target`` writes first: hidden, in the same folder, one per process."""
    return target.with_name(f".{target.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def checkpoint_damage(path: Path) -> str | None:
    """What is wrong with the checkpoint file at ``path`` (truncated, corrupt), or None if it is whole.

    ``torch.save`` writes an uncompressed zip archive with a CRC-32 per entry: the archive's
    directory sits at the end of the file (a truncated file has none), and every entry's bytes
    are checked against its CRC (a corrupted byte shows). Files in torch's legacy (pre-1.6,
    non-zip) format cannot be checked this way and count as whole.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if magic != b"PK\x03\x04":
        if magic[:1] == b"\x80" or not magic:  # a legacy pickle, or an empty file
            return None if magic else "it is empty"
        return "it is not a PyTorch checkpoint (no zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"it is truncated or corrupt ({error})"
    return None if bad is None else f"its entry '{bad}' is corrupt (CRC mismatch)"


def check_checkpoint(path: str | os.PathLike[str]) -> None:
    """Raise :class:`DamagedCheckpointError` if the checkpoint file at ``path`` is truncated or corrupt.

    The message says how, and names the newest intact checkpoint beside it.
    """
    path = Path(path)
    damage = checkpoint_damage(path)
    if damage is None:
        return
    others = sorted(path.parent.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    intact = next((p for p in others if p.absolute() != path.absolute() and p.is_file() and checkpoint_damage(p) is None), None)
    if intact is not None:
        advice = f"the newest intact checkpoint in {path.parent} is {intact.name}: resume from it with --ckpt_path {intact}"
    else:
        advice = f"no other checkpoint in {path.parent} is intact: start the run again without --ckpt_path"
    raise DamagedCheckpointError(
        f"checkpoint {path} is damaged: {damage} (was its process killed while saving, or the copy cut short?); {advice}"
    )


def disk_full_message(target: Path, written: int) -> str:
    """One line: the checkpoint not written, the space it needs and has, what is kept, and what to free."""
    previous = target.stat().st_size if target.is_file() else 0
    needed = max(previous, written)
    free = shutil.disk_usage(target.parent).free
    kept = f"the previous {target.name} is kept" if previous else f"no {target.name} was written"
    return (
        f"cannot write checkpoint {target}: no space left on the device ({_size(free)} free, the checkpoint needs "
        f"about {_size(needed) if needed else 'more'}); {kept}. Free space there — delete the checkpoints of runs you no "
        "longer need (<default_root_dir>/<experiment id>/<run id>/checkpoints/*.ckpt) or other files on that disk — or "
        "set trainer.default_root_dir to a disk with room, then resume with `--ckpt_path last`"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _remove_stale_partials(target: Path) -> None:
    """Delete what saves of ``target`` by processes that died mid-write left behind."""
    for stale in target.parent.glob(f".{target.name}.*{PARTIAL_SUFFIX}"):
        pid = stale.name[len(target.name) + 2 : -len(PARTIAL_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash of the machine could otherwise forget it)."""
    with contextlib.suppress(OSError):  # a platform without folder descriptors (Windows): the rename is still atomic
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


__all__ = [
    "AtomicCheckpointIO",
    "DamagedCheckpointError",
    "DiskFullError",
    "check_checkpoint",
    "checkpoint_damage",
]
