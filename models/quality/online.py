"""Learning from late lab results: an online bias correction and a conformal update.

One :class:`OnlineCorrection` per asset and quality model. Each lab value is compared with
the prediction operators saw for its sample time (the model's raw prediction plus the bias
known then): that error renews the conformal interval's residuals, and the bias moves
toward the lab value minus the raw prediction by ``bias_rate`` (an EWMA). The backtest's
simulated lab delivery (``plantwatch.quality.backtest_quality``) and the live service
(``plantwatch.quality_service``) both step this one class, so a replay and a stream learn
the same numbers from the same lab values.

>>> from models.quality.conformal import SplitConformal
>>> c = OnlineCorrection(SplitConformal([0.1] * 20, window=20), bias_rate=0.5, coverage=0.9)
>>> c.radius
0.1
>>> u = c.learn(measured=2.0, raw=1.0, bias_then=0.0)
>>> (u.error, u.bias_before, u.bias_after, c.bias, c.updates)
(1.0, 0.0, 0.5, 0.5, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.quality.conformal import SplitConformal


@dataclass(frozen=True)
class CorrectionUpdate:
    """What one lab result changed (for the log line and the metrics)."""

    #: Lab value minus the prediction operators saw for the sample (``raw + bias_then``).
    error: float
    bias_before: float
    bias_after: float
    radius_before: float
    radius_after: float
    #: Sequence number of this update for the asset and model (1 for the first).
    update: int

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "bias_before": self.bias_before,
            "bias_after": self.bias_after,
            "radius_before": self.radius_before,
            "radius_after": self.radius_after,
            "update": self.update,
        }


class OnlineCorrection:
    """The bias added to a model's predictions and the interval's residual window."""

    def __init__(self, conformal: SplitConformal, *, bias_rate: float, coverage: float) -> None:
        if not 0.0 <= bias_rate <= 1.0:
            raise ValueError(f"bias_rate must be within [0, 1], got {bias_rate}")
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.conformal = conformal
        self.bias_rate = float(bias_rate)
        self.coverage = float(coverage)
        self.bias = 0.0
        self.updates = 0
        self._radius = conformal.radius(coverage)

    @property
    def radius(self) -> float:
        """Half-width of the interval at ``coverage`` (infinite while too few residuals)."""
        return self._radius

    def learn(self, measured: float, raw: float, bias_then: float) -> CorrectionUpdate:
        """Learn one lab value ``measured`` for a sample whose raw prediction was ``raw``
        and whose served prediction carried the bias ``bias_then``.

        Raises ``ValueError`` for a non-finite value (nothing is learnt from it).
        """
        if not (np.isfinite(measured) and np.isfinite(raw) and np.isfinite(bias_then)):
            raise ValueError(
                f"lab value {measured}, raw prediction {raw} and bias {bias_then} must be finite"
            )
        before_bias, before_radius = self.bias, self._radius
        # The prediction operators saw for the sample: its error is what the interval must
        # cover.
        error = float(measured - (raw + bias_then))
        self.conformal.update([error])
        self.bias += self.bias_rate * (measured - raw - self.bias)
        self._radius = self.conformal.radius(self.coverage)
        self.updates += 1
        return CorrectionUpdate(
            error=error,
            bias_before=before_bias,
            bias_after=self.bias,
            radius_before=before_radius,
            radius_after=self._radius,
            update=self.updates,
        )
