"""The streaming-quantile threshold: ``margin`` times a P² estimate of a quantile.

:class:`QuantileThreshold` is ``margin`` times a streaming P² estimate ``Q`` (Jain &
Chlamtac, 1985) of the ``quantile`` of learned scores (``Q + (margin - 1)|Q|``, so a
negative ``Q`` of a signed score is raised too). With protection, a threshold *at* the
learned quantile spirals down (the learned stream is truncated at the threshold, so its
quantile is lower, and so on), which is why there is a margin. Its false-alarm rate is
``P(score > margin · Q)``, a property of the score distribution, not of ``q`` (exponential
scores with the defaults, quantile 0.99 and margin 1.5: 1e-3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from models.thresholds.base import (
    FloatArray,
    Verdicts,
    as_float,
    as_int,
    check_learn,
    check_scores,
    ratio_verdicts,
    snapshot_header,
)
from models.thresholds.config import ThresholdConfig


class P2Quantile:
    """The P² streaming estimate of one quantile (Jain & Chlamtac, 1985), in plain numbers.

    Five markers track the minimum, ``p/2``, ``p``, ``(1+p)/2`` quantiles and the maximum;
    memory is constant and the state is eleven numbers, so it snapshots as JSON (river's
    ``stats.Quantile`` lives in a Rust object that only pickles).

    >>> est = P2Quantile(0.5)
    >>> for x in range(1, 102):
    ...     est.add(float(x))
    >>> est.get()
    51.0
    """

    def __init__(self, p: float) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"the quantile must be in (0, 1); got {p}")
        self.p = p
        self._steps = (0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0)
        self.heights: list[float] = []
        self.positions: list[int] = []
        self.desired: list[float] = []
        self.count = 0

    @classmethod
    def from_sample(cls, p: float, sample: FloatArray) -> P2Quantile:
        """Start from a batch: markers at the sample's empirical quantiles (needs >= 5)."""
        est = cls(p)
        n = sample.size
        if n < 5:
            for x in sample.tolist():
                est.add(x)
            return est
        est.heights = [float(v) for v in np.quantile(sample, est._steps)]
        est.desired = [1.0 + (n - 1) * f for f in est._steps]
        positions = [round(d) for d in est.desired]
        positions[0], positions[4] = 1, n
        for i in (1, 2, 3):  # markers need distinct positions
            positions[i] = min(max(positions[i], positions[i - 1] + 1), n - (4 - i))
        est.positions = positions
        est.count = n
        return est

    def get(self) -> float | None:
        """The current estimate; ``None`` before five values."""
        return self.heights[2] if self.count >= 5 else None

    def add(self, x: float) -> None:
        """Learn one value."""
        h = self.heights
        if self.count < 5:
            h.append(x)
            h.sort()
            self.count += 1
            if self.count == 5:
                self.positions = [1, 2, 3, 4, 5]
                self.desired = [1.0 + 4.0 * f for f in self._steps]
            return
        self.count += 1
        pos = self.positions
        if x < h[0]:
            h[0] = x
            k = 0
        elif x >= h[4]:
            h[4] = x
            k = 3
        elif x < h[1]:
            k = 0
        elif x < h[2]:
            k = 1
        elif x < h[3]:
            k = 2
        else:
            k = 3
        for i in range(k + 1, 5):
            pos[i] += 1
        des = self.desired
        steps = self._steps
        for i in (1, 2, 3):
            des[i] += steps[i]
        des[4] += 1.0
        for i in (1, 2, 3):
            d = des[i] - pos[i]
            if (d >= 1.0 and pos[i + 1] - pos[i] > 1) or (d <= -1.0 and pos[i - 1] - pos[i] < -1):
                s = 1 if d > 0 else -1
                n_lo, n_i, n_hi = pos[i - 1], pos[i], pos[i + 1]
                q_lo, q_i, q_hi = h[i - 1], h[i], h[i + 1]
                parabolic = q_i + s / (n_hi - n_lo) * (
                    (n_i - n_lo + s) * (q_hi - q_i) / (n_hi - n_i)
                    + (n_hi - n_i - s) * (q_i - q_lo) / (n_i - n_lo)
                )
                if q_lo < parabolic < q_hi:
                    h[i] = parabolic
                else:
                    h[i] = q_i + s * (h[i + s] - q_i) / (pos[i + s] - n_i)
                pos[i] = n_i + s

    def to_json(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "heights": list(self.heights),
            "positions": list(self.positions),
            "desired": list(self.desired),
            "count": self.count,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> P2Quantile:
        est = cls(as_float(obj["p"], "p"))
        est.heights = [as_float(v, "heights") for v in obj["heights"]]
        est.positions = [as_int(v, "positions") for v in obj["positions"]]
        est.desired = [as_float(v, "desired") for v in obj["desired"]]
        est.count = as_int(obj["count"], "count")
        return est


def _with_margin(estimate: float, margin: float) -> float:
    return estimate + (margin - 1.0) * abs(estimate)


class QuantileThreshold:
    """``margin`` × a streaming P² quantile of the learned scores.

    >>> th = QuantileThreshold(ThresholdConfig(kind="quantile", quantile=0.5, margin=2.0,
    ...                                        grace=0), [1.0, 2.0, 3.0, 4.0, 5.0])
    >>> thresholds, anomalous, _ = th.update([7.0, 0.0])
    >>> thresholds.tolist(), anomalous.tolist()
    ([6.0, 6.0], [True, False])
    """

    kind: ClassVar[str] = "quantile"

    def __init__(self, config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> None:
        cal = check_scores(calibration_scores, "calibration_scores")
        self.config = config
        self._estimator = P2Quantile.from_sample(config.quantile, cal)
        self._n_seen = cal.size

    @property
    def value(self) -> float:
        estimate = self._estimator.get()
        return math.inf if estimate is None else _with_margin(estimate, self.config.margin)

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = check_scores(scores)
        flags = check_learn(learn, x.size)
        n = x.size
        thresholds = np.empty(n, dtype=np.float64)
        anomalous = np.zeros(n, dtype=np.bool_)
        est = self._estimator
        extra = self.config.margin - 1.0
        grace = self.config.grace
        seen = self._n_seen
        for i, (score, learn_it) in enumerate(zip(x.tolist(), flags.tolist(), strict=True)):
            if est.count >= 5:
                estimate = est.heights[2]
                threshold = estimate + extra * abs(estimate)
                if seen >= grace and score > threshold:
                    thresholds[i] = threshold
                    anomalous[i] = True
                    seen += 1
                    continue
            else:
                threshold = math.inf
            thresholds[i] = threshold
            if learn_it:
                est.add(score)
            seen += 1
        self._n_seen = seen
        return ratio_verdicts(x, thresholds, anomalous, self.config.critical_ratio)

    def snapshot(self) -> dict[str, Any]:
        return {
            **snapshot_header(self.kind, self.config),
            "n_seen": self._n_seen,
            "estimator": self._estimator.to_json(),
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> QuantileThreshold:
        th = cls(ThresholdConfig.from_json(snap["config"]))
        th._n_seen = as_int(snap["n_seen"], "n_seen")
        th._estimator = P2Quantile.from_json(snap["estimator"])
        return th
