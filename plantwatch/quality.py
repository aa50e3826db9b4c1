"""Quality models over files: train on a table's first rows, replay a table through one.

``train --task quality`` and ``backtest`` on a quality model come here. The target column
is taken out of the inputs before anything is fitted; in a replay it is read only to
evaluate, or, when lab delivery is simulated (``lab_every``/``lab_delay``), each sampled
value is shown to the online correction only ``lab_delay`` rows after its sample time,
as a late lab result would be.

Predictions of a row read only that row's history, so predicting the whole table at once
gives the values a stream would have given row by row; the online part (bias correction,
conformal update) steps through lab arrivals in time order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.quality.artifact import QualityModel
from models.quality.metrics import regression_metrics
from models.quality.online import OnlineCorrection
from models.quality.training import fit_quality
from plantwatch.settings import Settings
from stream.files import Table

F64 = npt.NDArray[np.float64]


def _segments(table: Table, settings: Settings) -> list[tuple[int, int]]:
    return table.segments(
        max_gap_ms=settings.window.max_gap_ms,
        max_gap_intervals=settings.window.max_gap_intervals,
    )


def _column(table: Table, name: str) -> F64:
    if name not in table.signals:
        raise ValueError(
            f"column {name!r} is not among the file's numeric columns {list(table.signals)}"
        )
    return table.values[:, table.signals.index(name)].astype(np.float64)


def quality_inputs(table: Table, target: str, inputs: Sequence[str] | None = None) -> list[str]:
    """The input signals: ``inputs`` as given, else every numeric column but the target.

    The target is never an input (naming it in ``inputs`` is an error).
    """
    _column(table, target)
    if inputs:
        chosen = list(inputs)
        if target in chosen:
            raise ValueError(f"the target {target!r} cannot also be an input")
        for name in chosen:
            _column(table, name)
        return chosen
    chosen = [s for s in table.signals if s != target]
    if not chosen:
        raise ValueError(f"the file has no numeric column besides the target {target!r}")
    return chosen


def train_quality_table(
    table: Table,
    settings: Settings,
    *,
    target: str,
    inputs: Sequence[str] | None = None,
    kind: str,
    train_rows: int | None = None,
    validation_fraction: float = 0.2,
    validation_rows: int | None = None,
    lags: Sequence[int] | None = None,
    history: int | None = None,
    hyper: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    data_summary: dict[str, Any] | None = None,
) -> QualityModel:
    """A quality model of ``target`` fitted on the first ``train_rows`` rows (default all)."""
    signals = quality_inputs(table, target, inputs)
    x = np.stack([_column(table, s) for s in signals], axis=1)
    return fit_quality(
        x,
        _column(table, target),
        signals,
        target,
        _segments(table, settings),
        kind=kind,
        train_rows=train_rows,
        validation_fraction=validation_fraction,
        validation_rows=validation_rows,
        lags=lags,
        history=history,
        hyper=hyper,
        seed=seed,
        progress=progress,
        metadata={"data": data_summary or {}, "cadence": table.cadence()},
    )


@dataclass
class QualityResult:
    """Per-row replay of a quality model (NaN where a row had no complete history)."""

    ts_ms: npt.NDArray[np.int64]
    assets: npt.NDArray[np.object_] | None
    predicted: F64
    lower: F64
    upper: F64
    #: 1 inside the spec limits, 0 outside, -1 where unknown (no prediction or no limits).
    in_spec: npt.NDArray[np.int8]
    target: F64 | None
    model: QualityModel
    coverage: float
    lab_rows: int = 0

    def metrics(self, rows: npt.ArrayLike | None = None) -> dict[str, Any]:
        """RMSE, MAE, R², bias and interval coverage against the target (``rows`` only)."""
        if self.target is None:
            return {}
        index = np.arange(self.predicted.size) if rows is None else np.asarray(rows)
        out = regression_metrics(
            self.target[index],
            self.predicted[index],
            lower=self.lower[index],
            upper=self.upper[index],
        )
        return {**out, "target_coverage": self.coverage}


def spec_verdict(predicted: F64, lsl: float | None, usl: float | None) -> npt.NDArray[np.int8]:
    """1 where the prediction is within [lsl, usl], 0 outside, -1 unknown.

    >>> spec_verdict(np.array([0.1, 0.5, np.nan]), None, 0.3).tolist()
    [1, 0, -1]
    >>> spec_verdict(np.array([0.1]), None, None).tolist()
    [-1]
    """
    out = np.full(predicted.shape, -1, dtype=np.int8)
    if lsl is None and usl is None:
        return out
    known = np.isfinite(predicted)
    ok = known.copy()
    if lsl is not None:
        ok &= predicted >= lsl
    if usl is not None:
        ok &= predicted <= usl
    out[known] = ok[known].astype(np.int8)
    return out


def lab_schedule(
    target: F64, segments: Sequence[tuple[int, int]], every: int, delay: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sample rows (every ``every``-th row of each segment with a target) and the rows at
    which their lab values arrive (``delay`` rows later, within the segment).

    >>> s, a = lab_schedule(np.arange(10.0), [(0, 10)], every=4, delay=3)
    >>> s.tolist(), a.tolist()
    ([0, 4], [3, 7])
    """
    if every < 1 or delay < 0:
        raise ValueError(f"lab_every must be >= 1 and lab_delay >= 0, got {every}, {delay}")
    samples: list[int] = []
    arrivals: list[int] = []
    for start, end in segments:
        for row in range(start, end, every):
            if row + delay < end and np.isfinite(target[row]):
                samples.append(row)
                arrivals.append(row + delay)
    return np.asarray(samples, dtype=np.int64), np.asarray(arrivals, dtype=np.int64)


def backtest_quality(
    table: Table,
    model: QualityModel,
    settings: Settings,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    lab_every: int | None = None,
    lab_delay: int = 0,
) -> QualityResult:
    """Replay ``table`` through ``model``; spec limits default to ``quality.lsl/usl``.

    Without lab delivery the interval is the calibration's (``quality.coverage``). With
    ``lab_every``, a lab value sampled at row ``t`` reaches the model at row
    ``t + lab_delay``: from that row on, the bias correction moves toward its error by
    ``quality.bias_rate`` and the conformal interval learns the error of the corrected
    prediction (a window of ``quality.calibration_window``).
    """
    cfg = settings.quality
    lsl = cfg.lsl if lsl is None else lsl
    usl = cfg.usl if usl is None else usl
    if lsl is not None and usl is not None and not lsl < usl:
        raise ValueError(f"the lower spec limit {lsl} must be below the upper {usl}")
    missing = [s for s in model.signals if s not in table.signals]
    if missing:
        raise ValueError(f"the model's input signals {missing} are not in the file")
    x = np.stack([_column(table, s) for s in model.signals], axis=1)
    target = _column(table, model.target) if model.target in table.signals else None
    segments = _segments(table, settings)
    raw = model.predict(x, segments).predicted
    radius = np.full(raw.shape, model.conformal(cfg.calibration_window).radius(cfg.coverage))
    predicted = raw.copy()
    lab_rows = 0
    if lab_every is not None:
        if target is None:
            raise ValueError(
                f"simulating lab delivery needs the target column {model.target!r} in the file"
            )
        bias = np.zeros(raw.shape)
        for _, first, last in table.asset_rows():
            # Each asset learns from its own lab results only.
            own = [(s, e) for s, e in segments if first <= s < last]
            samples, arrivals = lab_schedule(target, own, lab_every, lab_delay)
            order = np.argsort(arrivals, kind="stable")
            # The one online update the live service steps too (models.quality.online).
            correction = OnlineCorrection(
                model.conformal(cfg.calibration_window),
                bias_rate=cfg.bias_rate,
                coverage=cfg.coverage,
            )
            pairs = zip(samples[order].tolist(), arrivals[order].tolist(), strict=True)
            for sample, arrival in pairs:
                if not np.isfinite(raw[sample]):
                    continue
                # Judged against the prediction operators saw for the sample: the model's
                # plus the bias known then.
                correction.learn(float(target[sample]), float(raw[sample]), float(bias[sample]))
                # From the arrival on (the arrival row included: the value is known when
                # that row is predicted), the asset's predictions carry the new state.
                bias[arrival:last] = correction.bias
                radius[arrival:last] = correction.radius
                lab_rows += 1
        predicted = raw + bias
    return QualityResult(
        ts_ms=table.ts_ms,
        assets=table.assets,
        predicted=predicted,
        lower=predicted - radius,
        upper=predicted + radius,
        in_spec=spec_verdict(predicted, lsl, usl),
        target=target,
        model=model,
        coverage=cfg.coverage,
        lab_rows=lab_rows,
    )


def write_quality_results(result: QualityResult, path: str) -> None:
    """OUT.csv: timestamp, [asset,] predicted, lower, upper, in_spec, [target]."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from common.timestamps import format_ts

    def nullable(values: F64) -> pa.Array:
        return pa.array(values, mask=~np.isfinite(values))

    columns: dict[str, Any] = {"timestamp": [format_ts(int(t)) for t in result.ts_ms.tolist()]}
    if result.assets is not None:
        columns["asset"] = [str(a) for a in result.assets]
    columns["predicted"] = nullable(result.predicted)
    columns["lower"] = nullable(result.lower)
    columns["upper"] = nullable(result.upper)
    columns["in_spec"] = pa.array(result.in_spec, mask=result.in_spec < 0)
    if result.target is not None:
        columns["target"] = nullable(result.target)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(pa.table(columns), path)
