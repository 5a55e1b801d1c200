"""The strategies the study measures (its cells): the λ sweeps of the paper's three forms, then the baselines.

A :class:`Cell` names a strategy's family and λ, which the tables and figures group by: the
paper predicts ``ln λ`` per block for xSkip and no depth dependence under LN.
"""

from __future__ import annotations

from dataclasses import dataclass

from skipln.analysis.gradients.config import StudyConfig
from skipln.errors import ConfigError
from skipln.skip import Plain, PostLN, RecursiveSkipLN, Scaled, SkipStrategy

# The three families whose λ the study sweeps; every other strategy is its own family.
XSKIP, XSKIP_LN, RSKIP_LN = "xskip", "xskip_ln", "rskip_ln"


@dataclass(frozen=True)
class Cell:
    """One strategy of the study.

    Attributes:
        family: ``xskip``, ``xskip_ln``, ``rskip_ln``, or the tag of a strategy studied at its defaults.
        lam: the family's λ: the skip scale of xSkip and xSkip+LN, the number of recursions of
            rSkip+LN; ``None`` for the others.
        skip: the strategy.
    """

    family: str
    lam: float | None
    skip: SkipStrategy

    @property
    def tag(self) -> str:
        return self.skip.tag


def study_cells(config: StudyConfig) -> list[Cell]:
    """Every strategy the study measures: the λ sweeps of the paper's three forms, then the baselines.

    xSkip at λ = 1 is :class:`~skipln.skip.Plain` (the tag ``skip``) and xSkip+LN at λ = 1 is
    Post-LN (``post_ln``), so each reads under its usual name.
    """
    cells = [Cell(XSKIP, lam, Plain() if lam == 1.0 else Scaled(lam)) for lam in config.lambdas]
    cells += [Cell(XSKIP_LN, lam, PostLN(lam)) for lam in config.lambdas]
    cells += [Cell(RSKIP_LN, float(r), RecursiveSkipLN(r)) for r in config.recursions]
    cells += [Cell(skip.tag, None, skip) for skip in config.baselines]
    tags = [cell.tag for cell in cells]
    repeated = sorted({t for t in tags if tags.count(t) > 1})
    if repeated:
        raise ConfigError(f"the study lists {', '.join(repeated)} twice (a baseline repeats a λ of the sweeps?); list it once")
    return cells
