"""The fixed threshold: a value that never changes (only the grace period applies).

It is ``fixed_value``, or the ``1 - q`` quantile of the calibration scores. Below ``1/q``
calibration scores that quantile cannot be told apart from the largest score, so the
largest calibration score is used (the floor; the expected false-alarm rate is then about
``1/(n+1)``, above ``q``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from models.thresholds.base import (
    Verdicts,
    as_float,
    as_int,
    check_learn,
    check_scores,
    ratio_verdicts,
    snapshot_header,
)
from models.thresholds.config import ThresholdConfig


class FixedThreshold:
    """A threshold that never changes (only the grace period applies).

    >>> th = FixedThreshold(ThresholdConfig(kind="fixed", grace=0), 4.0)
    >>> _, anomalous, severity = th.update([1.0, 5.0, 9.0])
    >>> anomalous.tolist(), severity.tolist()
    ([False, True, True], [0, 1, 2])
    """

    kind: ClassVar[str] = "fixed"

    def __init__(self, config: ThresholdConfig, value: float, *, n_seen: int = 0) -> None:
        if not math.isfinite(value):
            raise ValueError(f"a fixed threshold must be finite; got {value}")
        self.config = config
        self._value = float(value)
        self._n_seen = n_seen

    @classmethod
    def from_calibration(
        cls, config: ThresholdConfig, calibration_scores: npt.ArrayLike
    ) -> FixedThreshold:
        """``config.fixed_value``, else the ``1 - q`` quantile of the calibration scores."""
        cal = check_scores(calibration_scores, "calibration_scores")
        if config.fixed_value is not None:
            return cls(config, config.fixed_value, n_seen=cal.size)
        if cal.size == 0:
            raise ValueError(
                "a fixed threshold needs fixed_value or calibration scores; got neither. "
                "Set fixed_value in the threshold config or score some normal history first."
            )
        if cal.size * config.q < 1.0:
            value = float(cal.max())
        else:
            value = float(np.quantile(cal, 1.0 - config.q))
        return cls(config, value, n_seen=cal.size)

    @property
    def value(self) -> float:
        return self._value

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = check_scores(scores)
        check_learn(learn, x.size)
        thresholds = np.full(x.size, self._value, dtype=np.float64)
        anomalous = x > self._value
        undecided = min(x.size, max(0, self.config.grace - self._n_seen))
        anomalous[:undecided] = False
        self._n_seen += x.size
        return ratio_verdicts(x, thresholds, anomalous, self.config.critical_ratio)

    def snapshot(self) -> dict[str, Any]:
        return {
            **snapshot_header(self.kind, self.config),
            "value": self._value,
            "n_seen": self._n_seen,
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> FixedThreshold:
        config = ThresholdConfig.from_json(snap["config"])
        return cls(
            config, as_float(snap["value"], "value"), n_seen=as_int(snap["n_seen"], "n_seen")
        )
