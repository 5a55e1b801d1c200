"""Small LightningModules that tests name by class_path (they must live in an importable module)."""

from __future__ import annotations

from lightning.pytorch.demos.boring_classes import BoringModel

from skipln.skip import SkipStrategy


class SkipHolder(BoringModel):
    """A BoringModel that takes a strategy, to exercise config validation through the CLI."""

    def __init__(self, skip: SkipStrategy) -> None:
        super().__init__()
        self.skip = skip


class NonFiniteAtStep(BoringModel):
    """Its loss turns NaN at training batches ``bad_steps`` (a diverging run)."""

    def __init__(self, bad_steps: list[int] = [2]) -> None:  # noqa: B006 - jsonargparse needs a literal default
        super().__init__()
        self.bad_steps = bad_steps

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        output = super().training_step(batch, batch_idx)
        if self.global_step in self.bad_steps:
            output["loss"] = output["loss"] * float("nan")
        self.log("train/loss", output["loss"], on_step=True)
        return output

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        output = super().validation_step(batch, batch_idx)
        self.log("val/loss", output["x"])
        return output
