"""DSPOT: SPOT applied to the score minus a moving average of the learned scores.

A :class:`MovingAverage` of the last ``depth`` learned scores is the trend; SPOT's machinery
(calibration buffer, tail, snapshot: :class:`~models.thresholds.spot.SPOTThreshold`) runs
on the residual ``score - trend``. So a slowly drifting score level moves the trend with it
and the threshold follows; anomalies are not learned, so they do not drag the trend along.
The threshold is reported in score units (tail threshold + trend).

The trend's sum is carried from one learned score to the next by one addition and one
subtraction (``s_k = s_{k-1} + (new_k - old_k)``), the same sequence of operations whether
the scores come one at a time or as a batch, and re-summed exactly (``math.fsum``) at every
learned peak (rare), so rounding never accumulates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from models.thresholds.base import (
    BoolArray,
    FloatArray,
    Verdicts,
    as_float,
    as_floats,
    as_int,
)
from models.thresholds.config import ThresholdConfig
from models.thresholds.spot import SMALL_BATCH, SPOTThreshold, min_calibration
from models.thresholds.tail import Tail

#: Scores handled per vectorised step (results do not depend on it).
_CHUNK = 128


class MovingAverage:
    """The mean of the last ``depth`` learned scores: a ring of them and their running sum.

    >>> trend = MovingAverage(3)
    >>> trend.calibrate(np.array([1.0, 2.0, 3.0, 5.0])).tolist()  # 5 - mean(1, 2, 3)
    [3.0]
    >>> trend.learn(7.0)
    >>> trend.mean  # mean(3, 5, 7)
    5.0
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.ring = np.zeros(depth, dtype=np.float64)
        self.head = 0  # the oldest value of the window
        self.sum = 0.0

    @property
    def mean(self) -> float:
        return self.sum / self.depth

    def calibrate(self, data: FloatArray) -> FloatArray:
        """Residuals of ``data[depth:]`` from the mean of the ``depth`` values before each;
        the window then holds the last ``depth`` values of ``data``."""
        depth = self.depth
        sums = np.concatenate(([0.0], np.cumsum(data)))
        means = (sums[depth:-1] - sums[: data.size - depth]) / depth
        self.ring = data[-depth:].copy()
        self.head = 0
        self.sum = math.fsum(self.ring.tolist())
        residuals: FloatArray = data[depth:] - means
        return residuals

    def running_sums(self, learned: FloatArray) -> FloatArray:
        """The window's sum before and after each of ``learned`` enters it (size + 1)."""
        depth = self.depth
        ordered = np.concatenate((self.ring[self.head :], self.ring[: self.head]))
        extended = np.concatenate((ordered, learned))
        # cumsum is sequential: the same additions as learn() one value at a time.
        sums: FloatArray = np.cumsum(
            np.concatenate(([self.sum], extended[depth:] - extended[:-depth]))
        )
        return sums

    def advance(self, learned: FloatArray, new_sum: float) -> None:
        """Let ``learned`` enter the window, whose sum :meth:`running_sums` gave as ``new_sum``."""
        self._push(learned)
        self.sum = new_sum

    def learn(self, value: float) -> None:
        """One learned value enters the window (the oldest leaves)."""
        self.sum = self.sum + (value - float(self.ring[self.head]))
        self.ring[self.head] = value
        self.head = (self.head + 1) % self.depth

    def learn_peak(self, value: float) -> None:
        """One learned peak enters the window; peaks are rare, so the sum is re-taken exactly."""
        self._push(np.array([value], dtype=np.float64))
        self.sum = math.fsum(self.ring.tolist())

    def _push(self, values: FloatArray) -> None:
        k = values.size
        if k == 0:
            return
        depth = self.depth
        slots = (self.head + np.arange(k)) % depth
        if k > depth:
            slots, values = slots[-depth:], values[-depth:]
        self.ring[slots] = values
        self.head = (self.head + k) % depth

    def __deepcopy__(self, memo: dict[int, Any]) -> MovingAverage:
        new = object.__new__(MovingAverage)
        new.__dict__.update(self.__dict__)
        new.ring = self.ring.copy()
        memo[id(self)] = new
        return new

    def to_json(self) -> dict[str, Any]:
        return {"ring": self.ring.tolist(), "head": self.head, "sum": self.sum}

    @classmethod
    def from_json(cls, depth: int, obj: Mapping[str, Any]) -> MovingAverage:
        trend = cls(depth)
        trend.ring = as_floats(obj["ring"], "ring")
        if trend.ring.size != depth:
            raise ValueError(
                f"DSPOT snapshot ring has {trend.ring.size} values but depth is {depth}"
            )
        trend.head = as_int(obj["head"], "head")
        trend.sum = as_float(obj["sum"], "sum")
        return trend


class DSPOTThreshold(SPOTThreshold):
    """SPOT on the residual from the moving average of the last ``depth`` learned scores.

    >>> ramp = np.arange(3000) * 0.01 + np.random.default_rng(0).exponential(size=3000)
    >>> th = DSPOTThreshold(ThresholdConfig(kind="dspot", q=1e-3, depth=50), ramp)
    >>> th.value > 30.0  # in score units: the moving average (~30) plus the residual tail
    True
    """

    kind: ClassVar[str] = "dspot"

    def __init__(self, config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> None:
        self._trend = MovingAverage(config.depth)
        super().__init__(config, calibration_scores)

    def _scores_needed(self) -> int:
        # The first `depth` scores only start the moving average; SPOT's need comes after.
        return self.config.depth + min_calibration(self.config)

    def _calibration_sample(self, data: FloatArray) -> FloatArray:
        return self._trend.calibrate(data)

    def _in_score_units(self, zq: float) -> float:
        return zq + self._trend.mean

    def _state(self) -> dict[str, Any]:
        return self._trend.to_json()

    def _load_state(self, snap: Mapping[str, Any]) -> None:
        self._trend = MovingAverage.from_json(self.config.depth, snap)

    def _decide(
        self, tail: Tail, x: FloatArray, flags: BoolArray, start: int, verdicts: Verdicts
    ) -> None:
        if x.size - start <= SMALL_BATCH:
            self._decide_one_by_one(tail, x, flags, start, verdicts)
            return
        thresholds, anomalous, severity = verdicts
        trend, t, pos = self._trend, tail.t, start
        # Chunk by chunk: the residuals up to the first one above t are final (the trend
        # moves only by learned scores below t there); that one is judged alone.
        while pos < x.size:
            end = min(x.size, pos + _CHUNK)
            chunk, chunk_flags = x[pos:end], flags[pos:end]
            learned = chunk[chunk_flags]
            sums = trend.running_sums(learned)
            learned_before: npt.NDArray[np.intp] = (
                np.cumsum(chunk_flags, dtype=np.intp) - chunk_flags
            )
            means = sums[learned_before] / trend.depth
            residuals = chunk - means
            above = np.flatnonzero(residuals > t)
            stop = int(above[0]) if above.size else chunk.size
            thresholds[pos : pos + stop] = tail.zq + means[:stop]
            k = int(learned_before[stop]) if stop < chunk.size else learned.size
            trend.advance(learned[:k], float(sums[k]))
            tail.n += k
            if stop == chunk.size:
                pos = end
                continue
            j = pos + stop
            thresholds[j] = tail.zq + float(means[stop])
            if level := tail.judge(float(residuals[stop]), bool(flags[j])):
                anomalous[j], severity[j] = True, level
            elif flags[j]:
                trend.learn_peak(float(x[j]))
            pos = j + 1

    def _decide_one_by_one(
        self, tail: Tail, x: FloatArray, flags: BoolArray, start: int, verdicts: Verdicts
    ) -> None:
        """The per-score form of :meth:`_decide`, for short batches (same operations)."""
        thresholds, anomalous, severity = verdicts
        trend, t, depth = self._trend, tail.t, self._trend.depth
        learn_flags = flags.tolist()
        for j, score in enumerate(x[start:].tolist(), start):
            mean = trend.sum / depth  # MovingAverage.mean, without a property call per score
            residual = score - mean
            thresholds[j] = tail.zq + mean
            if residual > t:
                if level := tail.judge(residual, learn_flags[j]):
                    anomalous[j], severity[j] = True, level
                elif learn_flags[j]:
                    trend.learn_peak(score)
            elif learn_flags[j]:
                trend.learn(score)
                tail.n += 1
