"""``[quality]`` settings: the interval's coverage, its online window, spec limits, and
how ``plantwatch run`` serves quality models (which, how often, how lab results join).

Spec limits are the plant's, not the model's: they are read where predictions are judged
(backtest and the monitor), so one model serves a product with several grades. ``lsl`` /
``usl`` are the limits of every target; ``limits`` gives a target its own (a monitor that
serves several quality models predicts several targets).

>>> QualityConfig.validated(lsl=0.1, usl=0.9).coverage
0.9
>>> QualityConfig.validated(lsl=0.9, usl=0.1)
Traceback (most recent call last):
...
msgspec.ValidationError: quality.lsl (0.9) must be below quality.usl (0.1)
>>> cfg = QualityConfig.validated(usl=0.3, limits={"y1": {"lsl": 1.0, "usl": 2.0}})
>>> cfg.spec_limits("y1"), cfg.spec_limits("y2")
((1.0, 2.0), (None, 0.3))
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from common.config import Config


class SpecLimits(Config, frozen=True, kw_only=True):
    """One target's spec limits, in its own units (None: no limit on that side)."""

    lsl: float | None = None
    usl: float | None = None

    def __post_init__(self) -> None:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise ValueError(f"lsl ({self.lsl}) must be below usl ({self.usl})")


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

    #: Per-target spec limits, over ``lsl``/``usl`` for that target: ``{y2 = {usl = 0.3}}``.
    limits: dict[str, SpecLimits] = msgspec.field(default_factory=dict)
    #: Quality model directories ``plantwatch run`` serves beside the anomaly model (each
    #: ``--quality-model DIR`` flag adds one); empty: no quality predictions.
    models: tuple[str, ...] = ()
    #: One prediction per asset and model every this long of reading time (on a grid:
    #: the first reading with a complete history in each period); 0: every reading.
    every_ms: Annotated[int, msgspec.Meta(ge=0)] = 60_000
    #: A lab result joins the newest prediction at or before its sample time, if that is
    #: at most this much older (keep it at least ``every_ms``); else it is unmatched.
    join_tolerance_ms: Annotated[int, msgspec.Meta(ge=0)] = 300_000
    #: Predictions kept per asset and model for the lab join (lab delay / every_ms at
    #: least: a day of minute predictions by default).
    predictions_kept: Annotated[int, msgspec.Meta(ge=1)] = 1440
    #: Lab joins the rolling RMSE, MAE, bias and coverage are computed over.
    metrics_window: Annotated[int, msgspec.Meta(ge=1)] = 100
    #: What makes a quality alert: ``point``, the prediction outside the limits (critical
    #: when the whole interval is); ``interval``, any of the interval outside (an earlier,
    #: noisier warning; critical when the prediction itself is).
    alert_on: Literal["point", "interval"] = "point"

    def __post_init__(self) -> None:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise ValueError(f"quality.lsl ({self.lsl}) must be below quality.usl ({self.usl})")

    def spec_limits(self, target: str) -> tuple[float | None, float | None]:
        """(LSL, USL) of ``target``: its own entry in ``limits``, else ``lsl``/``usl``."""
        own = self.limits.get(target)
        return (self.lsl, self.usl) if own is None else (own.lsl, own.usl)
