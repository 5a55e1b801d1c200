"""Analyses of trained runs: paper-style reports of sweeps from MLflow (:mod:`skipln.analysis.report`)."""
