"""Split-conformal prediction intervals, updated online as true values arrive.

Calibration keeps the absolute residuals ``|y - ŷ|`` of held-out rows; the interval at
coverage ``1 - α`` is ``ŷ ± q`` with ``q`` the ``⌈(n + 1)(1 - α)⌉``-th smallest residual
(Vovk et al.; Lei et al. 2018), which holds at least ``1 - α`` of exchangeable new values.
Process data are not exchangeable for long, so the residuals live in a bounded window: each
lab result pushes out the oldest, and the interval follows the model's current error.

>>> c = SplitConformal.fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], window=9)
>>> round(c.radius(0.8), 3)
0.8
>>> c.update([5.0] * 9)
>>> c.radius(0.8)
5.0
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


class SplitConformal:
    """Absolute residuals of the newest ``window`` calibration rows, as a ring."""

    def __init__(self, residuals: npt.ArrayLike, *, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = int(window)
        res = np.abs(np.asarray(residuals, dtype=np.float64).reshape(-1))
        res = res[np.isfinite(res)][-self.window :]
        self._ring = np.full(self.window, np.nan)
        self._ring[: res.size] = res
        self._count = int(res.size)
        self._next = int(res.size) % self.window

    @classmethod
    def fit(cls, residuals: npt.ArrayLike, *, window: int) -> SplitConformal:
        return cls(residuals, window=window)

    @property
    def residuals(self) -> npt.NDArray[np.float64]:
        """The kept residuals, oldest first."""
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.roll(self._ring, -self._next)

    def __len__(self) -> int:
        return self._count

    def update(self, residuals: npt.ArrayLike) -> None:
        """Learn new absolute residuals (a lab value against its prediction); NaN skipped."""
        res = np.abs(np.asarray(residuals, dtype=np.float64).reshape(-1))
        for value in res[np.isfinite(res)][-self.window :]:
            self._ring[self._next] = value
            self._next = (self._next + 1) % self.window
            self._count = min(self._count + 1, self.window)

    def radius(self, coverage: float) -> float:
        """Half-width of the interval holding ``coverage`` of new values; inf when too few.

        With ``n`` residuals, coverage above ``n / (n + 1)`` cannot be promised: the
        radius is then infinite rather than silently too narrow.
        """
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        n = self._count
        rank = math.ceil((n + 1) * coverage)
        if n == 0 or rank > n:
            return math.inf
        return float(np.partition(self.residuals, rank - 1)[rank - 1])
