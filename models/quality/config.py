"""``[quality]`` settings: the interval's coverage, its online window, and spec limits.

Spec limits are the plant's, not the model's: they are read where predictions are judged
(backtest, and later the monitor), so one model serves a product with several grades.

>>> QualityConfig.validated(lsl=0.1, usl=0.9).coverage
0.9
>>> QualityConfig.validated(lsl=0.9, usl=0.1)
Traceback (most recent call last):
...
msgspec.ValidationError: quality.lsl (0.9) must be below quality.usl (0.1)
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.config import Config


class QualityConfig(Config, frozen=True, kw_only=True):
    """How quality predictions are judged."""

    #: Share of true values the prediction interval should hold (split-conformal).
    coverage: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.9
    #: Absolute residuals the conformal interval keeps; lab results replace the oldest.
    calibration_window: Annotated[int, msgspec.Meta(ge=10)] = 500
    #: Weight of each lab result in the online bias correction (an EWMA of the lab value
    #: minus the prediction for its sample); 0 turns the correction off.
    bias_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    #: Lower and upper spec limits of the target, in its own units (None: no limit).
    lsl: float | None = None
    usl: float | None = None

    def __post_init__(self) -> None:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise ValueError(f"quality.lsl ({self.lsl}) must be below quality.usl ({self.usl})")
