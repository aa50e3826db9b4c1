"""Per-asset drift detection on the score stream and on each input signal's mean.

:class:`DriftMonitor` runs one two-sided Page-Hinkley test (:class:`PageHinkley`) on the
asset's scores and one on each signal's per-window mean (normalised, as the scorer sees it).
A detection becomes a :class:`DriftEvent`.

**Drift or anomaly?** A sustained shift in the inputs while the score stays under its
threshold is drift (the plant moved to a new operating point, a sensor was recalibrated),
not an anomaly. The rule, applied to every event as ``is_drift``:

    drift  ⇔  a Page-Hinkley test fired  AND  the fraction of anomalous decisions among the
              last ``recent`` scores (up to the detection) is at most
              ``max_anomalous_fraction``.

A detection with many anomalous decisions around it is part of an anomaly episode (the
alert layer already handles it); the lead should leave the models alone then. On real drift
the threshold and normaliser are stale: recalibrate the asset's threshold on recent scores
(``make_threshold``) or retrain, and tell the operator; DSPOT follows slow score drift by
itself, SPOT does not.

**Why our own Page-Hinkley rather than river's.** river 0.26.1's ``drift.ADWIN`` keeps its
window in a Rust object that can only be pickled, and STYLE rule 8 wants plain, versioned
snapshots; Page-Hinkley's state is a handful of running sums, so it snapshots as JSON
exactly. It also differs from river's ``PageHinkley`` on purpose:

* The statistic is in units of a reference standard deviation measured in a warm-up of
  ``warmup`` values after each (re)start, so ``delta`` and ``threshold`` mean the same for a
  temperature and for a score. Scores of overlapping windows and window means are strongly
  autocorrelated, and a cumulative sum of correlated values wanders far more than one of
  independent values, so the reference is the *long-run* standard deviation, estimated from
  the spread of ``blocks`` block means of the warm-up (never below the plain one).
* No forgetting factor: with the drift term ``delta`` the statistic falls back on
  stationary data anyway, and pure running sums make the test a sequence of cumulative sums,
  computed in vectorised numpy and independent of how the stream is cut into batches.

Detection delay for a mean shift of ``Δ`` reference standard deviations is about
``threshold / (Δ - delta)`` values (100 for Δ = 1, 20 for Δ = 3 at the defaults); on
independent stationary values a false detection needs an excursion of ``threshold`` against
the drift ``delta``, probability about ``exp(-2 · delta · threshold)`` = e^-50 per excursion.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> monitor = DriftMonitor(["temp"])
>>> means = np.r_[rng.normal(0, 1, 2000), rng.normal(3, 1, 500)][:, None]
>>> scores = rng.exponential(size=2500)
>>> [(e.kind, e.signal, e.direction, e.is_drift) for e in monitor.update(scores, means)]
[('signal', 'temp', 'up', True)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from common.config import Config

SNAPSHOT_VERSION = 1

FloatArray = npt.NDArray[np.float64]
#: Stretches up to this many values take a plain Python loop: numpy's per-call overhead would
#: dominate. Both paths do the same floating-point operations in the same order.
_SMALL_BATCH = 32
Direction = Literal["up", "down"]


class DriftConfig(Config, frozen=True, kw_only=True):
    """Page-Hinkley settings, in units of the warm-up's (long-run) standard deviation.

    ``delta`` is the shift tolerated without detection, ``threshold`` the test's λ,
    ``warmup`` the values used to measure the reference after each (re)start, ``blocks``
    how many block means estimate the long-run spread, ``min_std`` the smallest reference
    standard deviation (in the watched value's units; 1e-3 of the training spread for
    normalised signals), ``recent`` the scores over which the anomalous fraction is taken,
    ``max_anomalous_fraction`` the highest fraction at which a detection is still drift.

    Ranges are checked when msgspec converts values into a config (:meth:`validated`,
    ``msgspec.convert``, the settings loader), not by calling the class; the cross-field
    rule (``warmup >= 2 * blocks``) is checked either way.

    >>> DriftConfig.validated(blocks=1)
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: Expected `int` >= 2 - at `$.blocks`
    """

    delta: Annotated[float, msgspec.Meta(ge=0.0)] = 0.5
    threshold: Annotated[float, msgspec.Meta(gt=0.0)] = 50.0
    warmup: int = 500
    blocks: Annotated[int, msgspec.Meta(ge=2)] = 10
    min_std: Annotated[float, msgspec.Meta(gt=0.0)] = 1e-3
    recent: Annotated[int, msgspec.Meta(ge=1)] = 200
    max_anomalous_fraction: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05

    def __post_init__(self) -> None:
        # The one cross-field rule; every single-field range is a constraint above.
        if self.warmup < 2 * self.blocks:
            raise ValueError(
                f"warmup ({self.warmup}) must hold at least two values per block "
                f"(blocks={self.blocks}); raise warmup or lower blocks"
            )


@dataclass(frozen=True)
class DriftEvent:
    """One Page-Hinkley detection on an asset's score stream or on one of its signals.

    ``detected_at_index`` counts scores since the monitor started (0-based);
    ``batch_index`` is the position in the ``update`` call that detected it.
    ``reference_mean``/``reference_std`` describe the warm-up before the change,
    ``mean_since_reference`` the mean from the warm-up's start to the detection.
    ``anomalous_fraction`` is over the last ``recent`` scores up to the detection, and
    ``is_drift`` applies the module's rule to it.
    """

    kind: Literal["score", "signal"]
    signal: str | None
    detected_at_index: int
    batch_index: int
    direction: Direction
    reference_mean: float
    reference_std: float
    mean_since_reference: float
    anomalous_fraction: float
    is_drift: bool


class PageHinkley:
    """Two-sided Page-Hinkley mean-change test on one stream of values, in plain numbers.

    >>> import numpy as np
    >>> ph = PageHinkley(DriftConfig(warmup=100))
    >>> values = np.r_[np.random.default_rng(1).normal(0, 1, 1000), np.full(200, 5.0)]
    >>> [(i, direction) for i, direction, *_ in ph.update(values)]
    [(1009, 'up')]
    """

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        # The warm-up as running sums, not its values (500 floats per test were most of an
        # asset's checkpoint while it warmed up): how many, their mean and sum of squared
        # deviations (Welford), and the sum of each block of ``np.array_split``'s cut.
        self.warm_n = 0
        self._warm_mean = 0.0
        self._warm_m2 = 0.0
        self._block_sums = [0.0] * config.blocks
        size, extra = divmod(config.warmup, config.blocks)
        self._block_ends = list(np.cumsum([size + (b < extra) for b in range(config.blocks)]))
        self.ref_mean = 0.0
        self.ref_std = 0.0
        self.count = 0  # values since the warm-up began (0 while warming up)
        self.total = 0.0
        self.up = 0.0
        self.up_min = 0.0
        self.down = 0.0
        self.down_max = 0.0

    @property
    def warming_up(self) -> bool:
        return self.count == 0

    def absorb_warmup(self, values: list[float]) -> None:
        """Warm-up values, in order and one at a time (so any cut gives the same sums); at
        most ``warmup - warm_n`` of them. The reference is set once the warm-up is full."""
        n, mean, m2, total = self.warm_n, self._warm_mean, self._warm_m2, self.total
        sums, ends = self._block_sums, self._block_ends
        block = int(np.searchsorted(ends, n, side="right"))
        for value in values:
            if n == ends[block]:
                block += 1
            sums[block] += value
            total += value
            n += 1
            d = value - mean
            mean += d / n
            m2 += d * (value - mean)
        self.warm_n, self._warm_mean, self._warm_m2, self.total = n, mean, m2, total
        if n == self.config.warmup:
            self._finish_warmup()

    def _finish_warmup(self) -> None:
        n, blocks = self.warm_n, self.config.blocks
        sizes = np.diff(np.concatenate(([0], self._block_ends)))
        block_means = np.asarray(self._block_sums) / sizes
        long_run = float(block_means.std(ddof=1)) * math.sqrt(n / blocks)
        self.ref_mean = self._warm_mean
        self.ref_std = max(math.sqrt(self._warm_m2 / (n - 1)), long_run, self.config.min_std)
        self.count = n
        self.up = self.up_min = self.down = self.down_max = 0.0
        self._clear_warmup()

    def _clear_warmup(self) -> None:
        self.warm_n = 0
        self._warm_mean = self._warm_m2 = 0.0
        self._block_sums = [0.0] * self.config.blocks

    def _restart(self) -> None:
        # Everything back to zero, so equal streams give equal snapshots however they were cut.
        self.count = 0
        self.total = self.up = self.up_min = self.down = self.down_max = 0.0
        self._clear_warmup()

    def update(self, values: FloatArray) -> list[tuple[int, Direction, float, float, float]]:
        """Feed finite values in order; per detection: (index, direction, reference mean,
        reference std, mean since the reference began). The test restarts after each."""
        out: list[tuple[int, Direction, float, float, float]] = []
        delta, limit = self.config.delta, self.config.threshold
        i, n = 0, values.size
        while i < n:
            if self.warming_up:
                take = min(self.config.warmup - self.warm_n, n - i)
                self.absorb_warmup(values[i : i + take].tolist())
                i += take
                continue
            if n - i <= _SMALL_BATCH:
                out.extend(self._update_small(values[i:], i))
                break
            seg = values[i:]
            # Sequential cumulative sums: the same additions whatever the batch boundaries.
            sums = np.cumsum(np.concatenate(([self.total], seg)))[1:]
            counts = self.count + np.arange(1, seg.size + 1)
            means = sums / counts
            z = (seg - means) / self.ref_std
            up = np.cumsum(np.concatenate(([self.up], z - delta)))[1:]
            down = np.cumsum(np.concatenate(([self.down], z + delta)))[1:]
            up_min = np.minimum.accumulate(np.concatenate(([self.up_min], up)))[1:]
            down_max = np.maximum.accumulate(np.concatenate(([self.down_max], down)))[1:]
            rise, fall = up - up_min > limit, down_max - down > limit
            hits = np.flatnonzero(rise | fall)
            if hits.size == 0:
                self.total, self.count = float(sums[-1]), int(counts[-1])
                self.up, self.up_min = float(up[-1]), float(up_min[-1])
                self.down, self.down_max = float(down[-1]), float(down_max[-1])
                break
            j = int(hits[0])
            direction: Direction = "up" if rise[j] else "down"
            out.append((i + j, direction, self.ref_mean, self.ref_std, float(means[j])))
            self._restart()
            i += j + 1
        return out

    def _update_small(
        self, values: FloatArray, offset: int
    ) -> list[tuple[int, Direction, float, float, float]]:
        """The per-value form of ``update``'s vectorised step (same operations, same order)."""
        out: list[tuple[int, Direction, float, float, float]] = []
        delta, limit, ref_std = self.config.delta, self.config.threshold, self.ref_std
        for k, value in enumerate(values.tolist()):
            if self.warming_up:
                for i, direction, ref_mean, ref_sd, since in self.update(values[k:]):
                    out.append((offset + k + i, direction, ref_mean, ref_sd, since))
                return out
            self.total = self.total + value
            self.count += 1
            mean = self.total / self.count
            z = (value - mean) / ref_std
            self.up = self.up + (z - delta)
            self.down = self.down + (z + delta)
            self.up_min = min(self.up_min, self.up)
            self.down_max = max(self.down_max, self.down)
            rise = self.up - self.up_min > limit
            if rise or self.down_max - self.down > limit:
                out.append((offset + k, "up" if rise else "down", self.ref_mean, ref_std, mean))
                self._restart()
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "warmup": {
                "n": self.warm_n,
                "mean": self._warm_mean,
                "m2": self._warm_m2,
                "block_sums": list(self._block_sums),
            },
            "ref_mean": self.ref_mean,
            "ref_std": self.ref_std,
            "count": self.count,
            "total": self.total,
            "up": self.up,
            "up_min": self.up_min,
            "down": self.down,
            "down_max": self.down_max,
        }

    @classmethod
    def from_json(cls, config: DriftConfig, obj: Mapping[str, Any]) -> PageHinkley:
        ph = cls(config)
        for name in ("ref_mean", "ref_std", "total", "up", "up_min", "down", "down_max"):
            setattr(ph, name, _number(obj[name], name))
        ph.count = _count(obj["count"], "count")
        if "warmup_values" in obj:
            # Written before the warm-up was kept as sums: its values, replayed.
            values = [_number(v, "warmup_values") for v in obj["warmup_values"]]
            if len(values) >= config.warmup:
                raise ValueError(f"snapshot holds {len(values)} warm-up values of {config.warmup}")
            ph.total = 0.0
            ph.absorb_warmup(values)
            return ph
        warm = obj["warmup"]
        ph.warm_n = _count(warm["n"], "warmup.n")
        if ph.warm_n >= config.warmup or (ph.warm_n and ph.count):
            raise ValueError(f"snapshot's warm-up holds {ph.warm_n} values of {config.warmup}")
        ph._warm_mean = _number(warm["mean"], "warmup.mean")
        ph._warm_m2 = _number(warm["m2"], "warmup.m2")
        sums = [_number(v, "warmup.block_sums") for v in warm["block_sums"]]
        if len(sums) != config.blocks:
            raise ValueError(f"snapshot has {len(sums)} warm-up blocks for {config.blocks}")
        ph._block_sums = sums
        return ph


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"snapshot field {name!r} must be a non-negative integer; got {value}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"snapshot field {name!r} must be a number; got {value!r}")
    return float(value)


class DriftMonitor:
    """Watches one asset's scores and per-signal means for sustained mean shifts.

    ``update(scores, signal_means, anomalous)``: ``scores`` (n,), ``signal_means`` (n, S)
    in the order of ``signals`` (or ``None``), ``anomalous`` (n,) the threshold's decisions
    (``None``: all normal, so every detection counts as drift). Non-finite values (a signal
    missing from a window) are skipped by that signal's test.

    >>> monitor = DriftMonitor(["temp", "flow"], DriftConfig(warmup=100))
    >>> monitor.update(np.zeros(10), np.zeros((10, 2)))
    []
    >>> DriftMonitor.restore(monitor.snapshot()).n_seen
    10
    """

    kind = "drift-monitor"

    def __init__(self, signals: Sequence[str] = (), config: DriftConfig | None = None) -> None:
        if len(set(signals)) != len(signals):
            raise ValueError(f"signal names must be unique; got {list(signals)}")
        self.config = config.checked() if config is not None else DriftConfig()
        self.signals = tuple(signals)
        self.n_seen = 0
        self._score_test = PageHinkley(self.config)
        self._signal_tests = [PageHinkley(self.config) for _ in self.signals]
        self._recent: list[bool] = []  # the last `recent` anomalous flags

    def update(
        self,
        scores: npt.ArrayLike,
        signal_means: npt.ArrayLike | None = None,
        anomalous: npt.ArrayLike | None = None,
    ) -> list[DriftEvent]:
        """Feed one batch (time order); returns the detections it caused, in order."""
        x = np.asarray(scores, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"scores must be 1-D (one per window); got shape {x.shape}")
        n = x.size
        flags = np.zeros(n, dtype=np.bool_) if anomalous is None else np.asarray(anomalous, bool)
        if flags.shape != (n,):
            raise ValueError(f"anomalous must have one flag per score, ({n},); got {flags.shape}")
        means: FloatArray | None = None
        if signal_means is not None:
            means = np.asarray(signal_means, dtype=np.float64)
            if means.shape != (n, len(self.signals)):
                raise ValueError(
                    f"signal_means must have shape (scores, signals) = ({n}, "
                    f"{len(self.signals)}) in the order {list(self.signals)}; got {means.shape}"
                )
        history = np.concatenate((np.asarray(self._recent, dtype=np.bool_), flags))
        offset = len(self._recent)
        events: list[DriftEvent] = []

        def emit(
            kind: Literal["score", "signal"],
            signal: str | None,
            detections: list[tuple[int, Direction, float, float, float]],
            positions: npt.NDArray[np.intp],
        ) -> None:
            for k, direction, ref_mean, ref_std, mean_since in detections:
                at = int(positions[k])
                window = history[max(0, offset + at + 1 - self.config.recent) : offset + at + 1]
                fraction = float(window.mean())
                events.append(
                    DriftEvent(
                        kind=kind,
                        signal=signal,
                        detected_at_index=self.n_seen + at,
                        batch_index=at,
                        direction=direction,
                        reference_mean=ref_mean,
                        reference_std=ref_std,
                        mean_since_reference=mean_since,
                        anomalous_fraction=fraction,
                        is_drift=fraction <= self.config.max_anomalous_fraction,
                    )
                )

        finite = np.flatnonzero(np.isfinite(x))
        emit("score", None, self._score_test.update(x[finite]), finite)
        if means is not None:
            for s, (name, test) in enumerate(zip(self.signals, self._signal_tests, strict=True)):
                column = means[:, s]
                finite = np.flatnonzero(np.isfinite(column))
                emit("signal", name, test.update(column[finite]), finite)
        self._recent = history[-self.config.recent :].tolist()
        self.n_seen += n
        events.sort(key=lambda e: (e.detected_at_index, e.kind == "signal"))
        return events

    def snapshot(self) -> dict[str, Any]:
        """The whole state as a plain, versioned, JSON-able dict."""
        return {
            "kind": self.kind,
            "v": SNAPSHOT_VERSION,
            "config": self.config.to_json(),
            "signals": list(self.signals),
            "n_seen": self.n_seen,
            "recent": [int(f) for f in self._recent],
            "score_test": self._score_test.to_json(),
            "signal_tests": [t.to_json() for t in self._signal_tests],
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> DriftMonitor:
        """Rebuild a monitor from :meth:`snapshot` output; it continues bit for bit."""
        if snapshot.get("kind") != cls.kind or snapshot.get("v") != SNAPSHOT_VERSION:
            raise ValueError(
                f"not a v{SNAPSHOT_VERSION} drift-monitor snapshot (kind={snapshot.get('kind')!r}"
                f", v={snapshot.get('v')!r}); start a fresh DriftMonitor for this asset"
            )
        config = DriftConfig.from_json(snapshot["config"])
        signals = [str(s) for s in snapshot["signals"]]
        monitor = cls(signals, config)
        n_seen = snapshot["n_seen"]
        if isinstance(n_seen, bool) or not isinstance(n_seen, int):
            raise ValueError(f"snapshot field 'n_seen' must be an integer; got {n_seen!r}")
        monitor.n_seen = n_seen
        monitor._recent = [bool(f) for f in snapshot["recent"]]
        monitor._score_test = PageHinkley.from_json(config, snapshot["score_test"])
        tests = snapshot["signal_tests"]
        if len(tests) != len(signals):
            raise ValueError(f"snapshot has {len(tests)} signal tests for {len(signals)} signals")
        monitor._signal_tests = [PageHinkley.from_json(config, t) for t in tests]
        return monitor


def update_runs(
    monitors: Sequence[DriftMonitor],
    bounds: Sequence[tuple[int, int]],
    scores: npt.ArrayLike,
    signal_means: npt.ArrayLike,
    anomalous: npt.ArrayLike,
) -> list[list[DriftEvent]]:
    """Every monitor's run of one batch side by side: exactly ``monitors[i].update(
    scores[a:b], signal_means[a:b], anomalous[a:b])`` for each ``(a, b) = bounds[i]``.

    A live batch gives each asset a window or a few, and one ``update`` per asset is a
    Python loop per test per asset. Here the tests of every monitor whose run is short
    (at most ``_SMALL_BATCH`` values, every value finite) step together as lanes of arrays,
    the k-th value of every run in the k-th round: the same floating-point operations in
    the same order as ``_update_small``, so the same sums bit for bit; a test still in its
    warm-up that the run does not finish only keeps the values. A monitor with a
    detection in the batch, a warm-up ending in it, a non-finite value or a long run takes
    its own ``update`` (from its state before the batch), which is where events are made.
    """
    x = np.asarray(scores, dtype=np.float64)
    means = np.asarray(signal_means, dtype=np.float64)
    flags = np.asarray(anomalous, dtype=np.bool_)
    out: list[list[DriftEvent]] = [[] for _ in monitors]
    # Non-finite values before each row, so that a run's count is one subtraction.
    bad = np.concatenate(([0], np.cumsum(~(np.isfinite(x) & np.isfinite(means).all(axis=1)))))
    bad_before = bad.tolist()
    fast: list[int] = []
    for i, (monitor, (a, b)) in enumerate(zip(monitors, bounds, strict=True)):
        n = b - a
        warmup = monitor.config.warmup
        if (
            n <= _SMALL_BATCH
            and bad_before[b] == bad_before[a]
            and (monitor._score_test.count > 0 or monitor._score_test.warm_n + n < warmup)
            and all(t.count > 0 or t.warm_n + n < warmup for t in monitor._signal_tests)
        ):
            fast.append(i)
        else:
            out[i] = monitor.update(x[a:b], means[a:b], flags[a:b])
    if not fast:
        return out
    config = monitors[fast[0]].config
    n_tests = 1 + len(monitors[fast[0]].signals)
    if any(monitors[i].config != config or 1 + len(monitors[i].signals) != n_tests for i in fast):
        for i in fast:
            a, b = bounds[i]
            out[i] = monitors[i].update(x[a:b], means[a:b], flags[a:b])
        return out
    tests = [t for i in fast for t in (monitors[i]._score_test, *monitors[i]._signal_tests)]
    state = np.array(
        [(t.total, t.up, t.up_min, t.down, t.down_max, t.ref_std, t.count) for t in tests],
        dtype=np.float64,
    )
    total, up, up_min, down, down_max, ref_std = state[:, :6].T.copy()
    count = state[:, 6].astype(np.int64)
    warming = count == 0
    ref_std[warming] = 1.0  # their sums are not kept: only finite arithmetic for them
    starts = np.array([bounds[i][0] for i in fast], dtype=np.int64)
    lengths = np.array([bounds[i][1] - bounds[i][0] for i in fast], dtype=np.int64)
    fired = np.zeros(len(tests), dtype=np.bool_)
    delta, limit = config.delta, config.threshold
    for k in range(int(lengths.max(initial=0))):
        live = np.repeat(lengths > k, n_tests)
        rows = starts[lengths > k] + k
        values = np.concatenate([x[rows, None], means[rows]], axis=1).reshape(-1)
        total[live] = total[live] + values
        count[live] += 1
        mean = total[live] / count[live]
        z = (values - mean) / ref_std[live]
        up[live] = up[live] + (z - delta)
        down[live] = down[live] + (z + delta)
        up_min[live] = np.minimum(up_min[live], up[live])
        down_max[live] = np.maximum(down_max[live], down[live])
        fired[live] |= (up[live] - up_min[live] > limit) | (down_max[live] - down[live] > limit)
    fired &= ~warming
    per_monitor: npt.NDArray[np.bool_] = np.any(fired.reshape(len(fast), n_tests), axis=1)
    fired_monitor: list[bool] = per_monitor.tolist()
    sums = zip(
        total.tolist(), count.tolist(), up.tolist(), up_min.tolist(), down.tolist(),
        down_max.tolist(), warming.tolist(), strict=True,
    )  # fmt: skip
    lanes = iter(zip(tests, sums, strict=True))
    for j, i in enumerate(fast):
        monitor = monitors[i]
        a, b = bounds[i]
        mine = [next(lanes) for _ in range(n_tests)]
        if fired_monitor[j]:
            out[i] = monitor.update(x[a:b], means[a:b], flags[a:b])  # its state is untouched
            continue
        for lane, (
            test,
            (t_total, t_count, t_up, t_up_min, t_down, t_down_max, t_warming),
        ) in enumerate(mine):
            if t_warming:
                column = x[a:b] if lane == 0 else means[a:b, lane - 1]
                test.absorb_warmup(column.tolist())
                continue
            test.total, test.count, test.up, test.up_min = t_total, t_count, t_up, t_up_min
            test.down, test.down_max = t_down, t_down_max
        recent = monitor._recent
        recent.extend(flags[a:b].tolist())
        del recent[: max(0, len(recent) - monitor.config.recent)]
        monitor.n_seen += b - a
    return out
