"""Build a threshold from a config, or rebuild one from its snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from models.thresholds.base import SNAPSHOT_VERSION, Threshold
from models.thresholds.config import KINDS, ThresholdConfig
from models.thresholds.dspot import DSPOTThreshold
from models.thresholds.fixed import FixedThreshold
from models.thresholds.quantile import QuantileThreshold
from models.thresholds.spot import SPOTThreshold


def make_threshold(config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> Threshold:
    """Build the threshold ``config.kind`` names, calibrated on normal ``calibration_scores``.

    The calibration scores count towards the grace period; give at least ``config.grace`` of
    them (and, for SPOT, ``ceil(10 / (1 - level))``; DSPOT ``depth`` more) to decide at once.
    The config's constraints are checked here (``msgspec.ValidationError`` if one fails).
    """
    config.checked()
    if config.kind == "fixed":
        return FixedThreshold.from_calibration(config, calibration_scores)
    if config.kind == "quantile":
        return QuantileThreshold(config, calibration_scores)
    if config.kind == "spot":
        return SPOTThreshold(config, calibration_scores)
    return DSPOTThreshold(config, calibration_scores)


def restore(snapshot: Mapping[str, Any]) -> Threshold:
    """Rebuild a threshold from :meth:`Threshold.snapshot` output (dispatches on ``kind``)."""
    kind = snapshot.get("kind")
    version = snapshot.get("v")
    if version != SNAPSHOT_VERSION:
        raise ValueError(
            f"threshold snapshot version {version!r} is not readable by this build "
            f"(it reads v{SNAPSHOT_VERSION}); recalibrate the asset with make_threshold"
        )
    if kind == "fixed":
        return FixedThreshold.from_snapshot(snapshot)
    if kind == "quantile":
        return QuantileThreshold.from_snapshot(snapshot)
    if kind == "spot":
        return SPOTThreshold.from_snapshot(snapshot)
    if kind == "dspot":
        return DSPOTThreshold.from_snapshot(snapshot)
    raise ValueError(f"unknown threshold snapshot kind {kind!r}; expected one of {KINDS}")
