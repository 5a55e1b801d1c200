"""The gradient study: gradient norms layer by layer, against depth, for every skip strategy.

Liu et al. 2020 ("Rethinking Skip Connection with Layer Normalization in Transformers and
ResNets", arXiv 2105.07205) argue that unrolling ``λ·x + F(x)`` over blocks ``l..L`` puts a
factor ``λ^(L−l)`` into ``∂loss/∂x_l`` — exponential explosion for λ > 1, vanishing for λ < 1
— and that LN (``LN(λ·x + F(x))``) removes it. This command measures it::

    python -m skipln.analysis.gradients --out results/gradients --figures docs/images
    python -m skipln.analysis.gradients --quick --out /tmp/gradients

For each model of ``configs/analysis/gradients.yaml`` (an encoder-only Transformer trained as a
masked language model on the embedded gettext corpus, CIFAR ResNets with post- and
pre-activation blocks on scikit-learn's digits), each depth ``L``, each strategy and each λ, it
records at every layer ``l`` the norm of ``∂loss/∂x_l`` (the gradient at the layer's input;
``l = L`` is the stack's output) and of the layer's parameter gradient: at initialisation for
several seeds, and over the first training steps. Under ``--out`` it writes:

- ``gradients.csv``: the long table, one row per (model, strategy, λ, depth, phase, step, seed,
  layer) with ``input_grad_norm`` and ``param_grad_norm`` (``inf``/``nan`` where the
  arithmetic overflowed: recorded, never dropped; empty for the stack's output, which has no
  parameters), at initialisation and at every ``record_every``-th training step;
- ``readings.csv``: one row per forward/backward pass (every training step): the loss, the
  input gradient at the first and last layer, the parameter gradient;
- ``summary.csv``: per (model, strategy, depth): ``‖∂loss/∂x_0‖`` at initialisation
  (geometric mean, min and max over seeds), at the stack's output, their ratio, and what the
  training steps did;
- ``slopes.csv``: per (model, strategy): the slope of ``ln ‖∂loss/∂x_0‖`` per residual block
  beside the paper's prediction (``ln λ`` for xSkip, 0 under LN), and the growth from the
  smallest depth to each other;
- ``skipped.csv``: strategies a model cannot hold, with the model's own reason.

Under ``--figures`` (default: ``--out``): ``gradients_<model>_layers.png`` (log gradient norm
against layer, a line per λ, xSkip beside xSkip+LN), ``gradients_depth.png`` (the input
gradient against depth) and ``gradients_training.png`` (over the training steps). All of it,
with the resolved config and a markdown summary, is logged as the artifacts of one MLflow run
(experiment ``skipln-gradients``, tag ``study=gradients``). ``--replot`` rebuilds summaries,
figures and the run from the CSVs without measuring again.

Depth ``L`` counts a stack's layers: Transformer encoder layers, two residual blocks each;
ResNet residual blocks (a ResNet-(2L+2)). docs/gradients.md reports what it measured.

The package, one module per step: :mod:`~.config` (the YAML), :mod:`~.cells` (the strategies),
:mod:`~.masked_lm` and :mod:`~.probes` (the models), :mod:`~.measure` (reading gradients),
:mod:`~.study` (the loop), :mod:`~.tables`, :mod:`~.figures`, :mod:`~.tracking` (MLflow) and
:mod:`~.cli` (the command). Everything public is importable from here.
"""

from skipln.analysis.gradients.cells import RSKIP_LN, XSKIP, XSKIP_LN, Cell, study_cells
from skipln.analysis.gradients.cli import main, parse_args, report
from skipln.analysis.gradients.config import (
    ATTENTION,
    DEFAULT_CONFIG,
    DTYPES,
    KINDS,
    OptimizerSpec,
    ResNetSettings,
    StudyConfig,
    TransformerSettings,
    instantiate,
    load_config,
    merge,
)
from skipln.analysis.gradients.figures import PANELS, plot_depth, plot_layers, plot_training
from skipln.analysis.gradients.masked_lm import MaskedLMEncoder
from skipln.analysis.gradients.measure import Reading, combine_norms, joint_norm, read_gradients, stream_tensors
from skipln.analysis.gradients.probes import ImageBatch, MaskedBatch, Probe, ResNetProbe, TransformerProbe, make_probe
from skipln.analysis.gradients.study import Results, measure_cell, measure_init, measure_training, prepare, run_study
from skipln.analysis.gradients.tables import (
    LAYER_COLUMNS,
    READING_COLUMNS,
    SKIPPED_COLUMNS,
    Tables,
    geometric_mean,
    predicted_slope,
    slopes,
    summarise,
    summary_markdown,
    write_csv,
)
from skipln.analysis.gradients.tracking import TrackingError, flatten, log_run

__all__ = [
    "ATTENTION",
    "Cell",
    "combine_norms",
    "DEFAULT_CONFIG",
    "DTYPES",
    "flatten",
    "geometric_mean",
    "ImageBatch",
    "instantiate",
    "joint_norm",
    "KINDS",
    "LAYER_COLUMNS",
    "load_config",
    "log_run",
    "main",
    "make_probe",
    "MaskedBatch",
    "MaskedLMEncoder",
    "measure_cell",
    "measure_init",
    "measure_training",
    "merge",
    "OptimizerSpec",
    "PANELS",
    "parse_args",
    "plot_depth",
    "plot_layers",
    "plot_training",
    "predicted_slope",
    "prepare",
    "Probe",
    "read_gradients",
    "Reading",
    "READING_COLUMNS",
    "report",
    "ResNetProbe",
    "ResNetSettings",
    "Results",
    "RSKIP_LN",
    "run_study",
    "SKIPPED_COLUMNS",
    "slopes",
    "stream_tensors",
    "study_cells",
    "StudyConfig",
    "summarise",
    "summary_markdown",
    "Tables",
    "TrackingError",
    "TransformerProbe",
    "TransformerSettings",
    "write_csv",
    "XSKIP",
    "XSKIP_LN",
]
