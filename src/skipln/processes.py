"""Other processes of a run: whether one recorded in an MLflow run's tags is alive, whether a DDP peer is gone."""

from __future__ import annotations

import os
import re

from skipln.errors import exception_chain

#: How the process-group backends report a peer that is gone (gloo; NCCL).
_LOST_PEER_MESSAGES = re.compile(
    r"Connection reset by peer|Connection closed by peer|Broken pipe|remote process exited|NCCL communicator was aborted"
)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lost_process(exception: BaseException) -> str | None:
    """The backend's words if ``exception`` says that another process of the group is gone, else None.

    Torch raises these as a plain ``RuntimeError`` (``DistBackendError`` for NCCL) whose message is
    the only sign of what happened.
    """
    for error in exception_chain(exception):
        if isinstance(error, RuntimeError) and (found := _LOST_PEER_MESSAGES.search(str(error))):
            return found.group(0)
    return None


__all__ = ["lost_process", "process_alive"]
