"""Small LightningModules that tests name by class_path (they must live in an importable module)."""

from __future__ import annotations

from lightning.pytorch.demos.boring_classes import BoringModel

from skipln.skip import SkipStrategy


class SkipHolder(BoringModel):
    """A BoringModel that takes a strategy, to exercise config validation through the CLI."""

    def __init__(self, skip: SkipStrategy) -> None:
        super().__init__()
        self.skip = skip
