"""How one asset's threshold is set and adapted: one frozen, typed msgspec model.

msgspec checks the ranges (``Annotated[..., msgspec.Meta(...)]``) when it *converts* values
into a config, not when the class is called directly: build configs from outside input with
:meth:`ThresholdConfig.validated` (or ``msgspec.convert(values, ThresholdConfig)``, which the
settings loader does). The cross-field rules are in ``__post_init__``, which runs either way;
``msgspec.convert`` turns their ``ValueError`` into a ``msgspec.ValidationError`` (itself a
``ValueError``). :func:`models.thresholds.make_threshold` checks its config once more, so a
hand-built config with ``q=5`` fails there rather than deciding nonsense.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import msgspec

from common.config import Config

ThresholdKind = Literal["fixed", "quantile", "spot", "dspot"]
KINDS: tuple[ThresholdKind, ...] = ("fixed", "quantile", "spot", "dspot")

#: Peaks needed before SPOT/DSPOT fit a tail at all: the calibration waits for
#: ``ceil(MIN_PEAKS / (1 - level))`` learned scores (500 at the default level 0.98).
MIN_PEAKS = 10

#: Strictly between 0 and 1: a probability that is neither impossible nor certain.
Probability = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
#: A finite float (msgspec bounds cannot be infinite, so the largest doubles stand in).
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


class ThresholdConfig(Config, frozen=True, kw_only=True):
    """How one asset's threshold is set and adapted.

    ``q`` is the risk: the probability that a normal score exceeds the threshold, i.e. the
    expected false-alarm rate per scored window (fixed, SPOT, DSPOT). ``level`` is SPOT's
    initial-threshold quantile; ``depth`` DSPOT's moving-average length in scores; ``grace``
    the number of scores (calibration included) before any decision; ``critical_q`` the
    exceedance probability at or under which an anomaly is critical (``None``: ``q / 100``);
    ``fixed_value`` the fixed kind's threshold (``None``: from calibration); ``quantile`` and
    ``margin`` the streaming-quantile kind's statistic and multiplier; ``critical_ratio``
    the score/threshold ratio at which a fixed/quantile anomaly is critical; ``max_peaks``
    the most peaks SPOT/DSPOT store; ``refit_every_peaks`` and ``refit_growth`` the
    amortisation of the maximum-likelihood tail refit; ``max_tail_growth`` how far
    SPOT/DSPOT's tail threshold may rise over its calibrated value.

    >>> ThresholdConfig(kind="dspot", depth=50).critical_probability
    1e-06
    >>> ThresholdConfig.validated(kind="spot", q=2.0)
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: Expected `float` < 1.0 - at `$.q`
    """

    kind: ThresholdKind = "dspot"
    q: Probability = 1e-4
    level: Probability = 0.98
    depth: Annotated[int, msgspec.Meta(ge=1)] = 200
    grace: Annotated[int, msgspec.Meta(ge=0)] = 0
    critical_q: Probability | None = None
    fixed_value: Finite | None = None
    quantile: Probability = 0.99
    #: At least 1: the threshold sits above the learned quantile.
    margin: Annotated[float, msgspec.Meta(ge=1.0)] = 1.5
    critical_ratio: Annotated[float, msgspec.Meta(gt=1.0)] = 2.0
    max_peaks: Annotated[int, msgspec.Meta(ge=MIN_PEAKS)] = 2000
    refit_every_peaks: Annotated[int, msgspec.Meta(ge=1)] = 128
    refit_growth: Annotated[float, msgspec.Meta(ge=0.0)] = 0.1
    #: SPOT/DSPOT's tail threshold (the excess over ``t``) never rises past this multiple
    #: of the one calibration gave. A fault that grows slowly stays under the moving
    #: threshold score after score; its excesses, learned as peaks, fattened the tail until
    #: the monitor was blind (measured: after a bearing wear at 1 s DSPOT sat at 30,000
    #: for hours, against 18 before it). 30 by measurement (docs/BENCHMARKS.md): 10 put
    #: Conv-AE + DSPOT over its false-alarm budget under set-point steps (9.6 against 8.6
    #: per asset-day; uncapped and 30: 8.4), 3 tripled PCA's false alerts there. DSPOT's
    #: trend still follows the score level.
    max_tail_growth: Annotated[float, msgspec.Meta(ge=1.0)] = 30.0

    def __post_init__(self) -> None:
        # Cross-field rules only; every single-field range is a constraint above.
        if self.kind in ("spot", "dspot") and self.q >= 1.0 - self.level:
            raise ValueError(
                f"q={self.q} must be below 1 - level = {1.0 - self.level:g}: SPOT extrapolates "
                "the tail beyond the level quantile. Lower q or the level."
            )
        if self.critical_q is not None and self.critical_q > self.q:
            raise ValueError(
                f"critical_q must be in (0, q={self.q}]; got {self.critical_q} "
                "(a critical anomaly is rarer than a warning)"
            )

    @property
    def critical_probability(self) -> float:
        """The exceedance probability at or under which an anomaly is critical."""
        return self.q / 100.0 if self.critical_q is None else self.critical_q
