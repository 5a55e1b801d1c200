"""Tags that one module writes on an MLflow run and another reads back, named once.

Kept free of heavy imports: the sweep driver and the reports read them without torch.
"""

#: Set by :class:`skipln.callbacks.DivergenceGuard` on a run it stopped: ``failure = diverged``
#: and ``failure_reason`` = the message that says at which step and how to go on.
FAILURE_TAG = "failure"
FAILURE_REASON_TAG = "failure_reason"
DIVERGED = "diverged"
