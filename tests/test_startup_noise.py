"""Start-up messages from other libraries that a user cannot act on are silenced, and only those."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning.pytorch.utilities import rank_zero_info

from skipln.cli import quiet_foreign_notices


def test_lightnings_cloud_tips_are_dropped_and_its_other_info_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_foreign_notices()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]


def test_the_pytree_deprecation_inside_lightning_is_silenced_and_other_warnings_are_not() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_foreign_notices()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning, stacklevel=1)
        warnings.warn("something the user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something the user should see"]
