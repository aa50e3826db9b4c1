"""Per-asset thresholds adapted online: fixed, streaming quantile, SPOT and DSPOT.

One :class:`Threshold` instance judges the score stream of one asset. ``update(scores,
learn=None)`` takes scores in time order and returns, per score, the threshold in force
*before* that score was learned, whether the score is anomalous, and a severity
(0 normal, 1 warning, 2 critical).

Every adaptive threshold carries two guards (STYLE rule 3):

* **Grace**: no score is anomalous before ``config.grace`` scores have been seen in total,
  counting the calibration scores handed to :func:`make_threshold`. Given at least
  ``grace`` calibration scores (and, for SPOT/DSPOT, enough to fit a tail) there is no grace
  online at all. While no threshold exists yet (too few scores to estimate one) the reported
  threshold is ``+inf``: nothing can exceed it.
* **Protection**: a score judged anomalous is never learned, nor is any score whose
  ``learn`` flag is ``False`` (the caller passes ``learn=False`` while an alert is open, say).

Kinds and why:

* :class:`FixedThreshold` never changes: ``fixed_value``, or the ``1 - q`` quantile of the
  calibration scores. Below ``1/q`` calibration scores that quantile cannot be told apart
  from the largest score, so the largest calibration score is used (the floor; the expected
  false-alarm rate is then about ``1/(n+1)``, above ``q``).
* :class:`QuantileThreshold` is ``margin`` times a streaming P² estimate ``Q`` (Jain &
  Chlamtac, 1985) of the ``quantile`` of learned scores (``Q + (margin - 1)|Q|``, so a
  negative ``Q`` of a signed score is raised too). With protection, a threshold *at* the
  learned quantile spirals down (the learned stream is truncated at the threshold, so its
  quantile is lower, and so on), which is why there is a margin. Its false-alarm rate is
  ``P(score > margin · Q)``, a property of the score distribution, not of ``q`` (exponential
  scores with the defaults, quantile 0.99 and margin 1.5: 1e-3).
* :class:`SPOTThreshold` (Siffer et al., KDD 2017): a generalised Pareto (GPD) tail fitted
  to the excesses ("peaks") over the ``level`` quantile ``t`` of the calibration scores; the
  threshold ``z_q`` is the score a normal score exceeds with probability ``q``. As in the
  paper, ``t`` stays fixed, a score above ``z_q`` is an anomaly, a score in ``(t, z_q]`` a new
  peak, and ``z_q`` moves only when a peak arrives, so scores at or below ``t`` (the common
  case) are judged by one vectorised compare.
  Two departures, both measured: (1) the paper's refit at every peak fits the peaks as a
  complete sample, but protection means no peak above ``z_q`` is ever learned, so the
  sample is truncated, the fitted tail lighter, ``z_q`` lower, the truncation harsher: on
  i.i.d. exponential scores with q = 1e-3 the threshold slid from 6.9 to 5.0 over 400k
  scores and the false-alarm rate reached 7.7 q. Each peak therefore keeps the cap
  ``z_q - t`` it was learned under, and :func:`fit_gpd` maximises the truncated likelihood
  (starting from Grimshaw's untruncated fit); the rate then stays near ``q``. (2) The fit is
  amortised: at every peak while few exist, then once the stored count grew by
  ``refit_growth``, at most every ``refit_every_peaks`` peaks; between fits the last one
  stays in force and ``z_q`` is recomputed from the counts in O(1). The peaks are a ring of
  the latest ``max_peaks`` (and their caps). If the score level drifts above ``t`` every
  score becomes a peak and the cost rises to tens of µs per score: that is drift, which
  :mod:`models.drift` reports and DSPOT absorbs.
* :class:`DSPOTThreshold`: SPOT on the residual of the score from the moving average of the
  last ``depth`` learned scores, so a slowly drifting score level does not raise alarms; the
  threshold is reported in score units (residual threshold + moving average).

``z_q`` is never below ``t``: when ``q * n / N_t >= 1`` the model has no information under
``t``, so ``t`` is used (its exceedance rate ``N_t / n`` is then at most ``q``).

Severity: for SPOT/DSPOT the fitted tail gives ``P(normal score > score)``; an anomalous score
is critical when that probability is at most ``critical_q`` (default ``q / 100``), else a
warning. For fixed/quantile thresholds there is no tail model, so an anomalous score is
critical when ``score - threshold >= (critical_ratio - 1) * |threshold|`` (score at least
twice a positive threshold by default).

Determinism: no randomness anywhere, and the outputs do not depend on how the stream is cut
into batches, so a backtest over a file and the live monitor make the same decisions.
:meth:`Threshold.snapshot` gives a plain, versioned, JSON-able dict and :func:`restore`
rebuilds a threshold that continues the stream bit for bit.

Scores must be finite: a NaN or infinite score raises :class:`ValueError` (it would poison
every estimate; the scorer should never hand one over).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> spot = make_threshold(ThresholdConfig(kind="spot", q=1e-3), rng.exponential(size=5000))
>>> thresholds, anomalous, severity = spot.update(np.array([0.5, 9.0, 40.0]))
>>> anomalous.tolist(), severity.tolist()
([False, True, True], [0, 1, 2])
>>> restored = restore(spot.snapshot())
>>> restored.update(np.array([1.0]))[0].tolist() == spot.update(np.array([1.0]))[0].tolist()
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

SNAPSHOT_VERSION = 1

ThresholdKind = Literal["fixed", "quantile", "spot", "dspot"]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SeverityArray = npt.NDArray[np.int8]
#: What ``Threshold.update`` returns: thresholds (float64), anomalous (bool), severity (int8).
Verdicts = tuple[FloatArray, BoolArray, SeverityArray]

NORMAL = 0
WARNING = 1
CRITICAL = 2

#: Peaks needed before SPOT/DSPOT fit a tail at all: the calibration waits for
#: ``ceil(MIN_PEAKS / (1 - level))`` learned scores (500 at the default level 0.98).
MIN_PEAKS = 10
#: |gamma| under which the generalised Pareto tail is treated as exponential.
_GAMMA_EPS = 1e-9
#: Range of the GPD shape γ searched: below -1 the likelihood is unbounded, above 1 the tail
#: has no mean; neither describes a score stream, and small truncated samples can drift there.
_GAMMA_MIN, _GAMMA_MAX = -1.0, 1.0
#: Smallest GPD scale used, so a constant calibration stream still gives a usable tail.
_MIN_SIGMA = 1e-12
#: Scores handled per vectorised step in DSPOT (results do not depend on it).
_DSPOT_CHUNK = 128
#: Batches up to this many scores take a plain Python loop: numpy's per-call overhead would
#: dominate. Both paths do the same floating-point operations in the same order.
_SMALL_BATCH = 32
#: Points per side of the grid on which Grimshaw's equation is scanned for sign changes.
_GRID_POINTS = 24

_KINDS: tuple[str, ...] = ("fixed", "quantile", "spot", "dspot")


@dataclass(frozen=True)
class ThresholdConfig:
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
    amortisation of the maximum-likelihood tail refit.

    >>> ThresholdConfig(kind="dspot", depth=50).critical_probability
    1e-06
    """

    kind: ThresholdKind = "spot"
    q: float = 1e-4
    level: float = 0.98
    depth: int = 200
    grace: int = 1000
    critical_q: float | None = None
    fixed_value: float | None = None
    quantile: float = 0.99
    margin: float = 1.5
    critical_ratio: float = 2.0
    max_peaks: int = 2000
    refit_every_peaks: int = 128
    refit_growth: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"threshold kind must be one of {', '.join(_KINDS)}; got {self.kind!r}"
            )
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"q (the false-alarm rate) must be in (0, 1); got {self.q}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1); got {self.level}")
        if self.kind in ("spot", "dspot") and self.q >= 1.0 - self.level:
            raise ValueError(
                f"q={self.q} must be below 1 - level = {1.0 - self.level:g}: SPOT extrapolates "
                "the tail beyond the level quantile. Lower q or the level."
            )
        if self.critical_q is not None and not 0.0 < self.critical_q <= self.q:
            raise ValueError(
                f"critical_q must be in (0, q={self.q}]; got {self.critical_q} "
                "(a critical anomaly is rarer than a warning)"
            )
        if self.depth < 1:
            raise ValueError(f"depth (DSPOT moving-average length) must be >= 1; got {self.depth}")
        if self.grace < 0:
            raise ValueError(f"grace must be >= 0 scores; got {self.grace}")
        if self.fixed_value is not None and not math.isfinite(self.fixed_value):
            raise ValueError(f"fixed_value must be a finite number or None; got {self.fixed_value}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile}")
        if not self.margin >= 1.0:
            raise ValueError(
                f"margin must be >= 1 (the threshold sits above the learned quantile); "
                f"got {self.margin}"
            )
        if not self.critical_ratio > 1.0:
            raise ValueError(f"critical_ratio must be > 1; got {self.critical_ratio}")
        if self.max_peaks < MIN_PEAKS:
            raise ValueError(f"max_peaks must be >= {MIN_PEAKS}; got {self.max_peaks}")
        if self.refit_every_peaks < 1:
            raise ValueError(f"refit_every_peaks must be >= 1; got {self.refit_every_peaks}")
        if not self.refit_growth >= 0.0:
            raise ValueError(f"refit_growth must be >= 0; got {self.refit_growth}")

    @property
    def critical_probability(self) -> float:
        """The exceedance probability at or under which an anomaly is critical."""
        return self.q / 100.0 if self.critical_q is None else self.critical_q

    def to_json(self) -> dict[str, Any]:
        """The config as a plain dict (JSON-able)."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ThresholdConfig:
        """Rebuild a config from :meth:`to_json` output; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise ValueError(
                f"unknown threshold config keys {unknown}; known keys are {sorted(names)}"
            )
        return cls(**dict(obj))


@runtime_checkable
class Threshold(Protocol):
    """Decides, per asset, which scores are anomalous; adapts as scores arrive."""

    config: ThresholdConfig

    @property
    def value(self) -> float:
        """The threshold in force for the next score (``+inf`` while none exists)."""
        ...

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        """Judge ``scores`` (time order) and learn the normal ones whose ``learn`` is true."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as a plain, versioned, JSON-able dict."""
        ...


# --------------------------------------------------------------------------- input checks


def _check_scores(scores: npt.ArrayLike, what: str = "scores") -> FloatArray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array (one score per window); got shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{what} must be finite; got {x[bad]} at index {bad}. The scorer produced a "
            "non-finite score: check the window's readings for NaN/inf before scoring."
        )
    return x


def _check_learn(learn: npt.ArrayLike | None, n: int) -> BoolArray:
    if learn is None:
        return np.ones(n, dtype=np.bool_)
    flags = np.asarray(learn, dtype=np.bool_)
    if flags.shape != (n,):
        raise ValueError(f"learn must have one flag per score, shape ({n},); got {flags.shape}")
    return flags


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"snapshot field {name!r} must be a number; got {value!r}")
    return float(value)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"snapshot field {name!r} must be an integer; got {value!r}")
    return value


def _floats(value: Any, name: str) -> FloatArray:
    if not isinstance(value, list):
        raise ValueError(f"snapshot field {name!r} must be a list of numbers")
    return np.asarray([_float(v, name) for v in value], dtype=np.float64)


def _header(kind: str, config: ThresholdConfig) -> dict[str, Any]:
    return {"kind": kind, "v": SNAPSHOT_VERSION, "config": config.to_json()}


def _ratio_severity(
    scores: FloatArray, thresholds: FloatArray, anomalous: BoolArray, critical_ratio: float
) -> SeverityArray:
    severity = np.zeros(scores.shape, dtype=np.int8)
    if not anomalous.any():  # the common case, kept cheap
        return severity
    severity[anomalous] = WARNING
    critical = anomalous & (scores - thresholds >= (critical_ratio - 1.0) * np.abs(thresholds))
    severity[critical] = CRITICAL
    return severity


# --------------------------------------------------------------------------------- fixed


class FixedThreshold:
    """A threshold that never changes (only the grace period applies).

    >>> th = FixedThreshold(ThresholdConfig(kind="fixed", grace=0), 4.0)
    >>> _, anomalous, severity = th.update([1.0, 5.0, 9.0])
    >>> anomalous.tolist(), severity.tolist()
    ([False, True, True], [0, 1, 2])
    """

    kind: ClassVar[str] = "fixed"

    def __init__(self, config: ThresholdConfig, value: float, *, n_seen: int = 0) -> None:
        if not math.isfinite(value):
            raise ValueError(f"a fixed threshold must be finite; got {value}")
        self.config = config
        self._value = float(value)
        self._n_seen = n_seen

    @classmethod
    def from_calibration(
        cls, config: ThresholdConfig, calibration_scores: npt.ArrayLike
    ) -> FixedThreshold:
        """``config.fixed_value``, else the ``1 - q`` quantile of the calibration scores."""
        cal = _check_scores(calibration_scores, "calibration_scores")
        if config.fixed_value is not None:
            return cls(config, config.fixed_value, n_seen=cal.size)
        if cal.size == 0:
            raise ValueError(
                "a fixed threshold needs fixed_value or calibration scores; got neither. "
                "Set fixed_value in the threshold config or score some normal history first."
            )
        if cal.size * config.q < 1.0:
            value = float(cal.max())
        else:
            value = float(np.quantile(cal, 1.0 - config.q))
        return cls(config, value, n_seen=cal.size)

    @property
    def value(self) -> float:
        return self._value

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = _check_scores(scores)
        _check_learn(learn, x.size)
        thresholds = np.full(x.size, self._value, dtype=np.float64)
        anomalous = x > self._value
        undecided = min(x.size, max(0, self.config.grace - self._n_seen))
        anomalous[:undecided] = False
        self._n_seen += x.size
        return (
            thresholds,
            anomalous,
            _ratio_severity(x, thresholds, anomalous, self.config.critical_ratio),
        )

    def snapshot(self) -> dict[str, Any]:
        return {**_header(self.kind, self.config), "value": self._value, "n_seen": self._n_seen}

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> FixedThreshold:
        config = ThresholdConfig.from_json(snap["config"])
        return cls(config, _float(snap["value"], "value"), n_seen=_int(snap["n_seen"], "n_seen"))


# ----------------------------------------------------------------------- streaming quantile


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
        est = cls(_float(obj["p"], "p"))
        est.heights = [_float(v, "heights") for v in obj["heights"]]
        est.positions = [_int(v, "positions") for v in obj["positions"]]
        est.desired = [_float(v, "desired") for v in obj["desired"]]
        est.count = _int(obj["count"], "count")
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
        cal = _check_scores(calibration_scores, "calibration_scores")
        self.config = config
        self._estimator = P2Quantile.from_sample(config.quantile, cal)
        self._n_seen = cal.size

    @property
    def value(self) -> float:
        estimate = self._estimator.get()
        return math.inf if estimate is None else _with_margin(estimate, self.config.margin)

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = _check_scores(scores)
        flags = _check_learn(learn, x.size)
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
        return (
            thresholds,
            anomalous,
            _ratio_severity(x, thresholds, anomalous, self.config.critical_ratio),
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            **_header(self.kind, self.config),
            "n_seen": self._n_seen,
            "estimator": self._estimator.to_json(),
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> QuantileThreshold:
        th = cls(ThresholdConfig.from_json(snap["config"]))
        th._n_seen = _int(snap["n_seen"], "n_seen")
        th._estimator = P2Quantile.from_json(snap["estimator"])
        return th


# ------------------------------------------------------------------- generalised Pareto tail


def _gpd_loglik(y: FloatArray, gamma: float, sigma: float) -> float:
    if not (sigma > 0.0 and math.isfinite(sigma) and _GAMMA_MIN <= gamma <= _GAMMA_MAX):
        return -math.inf
    if abs(gamma) < _GAMMA_EPS:
        return -y.size * math.log(sigma) - float(y.sum()) / sigma
    z = 1.0 + gamma * y / sigma
    if not bool(np.all(z > 0.0)):
        return -math.inf
    return -y.size * math.log(sigma) - (1.0 + 1.0 / gamma) * float(np.log(z).sum())


def _grimshaw_w(y: FloatArray, thetas: FloatArray) -> FloatArray:
    """Grimshaw's function w(θ) = (1 + mean log(1+θy)) · mean 1/(1+θy) − 1 per θ."""
    s = 1.0 + np.outer(thetas, y)
    u = 1.0 + np.log(s).mean(axis=1)
    v = (1.0 / s).mean(axis=1)
    out: FloatArray = u * v - 1.0
    return out


def _refine_root(y: FloatArray, lo: float, hi: float, w_lo: float, w_hi: float) -> float:
    """A root of w in [lo, hi] (w changes sign there) by regula falsi, Illinois variant."""
    for _ in range(100):
        mid = hi - w_hi * (hi - lo) / (w_hi - w_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        w_mid = float(_grimshaw_w(y, np.array([mid]))[0])
        if w_mid == 0.0 or abs(hi - lo) <= 1e-9 * max(abs(lo), abs(hi)):
            return mid
        if (w_mid > 0.0) == (w_hi > 0.0):
            hi, w_hi = mid, w_mid
            w_lo *= 0.5
        else:
            lo, w_lo = mid, w_mid
            w_hi *= 0.5
    return 0.5 * (lo + hi)


def _grimshaw_roots(y: FloatArray) -> list[float]:
    """Non-zero roots of Grimshaw's equation: θ = γ/σ of the likelihood's stationary points.

    The roots lie in (−1/max, 0) and (0, 2(mean − min)/min²) (Grimshaw 1993). Each side is
    scanned on a geometric grid (roots cluster near 0 for near-exponential tails; below
    |θ|·max = 1e-4 the exponential candidate covers them) and each sign change refined.
    """
    y_max, y_min, y_mean = float(y.max()), float(y.min()), float(y.mean())
    unit = np.geomspace(1e-4, 0.5, _GRID_POINTS // 2)
    # |θ|·max from 1e-4 up to 1 - 1e-4, dense near both ends, as an increasing θ grid.
    fractions = np.concatenate((unit, 1.0 - unit[::-1][1:]))
    grids = [(-fractions / y_max)[::-1]]
    upper = 2.0 * (y_mean - y_min) / (y_min * y_min)
    lower = 1e-4 / y_max
    if math.isfinite(upper) and upper > lower:
        grids.append(np.geomspace(lower, upper, _GRID_POINTS))
    roots: list[float] = []
    for grid in grids:
        values = _grimshaw_w(y, grid)
        sign_change = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0.0)
        for k in sign_change.tolist():
            roots.append(
                _refine_root(
                    y,
                    float(grid[k]),
                    float(grid[k + 1]),
                    float(values[k]),
                    float(values[k + 1]),
                )
            )
        roots.extend(float(grid[k]) for k in np.flatnonzero(values == 0.0).tolist())
    return roots


def _gpd_survival(gamma: float, sigma: float, excess: float) -> float:
    """P(Y > excess) for a GPD(γ, σ) excess Y."""
    if abs(gamma) < _GAMMA_EPS:
        return math.exp(-excess / sigma)
    z = 1.0 + gamma * excess / sigma
    return 0.0 if z <= 0.0 else float(z ** (-1.0 / gamma))


def _log_kept(caps: FloatArray, gamma: float, sigma: float) -> float:
    """Σ log P(Y <= cap): the chance each capped peak had of being kept at all."""
    if abs(gamma) < _GAMMA_EPS:
        below = -np.expm1(-caps / sigma)
    else:
        z = np.maximum(1.0 + gamma * caps / sigma, 0.0)
        with np.errstate(divide="ignore"):
            below = 1.0 - np.power(z, -1.0 / gamma)
    if not bool(np.all(below > 0.0)):
        return -math.inf
    return float(np.log(below).sum())


def _nelder_mead(
    objective: Callable[[float, float], float],
    start: tuple[float, float],
    steps: tuple[float, float],
) -> tuple[float, float]:
    """Minimise a function of two variables by Nelder–Mead; deterministic, no dependencies."""
    simplex = [start, (start[0] + steps[0], start[1]), (start[0], start[1] + steps[1])]
    values = [objective(*p) for p in simplex]
    for _ in range(200):
        order = sorted(range(3), key=lambda i: values[i])
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[2] - values[0]) <= 1e-9 * (abs(values[0]) + 1.0):
            break
        best, middle, worst = simplex
        cx, cy = 0.5 * (best[0] + middle[0]), 0.5 * (best[1] + middle[1])
        reflected = (2.0 * cx - worst[0], 2.0 * cy - worst[1])
        f_reflected = objective(*reflected)
        if f_reflected < values[0]:
            expanded = (3.0 * cx - 2.0 * worst[0], 3.0 * cy - 2.0 * worst[1])
            f_expanded = objective(*expanded)
            if f_expanded < f_reflected:
                simplex[2], values[2] = expanded, f_expanded
            else:
                simplex[2], values[2] = reflected, f_reflected
        elif f_reflected < values[1]:
            simplex[2], values[2] = reflected, f_reflected
        else:
            contracted = (0.5 * (cx + worst[0]), 0.5 * (cy + worst[1]))
            f_contracted = objective(*contracted)
            if f_contracted < values[2]:
                simplex[2], values[2] = contracted, f_contracted
            else:
                for i in (1, 2):
                    p = simplex[i]
                    simplex[i] = (0.5 * (best[0] + p[0]), 0.5 * (best[1] + p[1]))
                    values[i] = objective(*simplex[i])
    i = min(range(3), key=lambda k: values[k])
    return simplex[i]


def fit_gpd(excesses: npt.ArrayLike, caps: npt.ArrayLike | None = None) -> tuple[float, float]:
    """Fit a generalised Pareto distribution to positive excesses; returns (γ, σ).

    The candidates are the exponential fit (γ = 0), the method-of-moments fit and every
    root of Grimshaw's maximum-likelihood equation; the one with the highest likelihood wins,
    so the moments and exponential fits are the fallback when the likelihood has no interior
    maximum. Deterministic: same excesses in the same order, same result.

    ``caps`` (one per excess, ``inf`` for none) says that an excess was only kept because it
    was at most its cap: SPOT never learns a score over its threshold, so the peaks it keeps
    are a truncated sample, and fitting them as complete makes the tail lighter at every
    refit, the threshold lower, the truncation harsher: a downward spiral. With finite caps
    the untruncated fit is the start of a Nelder–Mead search on the truncated likelihood.

    >>> rng = np.random.default_rng(1)
    >>> gamma, sigma = fit_gpd(rng.exponential(2.0, size=4000))
    >>> abs(gamma) < 0.05, round(sigma, 1)
    (True, 2.0)
    """
    y = np.asarray(excesses, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"need a non-empty 1-D array of excesses; got shape {y.shape}")
    if not bool(np.all(np.isfinite(y) & (y > 0.0))):
        raise ValueError("excesses over the tail threshold must be finite and positive")
    mean = float(y.mean())
    exponential = (0.0, max(mean, _MIN_SIGMA))
    y_range = float(y.max() - y.min())
    if y.size < 3 or y_range <= 1e-12 * mean:
        return exponential
    best, best_ll = exponential, _gpd_loglik(y, *exponential)
    var = float(y.var())
    candidates: list[tuple[float, float]] = []
    if var > 0.0:
        ratio = mean * mean / var
        candidates.append((0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)))
    for theta in _grimshaw_roots(y):
        gamma = float(np.log1p(theta * y).mean())
        if theta != 0.0 and abs(gamma) >= _GAMMA_EPS:
            candidates.append((gamma, gamma / theta))
    for gamma, sigma in candidates:
        ll = _gpd_loglik(y, gamma, sigma)
        if ll > best_ll:
            best, best_ll = (gamma, sigma), ll
    if caps is None:
        return best
    cap = np.asarray(caps, dtype=np.float64)
    if cap.shape != y.shape:
        raise ValueError(f"need one cap per excess; got {cap.shape} for {y.shape}")
    finite = np.isfinite(cap)
    if not finite.any():
        return best
    cap = cap[finite]

    def objective(gamma: float, log_sigma: float) -> float:
        if not -700.0 < log_sigma < 700.0:
            return math.inf
        sigma = math.exp(log_sigma)
        ll = _gpd_loglik(y, gamma, sigma) - _log_kept(cap, gamma, sigma)
        return -ll if math.isfinite(ll) else math.inf

    gamma, log_sigma = _nelder_mead(objective, (best[0], math.log(best[1])), (0.05, 0.05))
    if objective(gamma, log_sigma) < objective(best[0], math.log(best[1])):
        return gamma, math.exp(log_sigma)
    return best


def _excess_quantile(gamma: float, sigma: float, ratio: float) -> float:
    """The excess over t exceeded with conditional probability ``ratio`` (0 if ratio >= 1)."""
    if ratio >= 1.0:
        return 0.0
    if abs(gamma) < _GAMMA_EPS:
        return -sigma * math.log(ratio)
    return sigma / gamma * (math.pow(ratio, -gamma) - 1.0)


class _Tail:
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

    @classmethod
    def calibrate(cls, config: ThresholdConfig, data: FloatArray) -> _Tail:
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
            tail.gamma, tail.sigma = 0.0, max(spread, _MIN_SIGMA * max(1.0, abs(tail.t)))
        tail._update_zq()
        return tail

    def _fit(self) -> None:
        self.gamma, self.sigma = fit_gpd(self.peaks[: self.stored], self.caps[: self.stored])
        self.fit_size = self.stored
        self.since_fit = 0

    def _update_zq(self) -> None:
        ratio = self.q * self.n / self.n_peaks if self.n_peaks else math.inf
        self.zq = self.t + _excess_quantile(self.gamma, self.sigma, ratio)

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

    def severity(self, excess: float) -> int:
        """Warning or critical for an anomalous excess, from the fitted tail probability."""
        if self.n_peaks == 0 or self.n == 0:
            return CRITICAL
        probability = self.n_peaks / self.n * _gpd_survival(self.gamma, self.sigma, excess)
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
        }

    @classmethod
    def from_json(cls, config: ThresholdConfig, obj: Mapping[str, Any]) -> _Tail:
        tail = cls(config, _float(obj["t"], "t"))
        peaks = _floats(obj["peaks"], "peaks")
        if peaks.size > config.max_peaks:
            raise ValueError(
                f"snapshot holds {peaks.size} peaks but max_peaks is {config.max_peaks}"
            )
        tail.peaks[: peaks.size] = peaks
        caps = obj["caps"]
        if not isinstance(caps, list) or len(caps) != peaks.size:
            raise ValueError("snapshot field 'caps' must be a list with one entry per peak")
        tail.caps[: peaks.size] = [math.inf if c is None else _float(c, "caps") for c in caps]
        tail.stored = peaks.size
        tail.head = _int(obj["head"], "head")
        tail.n = _int(obj["n"], "n")
        tail.n_peaks = _int(obj["n_peaks"], "n_peaks")
        tail.gamma = _float(obj["gamma"], "gamma")
        tail.sigma = _float(obj["sigma"], "sigma")
        tail.zq = _float(obj["zq"], "zq")
        tail.fit_size = _int(obj["fit_size"], "fit_size")
        tail.since_fit = _int(obj["since_fit"], "since_fit")
        return tail


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

    def data(self) -> FloatArray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(self.chunks)


def _min_calibration(config: ThresholdConfig) -> int:
    return math.ceil(MIN_PEAKS / (1.0 - config.level))


class SPOTThreshold:
    """Streaming peaks-over-threshold (SPOT, Siffer et al. 2017) with amortised refits.

    >>> rng = np.random.default_rng(0)
    >>> th = SPOTThreshold(ThresholdConfig(q=1e-3), rng.exponential(size=20_000))
    >>> abs(th.value - 6.9) < 0.5  # the exponential's 1 - 1e-3 quantile is 6.9
    True
    """

    kind: ClassVar[str] = "spot"

    def __init__(self, config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> None:
        cal = _check_scores(calibration_scores, "calibration_scores")
        self.config = config
        self._n_seen = cal.size
        self._buffer: _CalibrationBuffer | None = _CalibrationBuffer(cal)
        self._tail: _Tail | None = None
        self._absorb(np.zeros(0), np.zeros(0, dtype=np.bool_))

    def _absorb(self, x: FloatArray, flags: BoolArray) -> int:
        """Buffer scores until calibration is due, then calibrate; returns scores consumed."""
        if self._buffer is None:
            return 0
        stop, due = self._buffer.take(
            x, flags, self._n_seen, self.config.grace, _min_calibration(self.config)
        )
        self._n_seen += stop
        if due:
            self._tail = _Tail.calibrate(self.config, self._buffer.data())
            self._buffer = None
        return stop

    @property
    def value(self) -> float:
        return math.inf if self._tail is None else self._tail.zq

    @property
    def peaks_stored(self) -> int:
        """Peaks currently held (at most ``max_peaks``)."""
        return 0 if self._tail is None else self._tail.stored

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = _check_scores(scores)
        flags = _check_learn(learn, x.size)
        thresholds = np.full(x.size, math.inf, dtype=np.float64)
        anomalous = np.zeros(x.size, dtype=np.bool_)
        severity = np.zeros(x.size, dtype=np.int8)
        start = self._absorb(x, flags)
        tail = self._tail
        if tail is None or start == x.size:
            return thresholds, anomalous, severity
        t = tail.t
        if x.size - start <= _SMALL_BATCH:
            learn_flags = flags.tolist()
            for j, score in enumerate(x[start:].tolist(), start):
                thresholds[j] = tail.zq
                if score > t:
                    if score > tail.zq:
                        anomalous[j] = True
                        severity[j] = tail.severity(score - t)
                    elif learn_flags[j]:
                        tail.add_peak(score - t)
                elif learn_flags[j]:
                    tail.n += 1
            self._n_seen += x.size - start
            return thresholds, anomalous, severity
        pos = start
        # z_q >= t always, so only scores above t need the per-score path.
        for j in (np.flatnonzero(x[start:] > t) + start).tolist():
            thresholds[pos:j] = tail.zq
            tail.n += int(np.count_nonzero(flags[pos:j]))
            score = float(x[j])
            thresholds[j] = tail.zq
            if score > tail.zq:
                anomalous[j] = True
                severity[j] = tail.severity(score - t)
            elif flags[j]:
                tail.add_peak(score - t)
            pos = j + 1
        thresholds[pos:] = tail.zq
        tail.n += int(np.count_nonzero(flags[pos:]))
        self._n_seen += x.size - start
        return thresholds, anomalous, severity

    def snapshot(self) -> dict[str, Any]:
        return {
            **_header(self.kind, self.config),
            "n_seen": self._n_seen,
            "buffer": None if self._buffer is None else self._buffer.data().tolist(),
            "tail": None if self._tail is None else self._tail.to_json(),
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> SPOTThreshold:
        config = ThresholdConfig.from_json(snap["config"])
        th = cls.__new__(cls)
        th.config = config
        th._n_seen = _int(snap["n_seen"], "n_seen")
        buffer = snap["buffer"]
        th._buffer = None if buffer is None else _CalibrationBuffer(_floats(buffer, "buffer"))
        th._tail = None if snap["tail"] is None else _Tail.from_json(config, snap["tail"])
        if (th._buffer is None) == (th._tail is None):
            raise ValueError("a SPOT snapshot holds either a calibration buffer or a tail")
        return th


class DSPOTThreshold:
    """SPOT on the residual from the moving average of the last ``depth`` learned scores.

    A slowly drifting score level moves the moving average with it, so the threshold follows;
    anomalies are not learned, so they do not drag the average along.

    >>> ramp = np.arange(3000) * 0.01 + np.random.default_rng(0).exponential(size=3000)
    >>> th = DSPOTThreshold(ThresholdConfig(kind="dspot", q=1e-3, depth=50), ramp)
    >>> th.value > 30.0  # in score units: the moving average (~30) plus the residual tail
    True
    """

    kind: ClassVar[str] = "dspot"

    def __init__(self, config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> None:
        cal = _check_scores(calibration_scores, "calibration_scores")
        self.config = config
        self._depth = config.depth
        self._n_seen = cal.size
        self._buffer: _CalibrationBuffer | None = _CalibrationBuffer(cal)
        self._tail: _Tail | None = None
        self._ring = np.zeros(config.depth, dtype=np.float64)
        self._head = 0  # oldest value of the moving-average window
        self._sum = 0.0
        self._absorb(np.zeros(0), np.zeros(0, dtype=np.bool_))

    def _absorb(self, x: FloatArray, flags: BoolArray) -> int:
        if self._buffer is None:
            return 0
        needed = self._depth + _min_calibration(self.config)
        stop, due = self._buffer.take(x, flags, self._n_seen, self.config.grace, needed)
        self._n_seen += stop
        if due:
            data = self._buffer.data()
            depth = self._depth
            sums = np.concatenate(([0.0], np.cumsum(data)))
            means = (sums[depth:-1] - sums[: data.size - depth]) / depth
            self._tail = _Tail.calibrate(self.config, data[depth:] - means)
            self._ring = data[-depth:].copy()
            self._head = 0
            self._sum = math.fsum(self._ring.tolist())
            self._buffer = None
        return stop

    @property
    def value(self) -> float:
        return math.inf if self._tail is None else self._tail.zq + self._sum / self._depth

    @property
    def peaks_stored(self) -> int:
        """Peaks currently held (at most ``max_peaks``)."""
        return 0 if self._tail is None else self._tail.stored

    def _push(self, values: FloatArray) -> None:
        """Append learned values to the moving-average ring (oldest overwritten)."""
        k = values.size
        if k == 0:
            return
        depth = self._depth
        slots = (self._head + np.arange(k)) % depth
        if k > depth:
            slots, values = slots[-depth:], values[-depth:]
        self._ring[slots] = values
        self._head = (self._head + k) % depth

    def update(self, scores: npt.ArrayLike, learn: npt.ArrayLike | None = None) -> Verdicts:
        x = _check_scores(scores)
        flags = _check_learn(learn, x.size)
        n = x.size
        thresholds = np.full(n, math.inf, dtype=np.float64)
        anomalous = np.zeros(n, dtype=np.bool_)
        severity = np.zeros(n, dtype=np.int8)
        pos = self._absorb(x, flags)
        tail = self._tail
        if tail is None:
            return thresholds, anomalous, severity
        self._n_seen += n - pos
        depth = self._depth
        t = tail.t
        if n - pos <= _SMALL_BATCH:
            self._update_small(x, flags, pos, thresholds, anomalous, severity)
            return thresholds, anomalous, severity
        while pos < n:
            end = min(n, pos + _DSPOT_CHUNK)
            chunk, chunk_flags = x[pos:end], flags[pos:end]
            learned = chunk[chunk_flags]
            ordered = np.concatenate((self._ring[self._head :], self._ring[: self._head]))
            extended = np.concatenate((ordered, learned))
            # Running sum after each learned value: s_k = s_{k-1} + (new_k - old_k), the same
            # sequential additions whatever the batch boundaries (cumsum is sequential).
            sums = np.cumsum(np.concatenate(([self._sum], extended[depth:] - extended[:-depth])))
            learned_before: npt.NDArray[np.intp] = (
                np.cumsum(chunk_flags, dtype=np.intp) - chunk_flags
            )
            means = sums[learned_before] / depth
            residuals = chunk - means
            above = np.flatnonzero(residuals > t)
            stop = int(above[0]) if above.size else chunk.size
            thresholds[pos : pos + stop] = tail.zq + means[:stop]
            k = int(learned_before[stop]) if stop < chunk.size else learned.size
            self._push(learned[:k])
            self._sum = float(sums[k])
            tail.n += k
            if stop == chunk.size:
                pos = end
                continue
            j = pos + stop
            residual = float(residuals[stop])
            thresholds[j] = tail.zq + float(means[stop])
            if residual > tail.zq:
                anomalous[j] = True
                severity[j] = tail.severity(residual - t)
            elif flags[j]:
                tail.add_peak(residual - t)
                self._push(x[j : j + 1])
                # Peaks are rare: re-sum the window exactly so rounding never accumulates.
                self._sum = math.fsum(self._ring.tolist())
            pos = j + 1
        return thresholds, anomalous, severity

    def _update_small(
        self,
        x: FloatArray,
        flags: BoolArray,
        start: int,
        thresholds: FloatArray,
        anomalous: BoolArray,
        severity: SeverityArray,
    ) -> None:
        """The per-score form of ``update``'s vectorised loop, for short batches."""
        tail = self._tail
        if tail is None:
            return
        depth, t, ring = self._depth, tail.t, self._ring
        learn_flags = flags.tolist()
        for j, score in enumerate(x[start:].tolist(), start):
            mean = self._sum / depth
            residual = score - mean
            thresholds[j] = tail.zq + mean
            if residual > t:
                if residual > tail.zq:
                    anomalous[j] = True
                    severity[j] = tail.severity(residual - t)
                elif learn_flags[j]:
                    tail.add_peak(residual - t)
                    self._push(x[j : j + 1])
                    self._sum = math.fsum(ring.tolist())
            elif learn_flags[j]:
                self._sum = self._sum + (score - float(ring[self._head]))
                ring[self._head] = score
                self._head = (self._head + 1) % depth
                tail.n += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            **_header(self.kind, self.config),
            "n_seen": self._n_seen,
            "buffer": None if self._buffer is None else self._buffer.data().tolist(),
            "tail": None if self._tail is None else self._tail.to_json(),
            "ring": self._ring.tolist(),
            "head": self._head,
            "sum": self._sum,
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> DSPOTThreshold:
        config = ThresholdConfig.from_json(snap["config"])
        th = cls.__new__(cls)
        th.config = config
        th._depth = config.depth
        th._n_seen = _int(snap["n_seen"], "n_seen")
        buffer = snap["buffer"]
        th._buffer = None if buffer is None else _CalibrationBuffer(_floats(buffer, "buffer"))
        th._tail = None if snap["tail"] is None else _Tail.from_json(config, snap["tail"])
        if (th._buffer is None) == (th._tail is None):
            raise ValueError("a DSPOT snapshot holds either a calibration buffer or a tail")
        th._ring = _floats(snap["ring"], "ring")
        if th._ring.size != config.depth:
            raise ValueError(
                f"DSPOT snapshot ring has {th._ring.size} values but depth is {config.depth}"
            )
        th._head = _int(snap["head"], "head")
        th._sum = _float(snap["sum"], "sum")
        return th


# ------------------------------------------------------------------------------- factories


def make_threshold(config: ThresholdConfig, calibration_scores: npt.ArrayLike = ()) -> Threshold:
    """Build the threshold ``config.kind`` names, calibrated on normal ``calibration_scores``.

    The calibration scores count towards the grace period; give at least ``config.grace`` of
    them (and, for SPOT, ``ceil(10 / (1 - level))``; DSPOT ``depth`` more) to decide at once.
    """
    if config.kind == "fixed":
        return FixedThreshold.from_calibration(config, calibration_scores)
    if config.kind == "quantile":
        return QuantileThreshold(config, calibration_scores)
    if config.kind == "spot":
        return SPOTThreshold(config, calibration_scores)
    return DSPOTThreshold(config, calibration_scores)


def restore(snapshot: Mapping[str, Any]) -> Threshold:
    """Rebuild a threshold from :meth:`Threshold.snapshot` output (dispatches on ``kind``)."""
    kind = snapshot.get("kind")
    version = snapshot.get("v")
    if version != SNAPSHOT_VERSION:
        raise ValueError(
            f"threshold snapshot version {version!r} is not readable by this build "
            f"(it reads v{SNAPSHOT_VERSION}); recalibrate the asset with make_threshold"
        )
    if kind == "fixed":
        return FixedThreshold.from_snapshot(snapshot)
    if kind == "quantile":
        return QuantileThreshold.from_snapshot(snapshot)
    if kind == "spot":
        return SPOTThreshold.from_snapshot(snapshot)
    if kind == "dspot":
        return DSPOTThreshold.from_snapshot(snapshot)
    raise ValueError(f"unknown threshold snapshot kind {kind!r}; expected one of {_KINDS}")
