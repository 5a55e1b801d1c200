"""Tags that one module writes on an MLflow run and another reads back, named once.

Kept free of heavy imports: the sweep driver and the reports read them without torch.
"""

#: Set on a run that ended for a reason the user can act on: ``failure`` = its kind (``diverged``
#: by :class:`skipln.callbacks.DivergenceGuard`; ``bad_input``, ``disk_full``, … by
#: ``skipln.errors.SkipLNError.failure``) and ``failure_reason`` = the message, which says how to go on.
FAILURE_TAG = "failure"
FAILURE_REASON_TAG = "failure_reason"
DIVERGED = "diverged"
