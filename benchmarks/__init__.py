"""Speed and memory of skipln's models against references measured side by side in one run.

Run ``python -m benchmarks.run --size small --out results/benchmarks/`` (see
docs/performance.md). One module per job:

* :mod:`benchmarks.sizes` — the size presets (``tiny`` for tests, ``small`` by default, ``paper``);
* :mod:`benchmarks.settings` — device, precision and ``torch.compile``, the same for both sides of a row;
* :mod:`benchmarks.references` — the reference models, written the way a researcher would;
* :mod:`benchmarks.workloads` — every measured unit of work (a training step, a beam search),
  by name, for ours and for the references;
* :mod:`benchmarks.harness` — interleaved timing, the machine's description, the matmul peak;
* :mod:`benchmarks.memory` — peak resident memory of one workload in a fresh process;
* :mod:`benchmarks.flops` — analytic FLOP count of a Transformer training step;
* :mod:`benchmarks.suite` — the rows: which workloads are compared, and each goal;
* :mod:`benchmarks.table` — the Markdown table and the JSON file;
* :mod:`benchmarks.run` — the command line.
"""
