"""Shared fixtures: every test runs offline, on the CPU, in its own working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEFAULTS = CONFIGS / "defaults.yaml"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# The tests' tensors are tiny: a second intra-op thread only adds synchronisation, and when
# the cores are shared (CI neighbours, parallel jobs) every parallel region waits for a
# scheduler slice — measured here: 1.5 s vs 0.02 s for one step of a d=64 Transformer.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tokenizers trained by tests go to a temp folder, never to the user's ~/.cache/skipln."""
    os.environ["SKIPLN_CACHE_DIR"] = str(tmp_path_factory.mktemp("skipln-cache"))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, so `mlruns/` and caches land in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
