"""SPOT's tail model: the POT level ``t``, a ring of peaks over it, and their GPD fit.

Shared by SPOT (on scores) and DSPOT (on de-trended scores). The threshold ``z_q`` is the
value a normal one exceeds with probability ``q``; it moves only when a peak is learned.
Each peak keeps the cap ``z_q - t`` it was learned under, so the refit undoes the
truncation that protection causes (see :mod:`models.thresholds.spot`). ``z_q`` is never
below ``t``: when ``q * n / N_t >= 1`` the model has no information under ``t``, so ``t``
is used (its exceedance rate ``N_t / n`` is then at most ``q``), and never more than
``max_tail_growth`` times its calibrated excess over ``t`` (a slowly growing fault must
not teach the tail that huge excesses are normal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.thresholds.base import (
    CRITICAL,
    NORMAL,
    WARNING,
    FloatArray,
    as_float,
    as_floats,
    as_int,
)
from models.thresholds.config import ThresholdConfig
from models.thresholds.gpd import MIN_SIGMA, excess_quantile, fit_gpd, gpd_survival


class Tail:
    """SPOT's state: the POT level ``t``, a ring of peaks, the counts and the GPD fit."""

    def __init__(self, config: ThresholdConfig, t: float) -> None:
        self.q = config.q
        self.critical_q = config.critical_probability
        self.refit_every = config.refit_every_peaks
        self.refit_growth = config.refit_growth
        self.t = t
        self.peaks = np.zeros(config.max_peaks, dtype=np.float64)
        # The excess cap (z_q - t) in force when each peak was learned; inf for calibration.
        self.caps = np.full(config.max_peaks, math.inf, dtype=np.float64)
        self.head = 0  # next write position in the ring
        self.stored = 0
        self.n = 0  # learned scores (residuals for DSPOT) since calibration started
        self.n_peaks = 0  # learned scores above t, ever
        self.gamma = 0.0
        self.sigma = 1.0
        self.zq = t
        self.fit_size = 0  # stored peaks at the last maximum-likelihood fit
        self.since_fit = 0
        self.growth = config.max_tail_growth
        #: The most ``z_q - t`` may become: ``max_tail_growth`` x its calibrated value.
        self.max_excess = math.inf

    @classmethod
    def calibrate(cls, config: ThresholdConfig, data: FloatArray) -> Tail:
        tail = cls(config, float(np.quantile(data, config.level)))
        excesses = data[data > tail.t] - tail.t
        kept = excesses[-config.max_peaks :]
        tail.peaks[: kept.size] = kept
        tail.stored = kept.size
        tail.head = kept.size % config.max_peaks
        tail.n = data.size
        tail.n_peaks = excesses.size
        if kept.size:
            tail._fit()
        else:
            # A calibration stream with no value above its level quantile (a constant score)
            # has no tail to fit: any higher score is then far out in the tail.
            spread = float(data.std())
            tail.gamma, tail.sigma = 0.0, max(spread, MIN_SIGMA * max(1.0, abs(tail.t)))
        tail._update_zq()
        tail.max_excess = tail.growth * max(tail.zq - tail.t, MIN_SIGMA * max(1.0, abs(tail.t)))
        return tail

    def _fit(self) -> None:
        self.gamma, self.sigma = fit_gpd(self.peaks[: self.stored], self.caps[: self.stored])
        self.fit_size = self.stored
        self.since_fit = 0

    def _update_zq(self) -> None:
        ratio = self.q * self.n / self.n_peaks if self.n_peaks else math.inf
        self.zq = self.t + min(excess_quantile(self.gamma, self.sigma, ratio), self.max_excess)

    def add_peak(self, excess: float) -> None:
        self.peaks[self.head] = excess
        self.caps[self.head] = self.zq - self.t
        self.head = (self.head + 1) % self.peaks.size
        self.stored = min(self.stored + 1, self.peaks.size)
        self.n += 1
        self.n_peaks += 1
        self.since_fit += 1
        due = min(self.refit_every, max(1, math.ceil(self.refit_growth * self.fit_size)))
        if self.since_fit >= due:
            self._fit()
        self._update_zq()

    def __deepcopy__(self, memo: dict[int, Any]) -> Tail:
        """A copy for judging a run again (``Monitor._judge``): the two rings copied, every
        other field a number. ``copy.deepcopy``'s generic walk cost ~70 µs per threshold,
        taken once per asset run in every batch."""
        new = object.__new__(Tail)
        new.__dict__.update(self.__dict__)
        new.peaks = self.peaks.copy()
        new.caps = self.caps.copy()
        memo[id(self)] = new
        return new

    def judge(self, value: float, learn: bool) -> int:
        """Decide a value above ``t``: its severity if above ``z_q`` (never learned), else
        ``NORMAL``, learning it as a peak when ``learn`` is true."""
        if value > self.zq:
            return self.severity(value - self.t)
        if learn:
            self.add_peak(value - self.t)
        return NORMAL

    def severity(self, excess: float) -> int:
        """Warning or critical for an anomalous excess, from the fitted tail probability."""
        if self.n_peaks == 0 or self.n == 0:
            return CRITICAL
        probability = self.n_peaks / self.n * gpd_survival(self.gamma, self.sigma, excess)
        return CRITICAL if probability <= self.critical_q else WARNING

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "peaks": self.peaks[: self.stored].tolist(),
            "caps": [c if math.isfinite(c) else None for c in self.caps[: self.stored].tolist()],
            "head": self.head,
            "n": self.n,
            "n_peaks": self.n_peaks,
            "gamma": self.gamma,
            "sigma": self.sigma,
            "zq": self.zq,
            "fit_size": self.fit_size,
            "since_fit": self.since_fit,
            "max_excess": self.max_excess if math.isfinite(self.max_excess) else None,
        }

    @classmethod
    def from_json(cls, config: ThresholdConfig, obj: Mapping[str, Any]) -> Tail:
        tail = cls(config, as_float(obj["t"], "t"))
        peaks = as_floats(obj["peaks"], "peaks")
        if peaks.size > config.max_peaks:
            raise ValueError(
                f"snapshot holds {peaks.size} peaks but max_peaks is {config.max_peaks}"
            )
        tail.peaks[: peaks.size] = peaks
        caps = obj["caps"]
        if not isinstance(caps, list) or len(caps) != peaks.size:
            raise ValueError("snapshot field 'caps' must be a list with one entry per peak")
        tail.caps[: peaks.size] = [math.inf if c is None else as_float(c, "caps") for c in caps]
        tail.stored = peaks.size
        tail.head = as_int(obj["head"], "head")
        tail.n = as_int(obj["n"], "n")
        tail.n_peaks = as_int(obj["n_peaks"], "n_peaks")
        tail.gamma = as_float(obj["gamma"], "gamma")
        tail.sigma = as_float(obj["sigma"], "sigma")
        tail.zq = as_float(obj["zq"], "zq")
        tail.fit_size = as_int(obj["fit_size"], "fit_size")
        tail.since_fit = as_int(obj["since_fit"], "since_fit")
        # Absent in snapshots made before the cap existed: uncapped, as they were made.
        cap = obj.get("max_excess")
        tail.max_excess = math.inf if cap is None else as_float(cap, "max_excess")
        return tail
