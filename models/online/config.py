"""Settings of online learning: one frozen, typed struct, checked when it is decoded.

Ranges are declared on the fields (``msgspec.Meta``) and checked by ``msgspec.convert`` /
``msgspec.json.decode`` (``plantwatch.settings`` builds it that way, from a file, the
environment and flags); only the check across fields runs in ``__post_init__``, on every
construction. Build it from values a person typed with ``msgspec.convert``, which refuses
an out-of-range value, a wrong type (``true`` for a count) or an unknown key, naming it:

>>> import msgspec
>>> msgspec.convert({"enabled": True, "min_windows": 500}, OnlineConfig).min_windows
500
>>> try:
...     msgspec.convert({"min_windows": 0}, OnlineConfig)
... except msgspec.ValidationError as exc:
...     print(exc)
Expected `int` >= 1 - at `$.min_windows`
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.config import Config

#: Finite upper bounds stand in for "a finite number": ``msgspec.Meta`` lets ``inf``
#: through a lower bound alone. Each is far beyond any sensible setting.
_MAX_INTERVAL_S = 366 * 24 * 3600.0
_MAX_RATIO = 1000.0

PositiveCount = Annotated[int, msgspec.Meta(ge=1)]


class OnlineConfig(Config, frozen=True, kw_only=True):
    """Settings of :class:`~models.online.OnlineLearner`; off unless ``enabled``.

    ``min_interval_s`` is the least time between fine-tune starts (also after start-up and
    after a rollback); ``min_windows`` the new eligible windows needed since the last start;
    ``buffer_windows`` the newest eligible windows kept; ``holdout_fraction`` the newest part
    of them held out for validation; ``epochs`` and ``lr_scale`` go to ``fine_tune`` (the
    learning rate is the training one times ``lr_scale``); a candidate is accepted when its
    held-out error is at most ``max_score_ratio`` times the current model's; after a swap the
    next ``rollback_windows`` verdicts are watched and an anomalous rate of at least
    ``rollback_anomaly_ratio`` times the rate before the swap rolls it back. ``seed`` seeds
    the fine-tune. ``guard_ms`` is read by the monitor, which decides what is eligible: no
    window within that long after an anomalous window (or an open or cooling alert) of its
    asset is ever offered, so a fault is never taught as normal.
    """

    enabled: bool = False
    min_interval_s: Annotated[float, msgspec.Meta(ge=0.0, le=_MAX_INTERVAL_S)] = 3600.0
    min_windows: PositiveCount = 2000
    buffer_windows: PositiveCount = 20000
    holdout_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.2
    epochs: PositiveCount = 3
    lr_scale: Annotated[float, msgspec.Meta(gt=0.0, le=_MAX_RATIO)] = 0.3
    #: 0.95, not 1.0: swap only on a real improvement, since every swap is followed by a
    #: rollback watch.
    max_score_ratio: Annotated[float, msgspec.Meta(gt=0.0, le=_MAX_RATIO)] = 0.95
    rollback_windows: PositiveCount = 2000
    #: At least 1: a rate that many times the rate before the swap rolls it back.
    rollback_anomaly_ratio: Annotated[float, msgspec.Meta(ge=1.0, le=_MAX_RATIO)] = 3.0
    seed: int = 0
    guard_ms: Annotated[int, msgspec.Meta(ge=0)] = 600_000

    def __post_init__(self) -> None:
        if self.min_windows > self.buffer_windows:
            raise ValueError(
                f"online.min_windows ({self.min_windows}) exceeds online.buffer_windows "
                f"({self.buffer_windows}); the buffer could never hold that many. Raise "
                "buffer_windows or lower min_windows"
            )
