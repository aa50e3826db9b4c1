"""What every threshold kind shares: the protocol, the verdicts, input and snapshot checks."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.thresholds.config import ThresholdConfig

SNAPSHOT_VERSION = 1

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SeverityArray = npt.NDArray[np.int8]
#: What ``Threshold.update`` returns: thresholds (float64), anomalous (bool), severity (int8).
Verdicts = tuple[FloatArray, BoolArray, SeverityArray]

NORMAL = 0
WARNING = 1
CRITICAL = 2


@runtime_checkable
class Threshold(Protocol):
    """Decides, per asset, which scores are anomalous; adapts as scores arrive."""

    config: ThresholdConfig

    @property
    def value(self) -> float:
        """The threshold in force for the next score (``+inf`` while none exists)."""
        ...

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        """Judge ``scores`` (time order) and learn the normal ones whose ``learn`` is true."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as a plain, versioned, JSON-able dict."""
        ...


def undecided(n: int) -> Verdicts:
    """Verdicts for ``n`` scores before any threshold exists: ``+inf``, normal."""
    return (
        np.full(n, math.inf, dtype=np.float64),
        np.zeros(n, dtype=np.bool_),
        np.zeros(n, dtype=np.int8),
    )


def ratio_verdicts(
    scores: FloatArray, thresholds: FloatArray, anomalous: BoolArray, critical_ratio: float
) -> Verdicts:
    """The verdicts of a kind without a tail model: an anomaly is a warning, or critical
    once ``score - threshold >= (critical_ratio - 1) |threshold|``."""
    severity = np.zeros(scores.shape, dtype=np.int8)
    if anomalous.any():  # rare, so the common case stays cheap
        severity[anomalous] = WARNING
        critical = anomalous & (scores - thresholds >= (critical_ratio - 1.0) * np.abs(thresholds))
        severity[critical] = CRITICAL
    return thresholds, anomalous, severity


# ---------------------------------------------------------------------------- input checks


def check_scores(scores: npt.ArrayLike, what: str = "scores") -> FloatArray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array (one score per window); got shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{what} must be finite; got {x[bad]} at index {bad}. The scorer produced a "
            "non-finite score: check the window's readings for NaN/inf before scoring."
        )
    return x


def check_learn(learn: npt.ArrayLike | None, n: int) -> BoolArray:
    if learn is None:
        return np.ones(n, dtype=np.bool_)
    flags = np.asarray(learn, dtype=np.bool_)
    if flags.shape != (n,):
        raise ValueError(f"learn must have one flag per score, shape ({n},); got {flags.shape}")
    return flags


# ------------------------------------------------------------------------- snapshot fields


def snapshot_header(kind: str, config: ThresholdConfig) -> dict[str, Any]:
    return {"kind": kind, "v": SNAPSHOT_VERSION, "config": config.to_json()}


def as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"snapshot field {name!r} must be a number; got {value!r}")
    return float(value)


def as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"snapshot field {name!r} must be an integer; got {value!r}")
    return value


def as_floats(value: Any, name: str) -> FloatArray:
    if not isinstance(value, list):
        raise ValueError(f"snapshot field {name!r} must be a list of numbers")
    return np.asarray([as_float(v, name) for v in value], dtype=np.float64)
