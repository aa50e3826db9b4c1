"""SPOT: streaming peaks-over-threshold (Siffer et al., KDD 2017) with amortised refits.

A generalised Pareto (GPD) tail is fitted to the excesses ("peaks") over the ``level``
quantile ``t`` of the calibration scores; the threshold ``z_q`` is the score a normal score
exceeds with probability ``q``. As in the paper, ``t`` stays fixed, a score above ``z_q`` is
an anomaly, a score in ``(t, z_q]`` a new peak, and ``z_q`` moves only when a peak arrives,
so scores at or below ``t`` (the common case) are judged by one vectorised compare.

Two departures, both measured: (1) the paper's refit at every peak fits the peaks as a
complete sample, but protection means no peak above ``z_q`` is ever learned, so the sample
is truncated, the fitted tail lighter, ``z_q`` lower, the truncation harsher: on i.i.d.
exponential scores with q = 1e-3 the threshold slid from 6.9 to 5.0 over 400k scores and
the false-alarm rate reached 7.7 q. Each peak therefore keeps the cap ``z_q - t`` it was
learned under, and :func:`~models.thresholds.gpd.fit_gpd` maximises the truncated
likelihood (starting from Grimshaw's untruncated fit); the rate then stays near ``q``.
(2) The fit is amortised: at every peak while few exist, then once the stored count grew by
``refit_growth``, at most every ``refit_every_peaks`` peaks; between fits the last one stays
in force and ``z_q`` is recomputed from the counts in O(1). The peaks are a ring of the
latest ``max_peaks`` (and their caps). If the score level drifts above ``t`` every score
becomes a peak and the cost rises to tens of µs per score: that is drift, which
:mod:`models.drift` reports and DSPOT absorbs.

:class:`SPOTThreshold` is also the machinery DSPOT reuses (:mod:`models.thresholds.dspot`):
the calibration buffer of the grace period, the tail, the snapshot. A subclass changes what
the tail is calibrated on (:meth:`SPOTThreshold._calibration_sample`), how a tail threshold
reads in score units (:meth:`SPOTThreshold._in_score_units`), how the scores after
calibration are judged (:meth:`SPOTThreshold._decide`) and what else it snapshots.

**A conservative start when the calibration is thin.** A model trained on a short history
brings fewer calibration scores than a tail needs (``ceil(MIN_PEAKS / (1 - level))``, 500 at
the default level). Rather than deciding nothing until enough scores have streamed by (and
learning them unprotected, faults included), SPOT then starts from a *bridge* threshold:
a tail fitted to the thin calibration at the level that still leaves ``MIN_PEAKS`` peaks,
extrapolated to ``q``, and never below the highest calibration score. Scores over the bridge
are anomalous and are not learned; the others fill the calibration buffer, and once it
holds enough the real tail replaces the bridge (the threshold tightens as scores arrive).
The bridge is a function of the artifact's calibration alone, so the decisions do not
depend on how the stream is cut into batches. With fewer than ``MIN_BRIDGE_SCORES``
calibration scores there is no bridge: nothing is decided until the tail exists.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import msgspec
import numpy as np
import numpy.typing as npt

from models.thresholds.base import (
    BoolArray,
    FloatArray,
    Verdicts,
    as_float,
    as_floats,
    as_int,
    check_learn,
    check_scores,
    ratio_verdicts,
    snapshot_header,
    undecided,
)
from models.thresholds.config import MIN_PEAKS, ThresholdConfig
from models.thresholds.tail import Tail

#: Calibration scores below which no bridge threshold is attempted.
MIN_BRIDGE_SCORES = 2 * MIN_PEAKS

#: Batches up to this many scores take a plain Python loop: numpy's per-call overhead would
#: dominate. Both paths do the same floating-point operations in the same order.
SMALL_BATCH = 32


class _CalibrationBuffer:
    """Scores learned before the tail exists (the grace period), then calibrated on."""

    def __init__(self, scores: FloatArray) -> None:
        self.chunks: list[FloatArray] = [scores] if scores.size else []
        self.size = scores.size

    def take(
        self, x: FloatArray, flags: BoolArray, n_seen: int, grace: int, needed: int
    ) -> tuple[int, bool]:
        """Absorb the prefix of ``x`` before calibration is due; (prefix length, due?)."""
        learned_before = np.concatenate(([0], np.cumsum(flags)))
        steps = np.arange(x.size + 1)
        due = (n_seen + steps >= grace) & (self.size + learned_before >= needed)
        hits = np.flatnonzero(due)
        stop = int(hits[0]) if hits.size else x.size
        learned = x[:stop][flags[:stop]]
        if learned.size:
            self.chunks.append(learned)
            self.size += learned.size
        return stop, bool(hits.size)

    def __deepcopy__(self, memo: dict[int, Any]) -> _CalibrationBuffer:
        # The chunks are never written in place (each is a fresh array): a new list will do.
        new = object.__new__(_CalibrationBuffer)
        new.chunks, new.size = list(self.chunks), self.size
        memo[id(self)] = new
        return new

    def data(self) -> FloatArray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(self.chunks)


def min_calibration(config: ThresholdConfig) -> int:
    """Learned scores SPOT needs before it fits a tail: ``MIN_PEAKS`` expected peaks."""
    return math.ceil(MIN_PEAKS / (1.0 - config.level))


def bridge_threshold(config: ThresholdConfig, calibration: FloatArray) -> float | None:
    """A conservative threshold from a calibration too thin for the configured tail.

    >>> rng = np.random.default_rng(0)
    >>> cal = rng.exponential(size=300)
    >>> round(bridge_threshold(ThresholdConfig(q=1e-3), cal), 1) >= round(float(cal.max()), 1)
    True
    >>> bridge_threshold(ThresholdConfig(), cal[:10]) is None
    True
    """
    n = calibration.size
    if n < MIN_BRIDGE_SCORES:
        return None
    level = max(0.5, min(config.level, 1.0 - MIN_PEAKS / n))
    thin = msgspec.structs.replace(config, level=level, kind="spot")
    tail = Tail.calibrate(thin, calibration)
    return max(float(tail.zq), float(calibration.max()))


class SPOTThreshold:
    """Streaming peaks-over-threshold (SPOT, Siffer et al. 2017) with amortised refits.

    >>> rng = np.random.default_rng(0)
    >>> th = SPOTThreshold(ThresholdConfig(q=1e-3), rng.exponential(size=20_000))
    >>> abs(th.value - 6.9) < 0.5  # the exponential's 1 - 1e-3 quantile is 6.9
    True
    """

    kind: ClassVar[str] = "spot"

    def __init__(self, config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> None:
        cal = check_scores(calibration_scores, "calibration_scores")
        self.config = config
        self._n_seen = cal.size
        self._buffer: _CalibrationBuffer | None = _CalibrationBuffer(cal)
        self._tail: Tail | None = None
        self._absorb(np.zeros(0), np.zeros(0, dtype=np.bool_))
        #: While the buffer fills: the conservative threshold from a thin calibration.
        self._bridge = None if self._buffer is None else bridge_threshold(config, cal)

    # -- what a subclass changes --------------------------------------------------------------

    def _scores_needed(self) -> int:
        """Learned scores (calibration included) before the tail can be calibrated."""
        return min_calibration(self.config)

    def _calibration_sample(self, data: FloatArray) -> FloatArray:
        """What the tail is calibrated on, given every score learned so far: the scores."""
        return data

    def _in_score_units(self, zq: float) -> float:
        """The tail's threshold as a score threshold: itself."""
        return zq

    def _decide(
        self, tail: Tail, x: FloatArray, flags: BoolArray, start: int, verdicts: Verdicts
    ) -> None:
        """Judge ``x[start:]`` (the scores after calibration) into ``verdicts``, learning."""
        thresholds, anomalous, severity = verdicts
        t = tail.t
        if x.size - start <= SMALL_BATCH:
            learn_flags = flags.tolist()
            for j, score in enumerate(x[start:].tolist(), start):
                thresholds[j] = tail.zq
                if score > t:
                    if level := tail.judge(score, learn_flags[j]):
                        anomalous[j], severity[j] = True, level
                elif learn_flags[j]:
                    tail.n += 1
            return
        pos = start
        # z_q >= t always, so only scores above t need the per-score path.
        for j in (np.flatnonzero(x[start:] > t) + start).tolist():
            thresholds[pos:j] = tail.zq
            tail.n += int(np.count_nonzero(flags[pos:j]))
            thresholds[j] = tail.zq
            if level := tail.judge(float(x[j]), bool(flags[j])):
                anomalous[j], severity[j] = True, level
            pos = j + 1
        thresholds[pos:] = tail.zq
        tail.n += int(np.count_nonzero(flags[pos:]))

    def _state(self) -> dict[str, Any]:
        """Snapshot fields beyond SPOT's own: none."""
        return {}

    def _load_state(self, snap: Mapping[str, Any]) -> None:
        """Restore what :meth:`_state` wrote."""

    # -- the shared machinery -----------------------------------------------------------------

    def _absorb(self, x: FloatArray, flags: BoolArray) -> int:
        """Buffer scores until calibration is due, then calibrate; returns scores consumed."""
        if self._buffer is None:
            return 0
        stop, due = self._buffer.take(
            x, flags, self._n_seen, self.config.grace, self._scores_needed()
        )
        self._n_seen += stop
        if due:
            sample = self._calibration_sample(self._buffer.data())
            self._tail = Tail.calibrate(self.config, sample)
            self._buffer = None
        return stop

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """The frozen config shared, numbers as they are, the tail, buffer and (DSPOT) trend
        by their own cheap copies: about a tenth of the generic walk's cost."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name == "config" or value is None or isinstance(value, int | float):
                new.__dict__[name] = value
            else:
                new.__dict__[name] = copy.deepcopy(value, memo)
        return new

    @property
    def value(self) -> float:
        if self._tail is None:
            return math.inf if self._bridge is None else self._bridge
        return self._in_score_units(self._tail.zq)

    @property
    def peaks_stored(self) -> int:
        """Peaks currently held (at most ``max_peaks``)."""
        return 0 if self._tail is None else self._tail.stored

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = check_scores(scores)
        flags = check_learn(learn, x.size)
        verdicts = undecided(x.size)
        bridge = self._bridge if self._buffer is not None else None
        if bridge is not None:
            # Protection: a score over the bridge is judged anomalous and never learned.
            over = x > bridge
            decided = self._n_seen + np.arange(x.size) >= self.config.grace
            start = self._absorb(x, flags & ~over)
            thresholds, anomalous, severity = verdicts
            thresholds[:start] = np.where(decided[:start], bridge, math.inf)
            anomalous[:start] = over[:start] & decided[:start]
            severity[:start] = ratio_verdicts(
                x[:start], thresholds[:start], anomalous[:start], self.config.critical_ratio
            )[2]
            if self._buffer is None:
                self._bridge = None
        else:
            start = self._absorb(x, flags)
        if self._tail is not None and start < x.size:
            self._decide(self._tail, x, flags, start, verdicts)
            self._n_seen += x.size - start
        return verdicts

    def snapshot(self) -> dict[str, Any]:
        return {
            **snapshot_header(self.kind, self.config),
            "n_seen": self._n_seen,
            "buffer": None if self._buffer is None else self._buffer.data().tolist(),
            "tail": None if self._tail is None else self._tail.to_json(),
            "bridge": self._bridge,
            **self._state(),
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> Self:
        config = ThresholdConfig.from_json(snap["config"])
        th = cls.__new__(cls)
        th.config = config
        th._n_seen = as_int(snap["n_seen"], "n_seen")
        buffer = snap["buffer"]
        th._buffer = None if buffer is None else _CalibrationBuffer(as_floats(buffer, "buffer"))
        th._tail = None if snap["tail"] is None else Tail.from_json(config, snap["tail"])
        bridge = snap.get("bridge")  # absent in snapshots made before bridges existed
        th._bridge = None if bridge is None or th._buffer is None else as_float(bridge, "bridge")
        if (th._buffer is None) == (th._tail is None):
            raise ValueError(
                f"a {cls.kind.upper()} snapshot holds either a calibration buffer or a tail"
            )
        th._load_state(snap)
        return th
