"""Quality models served live: readings in, predictions, quality alerts and lab joins out.

:class:`QualityService` is the pure core beside :class:`~plantwatch.monitor.Monitor`: the
run loop hands it the same consumed readings and the batch's lab results, it hands back
what to publish. No I/O and no clock (``now_ms`` only fills ``detected_at``), so a test
pushes lists through it.

Per asset and quality model (a *stream*):

* **History.** The newest ``history`` rows of the model's input signals (raw units; a
  missing value is NaN and no prediction reads a row holding one, as in the backtest). A
  gap longer than ``window.gap_limit_ms`` of the model's sampling interval, or a reading
  not newer than the stream's newest, starts the history afresh or is dropped (late).
* **Cadence.** One prediction per ``quality.every_ms`` of reading time, on a grid: the
  first reading of each period whose history is complete (so a replay, or another batch
  cut, predicts at the same readings). ``every_ms = 0``: every reading.
* **Prediction.** All due predictions of a batch, across assets, in one predictor call
  (:meth:`QualityModel.predict_histories`); the stream's online bias is added and its
  conformal radius gives the interval; ``in_spec`` judges the prediction against the
  target's spec limits (``quality.spec_limits``).
* **Alert.** With limits, each prediction is one decision of the asset's quality track
  (``kind="quality"``, ``rule`` = the target) in the monitor's own
  :class:`~alerts.policy.AlertPolicy`, so quality alerts open, update and resolve by the
  same k-of-n / m / cooldown rules, carry deterministic ids, are checkpointed with the
  asset's alert state and keep the asset in memory while open. ``quality.alert_on``:
  ``point`` (default) counts a prediction outside the limits, severity ``critical`` when
  the whole interval is outside (out of spec at the stated coverage), ``warning`` when only
  the point is; ``interval`` counts any part of the interval outside (an earlier, noisier
  warning), ``critical`` when the point is outside too. An interval that cannot promise
  its coverage yet (infinite) is judged by the point alone.
* **Lab join.** A lab result joins the newest prediction of its asset and target at or
  before its sample time, at most ``quality.join_tolerance_ms`` older (``predictions_kept``
  predictions are kept per stream). Its error against what operators saw steps the
  stream's :class:`~models.quality.online.OnlineCorrection` (the backtest's simulated lab
  delivery steps the same class), and the last ``metrics_window`` joins give the rolling
  RMSE, MAE, bias and interval coverage (``models.quality.metrics``). Every update is
  logged with its sequence number.

The predictions, bias and interval state live in memory only: a restart begins each
stream from the artifact's calibration (its quality alert state is checkpointed with the
asset). Lab results whose prediction is not (or no longer) held are counted unmatched.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent, ModelRef
from alerts.metrics import Metrics
from alerts.policy import AlertPolicy, Decision
from alerts.predictions import QualityPrediction
from common.timestamps import format_ts
from models.quality.artifact import QualityModel
from models.quality.config import QualityConfig
from models.quality.conformal import SplitConformal
from models.quality.metrics import regression_metrics
from models.quality.online import CorrectionUpdate, OnlineCorrection
from models.quality.protocol import predictable_rows
from plantwatch.settings import Settings
from stream.config import WindowSettings
from stream.lab import LabResult
from stream.schema import SensorReading

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


# -- the pure rules ---------------------------------------------------------------------


def due_rows(
    ts_ms: npt.NDArray[np.int64], candidates: npt.NDArray[np.bool_], next_due_ms: int, every_ms: int
) -> tuple[npt.NDArray[np.int64], int]:
    """Rows to predict at, and the next due time: the first candidate of each
    ``every_ms`` period of reading time at or after ``next_due_ms``.

    >>> ts = np.array([0, 30, 60, 90, 120, 150, 185], dtype=np.int64) * 1000
    >>> ok = np.array([True, True, False, True, True, True, True])
    >>> rows, nxt = due_rows(ts, ok, 0, 60_000)
    >>> rows.tolist(), nxt  # 60 s has no complete history: 90 s predicts that period
    ([0, 3, 4, 6], 240000)
    >>> due_rows(np.array([230_000, 250_000]), np.array([True, True]), nxt, 60_000)[0].tolist()
    [1]
    >>> due_rows(ts, ok, 0, 0)[0].tolist()
    [0, 1, 3, 4, 5, 6]
    """
    rows = np.flatnonzero(candidates & (ts_ms >= next_due_ms)).astype(np.int64)
    if rows.size == 0:
        return rows, next_due_ms
    if every_ms <= 0:
        return rows, int(ts_ms[rows[-1]]) + 1
    buckets = ts_ms[rows] // every_ms
    _, first = np.unique(buckets, return_index=True)
    picked = rows[np.sort(first)]
    return picked, int((ts_ms[picked[-1]] // every_ms + 1) * every_ms)


@dataclass(frozen=True)
class Verdict:
    """How one prediction stands against its spec limits (see the module docstring)."""

    anomalous: bool
    severity: int
    #: The limit the decision is judged against (the one crossed, else the nearest).
    limit: float
    why: str


def judge(
    predicted: float,
    lower: float,
    upper: float,
    lsl: float | None,
    usl: float | None,
    *,
    alert_on: str = "point",
    coverage: float = 0.9,
) -> Verdict | None:
    """The spec verdict of one prediction; ``None`` without limits (nothing to judge).

    >>> judge(0.35, 0.32, 0.38, None, 0.3).why
    'predicted 0.35 above USL 0.3, and all of its 90% interval [0.32, 0.38]'
    >>> v = judge(0.35, 0.28, 0.42, None, 0.3)
    >>> v.anomalous, v.severity
    (True, 1)
    >>> judge(0.25, 0.2, 0.32, None, 0.3).anomalous
    False
    >>> v = judge(0.25, 0.2, 0.32, None, 0.3, alert_on="interval")
    >>> v.anomalous, v.severity, v.why
    (True, 1, 'predicted 0.25 within spec, but its 90% interval [0.2, 0.32] reaches above USL 0.3')
    >>> judge(0.25, -math.inf, math.inf, None, 0.3, alert_on="interval").anomalous
    False
    >>> judge(0.02, 0.01, 0.04, 0.05, 0.3).why
    'predicted 0.02 below LSL 0.05, and all of its 90% interval [0.01, 0.04]'
    """
    if lsl is None and usl is None:
        return None
    known = math.isfinite(lower) and math.isfinite(upper)
    band = f"{coverage:.0%} interval [{lower:.4g}, {upper:.4g}]"
    sides = [("above", "USL", usl), ("below", "LSL", lsl)]
    for word, name, limit in sides:
        if limit is None:
            continue
        beyond = predicted > limit if word == "above" else predicted < limit
        whole = known and (lower > limit if word == "above" else upper < limit)
        part = known and (upper > limit if word == "above" else lower < limit)
        if beyond:
            if whole:
                why = f"predicted {predicted:.4g} {word} {name} {limit:.4g}, and all of its {band}"
            elif known:
                why = f"predicted {predicted:.4g} {word} {name} {limit:.4g} ({band})"
            else:
                why = f"predicted {predicted:.4g} {word} {name} {limit:.4g} (no interval yet)"
            critical = whole if alert_on == "point" else True
            return Verdict(True, 2 if critical else 1, limit, why)
        if alert_on == "interval" and part:
            why = (
                f"predicted {predicted:.4g} within spec, but its {band} reaches {word} "
                f"{name} {limit:.4g}"
            )
            return Verdict(True, 1, limit, why)
    limits = [limit for _, _, limit in sides if limit is not None]
    nearest = min(limits, key=lambda limit: abs(limit - predicted))
    return Verdict(False, 0, nearest, "within spec")


# -- per stream state -------------------------------------------------------------------


@dataclass
class _Made:
    """A prediction kept for the lab join."""

    ts_ms: int
    raw: float
    bias: float
    lower: float
    upper: float
    joined: bool = False


@dataclass
class _Stream:
    """One asset's state for one quality model."""

    correction: OnlineCorrection
    history: int
    n_signals: int
    predictions_kept: int
    metrics_window: int
    rows: F64 = field(init=False)
    last_ts_ms: int | None = None
    next_due_ms: int = 0
    made: deque[_Made] = field(init=False)
    #: (measured, predicted, lower, upper) of the newest lab joins.
    joins: deque[tuple[float, float, float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = np.zeros((0, self.n_signals))
        self.made = deque(maxlen=self.predictions_kept)
        self.joins = deque(maxlen=self.metrics_window)

    def find(self, sample_ms: int, tolerance_ms: int) -> _Made | None:
        """The newest prediction at or before ``sample_ms``, at most ``tolerance_ms`` older."""
        times = [m.ts_ms for m in self.made]
        i = bisect.bisect_right(times, sample_ms) - 1
        if i < 0 or sample_ms - times[i] > tolerance_ms:
            return None
        return self.made[i]


@dataclass(frozen=True)
class LabJoin:
    """One lab result joined to its prediction, what it changed and the rolling metrics."""

    asset: str
    target: str
    sample_ts_ms: int
    measured: float
    prediction_ts_ms: int
    predicted: float
    lower: float
    upper: float
    update: CorrectionUpdate
    #: Over the stream's last ``metrics_window`` joins: rows, rmse, mae, bias, coverage.
    rolling: dict[str, Any]


@dataclass
class QualityOutcome:
    """What one batch caused on the quality side."""

    predictions: list[QualityPrediction] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)
    joins: list[LabJoin] = field(default_factory=list)
    #: Lab results by what became of them (``alerts.metrics.LAB_RESULTS``).
    lab: Counter[str] = field(default_factory=Counter)


# -- the service ------------------------------------------------------------------------


class QualityService:
    """Every served quality model over every asset's readings (see the module docstring).

    >>> from models.quality.training import fit_quality
    >>> from alerts.policy import AlertConfig, AlertPolicy
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 2))
    >>> model = fit_quality(x, 2 * x[:, 0] + x[:, 1], ("a", "b"), "y", [(0, 300)], kind="ridge")
    >>> service = QualityService([model], QualityConfig(every_ms=60_000, usl=5.0))
    >>> t0 = 1795899600000
    >>> readings = [SensorReading("r-1", t0 + i * 10_000, {"a": 3.0, "b": 0.5})
    ...             for i in range(12)]
    >>> out = service.process(readings, [], AlertPolicy(AlertConfig(k=1, n=1)), now_ms=t0)
    >>> [(p.ts[11:19], round(p.predicted, 1), p.in_spec) for p in out.predictions]
    [('21:00:00', 6.5, False), ('21:01:00', 6.5, False)]
    >>> [(e.kind, e.event, e.severity) for e in out.events]
    [('quality', 'opened', 'critical')]
    >>> lab = [LabResult("r-1", t0 + 60_000, "y", 6.0)]
    >>> out = service.process([], lab, AlertPolicy(), now_ms=t0)
    >>> round(out.joins[0].update.error, 2), out.lab["joined"]
    (-0.5, 1)
    """

    def __init__(
        self,
        models: Sequence[QualityModel],
        config: QualityConfig | None = None,
        window: WindowSettings | None = None,
    ) -> None:
        self.models = list(models)
        self.config = config or QualityConfig()
        self.window = window or WindowSettings()
        targets = [m.target for m in self.models]
        if len(set(targets)) != len(targets):
            raise ValueError(
                f"two quality models predict the same target ({sorted(targets)}); serve one "
                "model per target"
            )
        self._streams: dict[tuple[str, int], _Stream] = {}
        #: Checkpointed streams not yet in memory: asset -> target -> snapshot, restored when
        #: the asset's next reading or lab result arrives (like the monitor's parked state).
        self._parked: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_settings(cls, models: Sequence[QualityModel], settings: Settings) -> QualityService:
        return cls(models, settings.quality, settings.window)

    @property
    def signals(self) -> list[str]:
        """Every input signal of the served models, in first-seen order."""
        out: list[str] = []
        for model in self.models:
            out.extend(s for s in model.signals if s not in out)
        return out

    @property
    def assets(self) -> list[str]:
        return sorted({asset for asset, _ in self._streams})

    def spec_limits(self, model: QualityModel) -> tuple[float | None, float | None]:
        return self.config.spec_limits(model.target)

    # -- readings -> predictions -> decisions ------------------------------------------

    def process(
        self,
        readings: Sequence[SensorReading],
        lab_results: Sequence[LabResult],
        policy: AlertPolicy,
        *,
        now_ms: int,
    ) -> QualityOutcome:
        """Predict where due, step the quality tracks of ``policy``, then join the lab
        results (after the predictions: a batch's predictions can meet its lab results)."""
        outcome = QualityOutcome()
        if self.models and readings:
            self._predict(readings, policy, now_ms, outcome)
        for result in lab_results:
            self._join(result, outcome)
        return outcome

    def _stream(self, asset: str, index: int) -> _Stream:
        key = (asset, index)
        stream = self._streams.get(key)
        if stream is None:
            model = self.models[index]
            saved = self._unpark(asset, model.target)
            stream = self._streams[key] = self._new_stream(model, saved, asset)
        return stream

    def _new_stream(
        self, model: QualityModel, saved: Mapping[str, Any] | None, asset: str
    ) -> _Stream:
        """A fresh stream of ``model``, continued from ``saved`` (a checkpoint) when that
        was made under the same model; a snapshot it cannot read starts it afresh."""
        cfg = self.config

        def fresh(conformal: SplitConformal) -> _Stream:
            return _Stream(
                correction=OnlineCorrection(
                    conformal, bias_rate=cfg.bias_rate, coverage=cfg.coverage
                ),
                history=model.history,
                n_signals=len(model.signals),
                predictions_kept=cfg.predictions_kept,
                metrics_window=cfg.metrics_window,
            )

        if saved is None:
            return fresh(model.conformal(cfg.calibration_window))
        if saved.get("model") != model.version:
            log.info(
                "quality state of %s %s was saved under model %s, serving %s: bias, "
                "interval and lab joins start afresh",
                asset, model.target, saved.get("model"), model.version,
            )  # fmt: skip
            return fresh(model.conformal(cfg.calibration_window))
        try:
            stream = fresh(SplitConformal(saved["residuals"], window=cfg.calibration_window))
            _restore_stream(stream, saved)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning(
                "quality state of %s %s unreadable (%s): starting it afresh",
                asset, model.target, str(exc) or type(exc).__name__,
            )  # fmt: skip
            return fresh(model.conformal(cfg.calibration_window))
        return stream

    def _unpark(self, asset: str, target: str) -> dict[str, Any] | None:
        parked = self._parked.get(asset)
        if parked is None:
            return None
        saved = parked.pop(target, None)
        if not parked:
            del self._parked[asset]
        return saved if isinstance(saved, dict) else None

    def _predict(
        self,
        readings: Sequence[SensorReading],
        policy: AlertPolicy,
        now_ms: int,
        outcome: QualityOutcome,
    ) -> None:
        order = sorted(range(len(readings)), key=lambda i: (readings[i].asset, readings[i].ts_ms))
        groups: dict[str, list[SensorReading]] = {}
        for i in order:
            groups.setdefault(readings[i].asset, []).append(readings[i])
        # Per model: every due history of the batch, then one predictor call.
        due: list[list[tuple[str, int, F64]]] = [[] for _ in self.models]
        for asset, rows in groups.items():
            ts = np.asarray([r.ts_ms for r in rows], dtype=np.int64)
            for index, model in enumerate(self.models):
                values = np.asarray(
                    [[_number(r.values.get(s)) for s in model.signals] for r in rows],
                    dtype=np.float64,
                ).reshape(len(rows), len(model.signals))
                gap_ms = self.window.gap_limit_ms(_interval_ms(model, asset))
                stream = self._stream(asset, index)
                for ts_i, history in _advance(stream, ts, values, gap_ms, self.config.every_ms):
                    due[index].append((asset, ts_i, history))
        for index, model in enumerate(self.models):
            if not due[index]:
                continue
            raw = model.predict_histories(np.stack([h for _, _, h in due[index]]))
            for (asset, ts_i, _), value in zip(due[index], raw.tolist(), strict=True):
                if math.isfinite(value):
                    self._publishable(asset, index, ts_i, value, policy, now_ms, outcome)

    def _publishable(
        self,
        asset: str,
        index: int,
        ts_ms: int,
        raw: float,
        policy: AlertPolicy,
        now_ms: int,
        outcome: QualityOutcome,
    ) -> None:
        model = self.models[index]
        stream = self._stream(asset, index)
        cfg = self.config
        bias = stream.correction.bias
        radius = stream.correction.radius
        predicted = raw + bias
        lower, upper = predicted - radius, predicted + radius
        stream.made.append(_Made(ts_ms, raw, bias, lower, upper))
        lsl, usl = self.spec_limits(model)
        verdict = judge(
            predicted, lower, upper, lsl, usl, alert_on=cfg.alert_on, coverage=cfg.coverage
        )
        in_spec = None
        if lsl is not None or usl is not None:
            in_spec = (lsl is None or predicted >= lsl) and (usl is None or predicted <= usl)
        ref = ModelRef(f"quality-{model.kind}", model.version)
        outcome.predictions.append(
            QualityPrediction(
                asset=asset,
                ts=format_ts(ts_ms),
                target=model.target,
                predicted=predicted,
                lower=lower if math.isfinite(lower) else None,
                upper=upper if math.isfinite(upper) else None,
                coverage=cfg.coverage,
                lsl=lsl,
                usl=usl,
                in_spec=in_spec,
                bias=bias,
                model=ref,
            )
        )
        if verdict is None:
            return
        decision = Decision(
            asset=asset,
            ts_ms=ts_ms,
            score=predicted,
            threshold=verdict.limit,
            anomalous=verdict.anomalous,
            severity=verdict.severity,
            contributions={},
            model_name=ref.name,
            model_version=ref.version,
            kind="quality",
            rule=model.target,
            why=verdict.why if verdict.anomalous else None,
        )
        outcome.events.extend(policy.step(decision, now_ms=now_ms))

    # -- lab results -------------------------------------------------------------------

    def _join(self, result: LabResult, outcome: QualityOutcome) -> None:
        index = next((i for i, m in enumerate(self.models) if m.target == result.target), None)
        if index is None:
            outcome.lab["unknown_target"] += 1
            return
        stream = self._streams.get((result.asset, index))
        if stream is None and result.target in self._parked.get(result.asset, {}):
            stream = self._stream(result.asset, index)  # checkpointed: its predictions too
        made = None if stream is None else stream.find(result.ts_ms, self.config.join_tolerance_ms)
        if stream is None or made is None:
            outcome.lab["unmatched"] += 1
            log.info(
                "lab result of %s %s sampled %s: no prediction within %d ms before it "
                "(not held: a restart, an asset of another process, or older than the "
                "%d kept)",
                result.asset,
                result.target,
                format_ts(result.ts_ms),
                self.config.join_tolerance_ms,
                self.config.predictions_kept,
            )
            return
        if made.joined:
            outcome.lab["duplicate"] += 1
            return
        made.joined = True
        predicted = made.raw + made.bias
        update = stream.correction.learn(result.value, made.raw, made.bias)
        stream.joins.append((result.value, predicted, made.lower, made.upper))
        measured, preds, lows, highs = (
            np.asarray(c, dtype=np.float64) for c in zip(*stream.joins, strict=True)
        )
        rolling = regression_metrics(measured, preds, lower=lows, upper=highs)
        join = LabJoin(
            asset=result.asset,
            target=result.target,
            sample_ts_ms=result.ts_ms,
            measured=result.value,
            prediction_ts_ms=made.ts_ms,
            predicted=predicted,
            lower=made.lower,
            upper=made.upper,
            update=update,
            rolling=rolling,
        )
        outcome.joins.append(join)
        outcome.lab["joined"] += 1
        model = self.models[index]
        log.info(
            "lab %s %s sampled %s: measured %.4g, predicted %.4g (error %+.4g, %s the "
            "interval); update #%d of quality-%s %s: bias %.4g -> %.4g, interval ±%.4g -> "
            "±%.4g; last %d joins: RMSE %.4g, bias %+.4g, coverage %.0f%%",
            result.asset,
            result.target,
            format_ts(result.ts_ms),
            result.value,
            predicted,
            update.error,
            "inside" if made.lower <= result.value <= made.upper else "outside",
            update.update,
            model.kind,
            model.version,
            update.bias_before,
            update.bias_after,
            update.radius_before,
            update.radius_after,
            rolling["rows"],
            rolling["rmse"],
            rolling["bias"],
            100.0 * float(rolling.get("coverage") or 0.0),
        )

    # -- ownership ---------------------------------------------------------------------

    def forget(self, assets: Iterable[str]) -> None:
        """Drop the streams of assets this process no longer holds."""
        gone = set(assets)
        for key in [k for k in self._streams if k[0] in gone]:
            del self._streams[key]
        for asset in gone:
            self._parked.pop(asset, None)

    def forget_all(self) -> None:
        self._streams.clear()
        self._parked.clear()

    # -- checkpoints -------------------------------------------------------------------

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        """The asset's streams by target, plain JSON (the run loop writes them with the
        monitor's snapshot to the state topic): the bias and the interval's residuals
        learned from lab results, the history of readings, the predictions kept for late
        lab results and the rolling joins. ``None`` when there are none."""
        out = dict(self._parked.get(asset, {}))
        for (a, index), stream in self._streams.items():
            if a == asset:
                out[self.models[index].target] = _snapshot_stream(
                    stream, self.models[index].version
                )
        return out or None

    def park(self, asset: str, snap: Mapping[str, Any]) -> None:
        """Keep an asset's checkpointed streams until it speaks (or a lab result comes)."""
        if not isinstance(snap, Mapping):
            raise ValueError(f"quality state of {asset} is not an object: {type(snap).__name__}")
        targets = {m.target for m in self.models}
        kept = {t: dict(v) for t, v in snap.items() if t in targets and isinstance(v, Mapping)}
        for key in [k for k in self._streams if k[0] == asset]:
            kept.pop(self.models[key[1]].target, None)  # live state is newer
        if kept:
            self._parked[asset] = kept

    def evict(self, assets: Iterable[str]) -> None:
        """Take idle assets' streams out of memory, kept as snapshots until they speak."""
        for asset in set(assets):
            snap = self.snapshot_asset(asset)
            self.forget([asset])
            if snap is not None:
                self._parked[asset] = snap


def _finite_or_none(values: Iterable[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def _snapshot_stream(stream: _Stream, version: str) -> dict[str, Any]:
    made = list(stream.made)
    correction = stream.correction
    return {
        "model": version,
        "bias": correction.bias,
        "updates": correction.updates,
        "residuals": correction.conformal.residuals.tolist(),
        "rows": [_finite_or_none(row) for row in stream.rows.tolist()],
        "last_ts_ms": stream.last_ts_ms,
        "next_due_ms": stream.next_due_ms,
        # Columns: a day of predictions is a few thousand numbers, not objects.
        "made": {
            "ts_ms": [m.ts_ms for m in made],
            "raw": [m.raw for m in made],
            "bias": [m.bias for m in made],
            "lower": _finite_or_none(m.lower for m in made),
            "upper": _finite_or_none(m.upper for m in made),
            "joined": [m.joined for m in made],
        },
        "joins": [_finite_or_none(j) for j in stream.joins],
    }


def _restore_stream(stream: _Stream, saved: Mapping[str, Any]) -> None:
    """Continue ``stream`` (fresh, its correction seeded with the saved residuals) from a
    :func:`_snapshot_stream`. An infinite interval bound was written as ``null``."""

    def number(value: Any, missing: float) -> float:
        return missing if value is None else float(value)

    stream.correction.bias = float(saved["bias"])
    stream.correction.updates = int(saved["updates"])
    rows = [[number(v, math.nan) for v in row] for row in saved["rows"]]
    stream.rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), stream.n_signals)
    last = saved.get("last_ts_ms")
    stream.last_ts_ms = None if last is None else int(last)
    stream.next_due_ms = int(saved["next_due_ms"])
    made = saved["made"]
    columns = [made[k] for k in ("ts_ms", "raw", "bias", "lower", "upper", "joined")]
    for ts_ms, raw, bias, lower, upper, joined in zip(*columns, strict=True):
        stream.made.append(
            _Made(
                int(ts_ms),
                float(raw),
                float(bias),
                number(lower, -math.inf),
                number(upper, math.inf),
                bool(joined),
            )
        )
    for measured, predicted, lower, upper in saved["joins"]:
        stream.joins.append(
            (
                float(measured),
                float(predicted),
                number(lower, -math.inf),
                number(upper, math.inf),
            )
        )


def _advance(
    stream: _Stream, ts: npt.NDArray[np.int64], values: F64, gap_ms: int, every_ms: int
) -> list[tuple[int, F64]]:
    """Push one asset's readings (time order) into a stream; the due (ts, history) pairs."""
    h = stream.history
    keep = np.ones(ts.shape[0], np.bool_)
    if ts.shape[0] > 1:
        keep[1:] = ts[1:] > ts[:-1]  # a duplicate time within the batch: the first counts
    if stream.last_ts_ms is not None:
        keep &= ts > stream.last_ts_ms  # late: older than what the stream has seen
    ts, values = ts[keep], values[keep]
    if ts.shape[0] == 0:
        return []
    previous = stream.rows
    if stream.last_ts_ms is not None and ts[0] - stream.last_ts_ms > gap_ms:
        previous = previous[:0]  # the history does not reach over a gap
    combined = np.concatenate([previous, values])
    offset = previous.shape[0]
    starts = [0, *(np.flatnonzero(np.diff(ts) > gap_ms) + 1 + offset).tolist()]
    bounds = list(zip(starts, [*starts[1:], combined.shape[0]], strict=True))
    ends = predictable_rows(combined, h, bounds)
    candidates = np.zeros(ts.shape[0], np.bool_)
    candidates[ends[ends >= offset] - offset] = True
    rows, stream.next_due_ms = due_rows(ts, candidates, stream.next_due_ms, every_ms)
    out = [(int(ts[r]), combined[r + offset - h + 1 : r + offset + 1]) for r in rows.tolist()]
    last_start = bounds[-1][0]
    stream.rows = combined[max(last_start, combined.shape[0] - h) :].copy()
    stream.last_ts_ms = int(ts[-1])
    return out


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _interval_ms(model: QualityModel, asset: str) -> float | None:
    """The sampling interval the quality model's training measured (the asset's own, else
    the pooled one), as ``TrainedModel.interval_ms`` reads it."""
    from common.cadence import Cadence

    cadence = model.metadata.get("cadence")
    if not isinstance(cadence, dict):
        return None
    assets = cadence.get("assets")
    if isinstance(assets, dict) and isinstance(assets.get(asset), dict):
        own = Cadence.from_json(assets[asset]).interval_ms
        if own is not None:
            return own
    return Cadence.from_json(cadence).interval_ms


# -- the Kafka-facing edges the run loop calls -------------------------------------------


def observe_quality(metrics: Metrics, outcome: QualityOutcome) -> None:
    """Prometheus: the latest prediction and interval, rolling lab-join metrics, counts."""
    for p in outcome.predictions:
        metrics.set_quality(
            p.asset,
            p.target,
            p.predicted,
            math.inf if p.lower is None else p.lower,
            math.inf if p.upper is None else p.upper,
        )
        metrics.quality_predictions.labels(target=p.target).inc()
    for j in outcome.joins:
        r = j.rolling
        metrics.set_quality_errors(
            j.asset,
            j.target,
            rmse=float(r["rmse"]),
            mae=float(r["mae"]),
            bias=float(r["bias"]),
            coverage=float(r["coverage"]),
        )
    for result, count in outcome.lab.items():
        metrics.quality_lab_results.labels(result=result).inc(count)
    metrics.count_alerts(outcome.events)


def export_spec_limits(metrics: Metrics, service: QualityService) -> None:
    for model in service.models:
        metrics.set_spec_limits(model.target, *service.spec_limits(model))


def check_copartitioned(
    client_config: dict[str, str],
    sensors: str,
    lab: str,
    *,
    consequence: str = "lab results are joined only where both topics put an asset in the "
    "same partition",
) -> bool:
    """Warn unless the lab topic has as many partitions as the sensor topic.

    Both are keyed by asset and read by one consumer with the range assignor, so with equal
    partition counts an asset's lab results reach the process that holds its predictions
    (Kafka Streams' co-partitioning); otherwise some are counted unmatched. The operator
    commands topic is checked the same way (``consequence`` says what a mismatch costs).
    """
    from confluent_kafka.admin import AdminClient

    try:
        found = AdminClient(dict(client_config)).list_topics(timeout=10).topics
    except Exception as exc:  # an unreachable broker shows itself at the first poll
        log.warning("could not check the partitions of %s: %s", lab, exc)
        return False
    counts = {t: len(found[t].partitions) for t in (sensors, lab) if t in found}
    if len(counts) == 2 and counts[sensors] != counts[lab]:
        log.warning(
            "%s has %d partitions and %s %d: %s; give %s %d partitions",
            sensors,
            counts[sensors],
            lab,
            counts[lab],
            consequence,
            lab,
            counts[sensors],
        )
        return False
    return True
