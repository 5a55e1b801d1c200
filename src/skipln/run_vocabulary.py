"""The words one part of skipln writes on an MLflow run and another reads back, each defined once.

Tag keys, the states a run goes through, and the store URI prefix. The training side (callbacks,
resume) writes them, the sweep writes and reads them, the reports read them. Kept free of heavy
imports: the sweep driver and the reports read them without torch or Lightning.
"""

# -- every run ------------------------------------------------------------------------------------

#: MLflow's own tag for the name the UI shows.
RUN_NAME_TAG = "mlflow.runName"

#: Set on a run that ended for a reason the user can act on: ``failure`` = its kind (``diverged``
#: by :class:`skipln.callbacks.DivergenceGuard`; ``bad_input``, ``disk_full``, … by
#: ``skipln.errors.SkipLNError.failure``) and ``failure_reason`` = the message, which says how to go on.
FAILURE_TAG = "failure"
FAILURE_REASON_TAG = "failure_reason"
DIVERGED = "diverged"

#: The fit's own state (:class:`skipln.resume.ResumeState` writes it).
FIT_STATE_TAG = "fit_state"
FIT_RUNNING, FIT_FINISHED, FIT_INTERRUPTED, FIT_FAILED = "running", "finished", "interrupted", "failed"
#: Where the fit runs (host and process id: a second fit of a live run is refused).
HOST_TAG = "fit_host"
PID_TAG = "fit_pid"
#: How a fit was stopped (SIGTERM, SIGINT) and the command that resumes it.
INTERRUPTED_TAG = "interrupted"
RESUME_COMMAND_TAG = "resume_command"
RESUMED_FROM_TAG = "resumed_from"
RESUMES_TAG = "resumes"
CHECKPOINT_DIR_TAG = "checkpoint_dir"

# -- sweeps (skipln.sweep) ------------------------------------------------------------------------

SWEEP_TAG = "sweep"
CELL_TAG = "sweep_cell"
#: The cell's position in the grid: reports list strategies in the grid file's order.
CELL_INDEX_TAG = "sweep_cell_index"
SEED_TAG = "seed"
#: ``sweep.<axis>``: the cell's label on each axis, and the value a searched axis was run at.
AXIS_TAG_PREFIX = "sweep."
#: ``sweep_value.<axis>``: the exact value a searched axis was run at (the ``sweep.<axis>`` tag rounds it).
VALUE_TAG_PREFIX = "sweep_value."
#: What the sweep has done with a run (its fit_state says how the fit itself went). A sweep run
#: that diverged is in state ``diverged``, the same word as its ``failure`` tag.
STATE_TAG = "sweep_state"
FITTING, FITTED, TESTED, SEARCHED, PRUNED = "fitting", "fitted", "tested", "searched", "pruned"
#: What a run is to the sweep: one of its results, a cell's search, or one trial of a search.
STAGE_TAG = "sweep_stage"
RESULT, SEARCH, TRIAL = "result", "search", "trial"
#: The Ray Tune trial a ``trial`` run belongs to (a restored search finds its runs again).
TRIAL_TAG = "sweep_trial"
#: Hash of the run's arguments: a grid or command line that changed is noticed.
FINGERPRINT_TAG = "sweep_fingerprint"
ARGS_TAG = "sweep_args"
#: Hash of the contents of the config files the run read (a warning, not an error, if it changed).
CONFIG_HASH_TAG = "sweep_config_hash"
ATTEMPTS_TAG = "sweep_attempts"
FIT_EXIT_TAG = "sweep_fit_exit"
TEST_EXIT_TAG = "sweep_test_exit"

#: The newest full training checkpoint of a run, in its checkpoint folder (what ``--ckpt_path last`` resumes).
LAST_CHECKPOINT = "last.ckpt"

# -- the store --------------------------------------------------------------------------------------

#: A local SQLite store's URI prefix (``sqlite:///mlruns/mlflow.db``: three slashes, then the path).
SQLITE_PREFIX = "sqlite:///"
#: The URI prefixes of a tracking server (``http://host:5000``), as MLflow's REST store takes them.
SERVER_URI_PREFIXES = ("http://", "https://")
#: The class paths of the MLflow loggers a config may name (``trainer.logger``): a run logs to the store they name.
MLFLOW_LOGGER_CLASSES = (
    "lightning.pytorch.loggers.MLFlowLogger",
    "lightning.pytorch.loggers.mlflow.MLFlowLogger",
    "skipln.tracking_server.ServerMLFlowLogger",
)
#: MLflow's limit on a tag's value is 8000 characters; ours stay well below it.
MAX_TAG = 5000
