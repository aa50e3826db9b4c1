"""Replay a table of readings through exactly the streaming code, and score the result.

The replay feeds :class:`plantwatch.monitor.Monitor` — the same windows, scorer, thresholds and
alert policy as ``plantwatch run`` — in batches of ``batch_rows`` rows in time order.
No label is ever given to the monitor: labels are used only afterwards, to evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent
from common.progress import Progress
from common.timestamps import format_ts, format_ts_ms
from models.artifact import TrainedModel
from models.health import STEP_WINDOW
from models.health.screen import FlatStretch, flat_stretches, gross_readings, screened_rows
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import Settings
from stream.files import Table
from stream.schema import SensorReading


@dataclass
class BacktestResult:
    """Per-row results for the evaluated rows (the whole table, or the part after training)."""

    rows: npt.NDArray[np.int64]  # row numbers in the table
    ts_ms: npt.NDArray[np.int64]
    assets: npt.NDArray[np.object_] | None
    scores: npt.NDArray[np.float64]  # NaN where no window was scored (warm-up, gaps)
    thresholds: npt.NDArray[np.float64]
    #: The threshold's verdict on the window ending at the row.
    exceeds: npt.NDArray[np.int8]
    #: Whether the row lies inside an open alert: what an operator is told (``anomaly``).
    anomaly: npt.NDArray[np.int8]
    severity: npt.NDArray[np.int8]
    top_signal: list[str]
    labels: npt.NDArray[np.int8] | None
    events: list[AlertEvent] = field(default_factory=list)
    model: TrainedModel | None = None
    train_rows: int = 0


def split_per_asset(
    table: Table, *, train_rows: int | None = None, train_fraction: float | None = None
) -> npt.NDArray[np.bool_]:
    """Mask of training rows: the first N (or fraction F) rows of each asset, in time order."""
    if (train_rows is None) == (train_fraction is None):
        raise ValueError("give exactly one of train_rows or train_fraction")
    mask = np.zeros(len(table), dtype=bool)
    for start, end in table.segments():
        n = end - start
        k = train_rows if train_rows is not None else math.floor(n * float(train_fraction or 0))
        mask[start : start + min(max(k, 0), n)] = True
    return mask


def _readings(table: Table, rows: npt.NDArray[np.int64], default_asset: str) -> list[SensorReading]:
    signals = table.signals
    values = table.values[rows]
    out: list[SensorReading] = []
    assets = table.assets
    ts = table.ts_ms[rows].tolist()
    for k, row in enumerate(rows.tolist()):
        vals = {
            s: (None if math.isnan(v) else v)
            for s, v in zip(signals, values[k].tolist(), strict=True)
        }
        asset = str(assets[row]) if assets is not None else default_asset
        out.append(SensorReading(asset, int(ts[k]), vals))
    return out


def replay(
    table: Table,
    model: TrainedModel,
    settings: Settings,
    *,
    rows: npt.NDArray[np.int64] | None = None,
    warmup_rows: npt.NDArray[np.int64] | None = None,
    batch_rows: int = 1000,
    default_asset: str = "asset",
    progress: Progress | None = None,
) -> BacktestResult:
    """Stream ``rows`` (default: all) of ``table`` through a fresh monitor.

    ``warmup_rows`` are streamed first and not reported: they fill each asset's window, so
    the first evaluated row already has a full window behind it (as it would online).
    """
    if rows is None:
        rows = np.arange(len(table), dtype=np.int64)
    if set(model.signals) - set(table.signals):
        raise ValueError(
            f"the model needs signals {sorted(set(model.signals) - set(table.signals))} "
            "that the file lacks"
        )
    column_of = [table.signals.index(s) for s in model.signals]
    view = Table(
        ts_ms=table.ts_ms,
        signals=model.signals,
        values=table.values[:, column_of],
        assets=table.assets,
        labels=table.labels,
        time_column=table.time_column,
    )
    monitor = Monitor.from_settings(model, settings)
    n = len(rows)
    scores = np.full(n, np.nan)
    thresholds = np.full(n, np.nan)
    exceeds = np.zeros(n, np.int8)
    anomaly = np.zeros(n, np.int8)
    severity = np.zeros(n, np.int8)
    top_signal = [""] * n
    events: list[AlertEvent] = []
    feed = rows if warmup_rows is None else np.concatenate([warmup_rows, rows])
    n_warm = 0 if warmup_rows is None else len(warmup_rows)
    # Row order within a batch: time order across assets, as a broker would deliver them.
    order = np.argsort(view.ts_ms[feed], kind="stable")
    feed = feed[order]
    position = np.empty(len(feed), np.int64)  # index into the reported rows, or -1
    reported = order - n_warm
    position[:] = np.where(reported >= 0, reported, -1)
    for start in range(0, len(feed), batch_rows):
        chunk = feed[start : start + batch_rows]
        readings = _readings(view, chunk, default_asset)
        now_ms = int(view.ts_ms[chunk].max())
        outcome = monitor.process(readings, now_ms=now_ms)
        events.extend(outcome.events)
        scored = outcome.scored
        targets = position[start + scored.source_index]
        for j in range(len(scored)):
            t = int(targets[j])
            if t < 0:
                continue
            scores[t] = scored.scores[j]
            thresholds[t] = scored.thresholds[j]
            exceeds[t] = 1 if scored.anomalous[j] else 0
            anomaly[t] = 1 if scored.alert_open[j] else 0
            severity[t] = scored.severity[j]
            top_signal[t] = model.signals[int(np.argmax(scored.contributions[j]))]
        if progress is not None:
            progress.total = len(feed)
            progress.update(min(start + batch_rows, len(feed)))
    if progress is not None:
        progress.close()
    _mark_open_across_unscored(
        anomaly,
        scores,
        view.ts_ms[rows],
        view.assets[rows] if view.assets is not None else None,
        default_asset,
        events,
    )
    _mark_sensor_alerts(
        anomaly,
        top_signal,
        view.ts_ms[rows],
        view.assets[rows] if view.assets is not None else None,
        default_asset,
        events,
        lookback_ms=lambda asset, rule: (
            (settings.sensor_health.spike_max_readings if rule == "spike" else STEP_WINDOW // 2)
            * (model.interval_ms(asset) or 0.0)
        ),
    )
    return BacktestResult(
        rows=rows,
        ts_ms=view.ts_ms[rows],
        assets=view.assets[rows] if view.assets is not None else None,
        scores=scores,
        thresholds=thresholds,
        exceeds=exceeds,
        anomaly=anomaly,
        severity=severity,
        top_signal=top_signal,
        labels=view.labels[rows] if view.labels is not None else None,
        events=events,
        model=model,
    )


def _mark_open_across_unscored(
    anomaly: npt.NDArray[np.int8],
    scores: npt.NDArray[np.float64],
    ts_ms: npt.NDArray[np.int64],
    assets: npt.NDArray[np.object_] | None,
    default_asset: str,
    events: list[AlertEvent],
) -> None:
    """Rows with no scored window (a gap, a window skipped for missing or stale values)
    inside an open anomaly or quality alert are under it too: no decision was made there,
    so the alert stayed open. From the window that opened it to the one that resolved it
    (or the end), as the scored rows are; the alert's events say when.
    """
    unscored = np.isnan(scores)
    if not unscored.any():
        return
    # Sensor alerts are marked by _mark_sensor_alerts, per reading.
    for event, end_ms in _episodes(events, lambda e: e.kind != "sensor"):
        rows = unscored & (ts_ms >= format_ts_ms(event.window_at))
        if end_ms is not None:
            rows &= ts_ms < end_ms
        rows &= assets == event.asset if assets is not None else event.asset == default_asset
        anomaly[rows] = 1


def _episodes(
    events: list[AlertEvent], keep: Callable[[AlertEvent], bool]
) -> list[tuple[AlertEvent, int | None]]:
    """Each alert of ``events`` that ``keep`` takes: its ``opened`` event and the reading
    time of the window that resolved it (``None``: still open at the end)."""
    opened: dict[str, AlertEvent] = {}
    spans: list[tuple[AlertEvent, int | None]] = []
    for event in events:
        if not keep(event):
            continue
        if event.event == "opened":
            opened[event.alert_id] = event
        elif event.event == "resolved" and event.alert_id in opened:
            spans.append((opened.pop(event.alert_id), format_ts_ms(event.window_at)))
    spans.extend((event, None) for event in opened.values())
    return spans


def _mark_sensor_alerts(
    anomaly: npt.NDArray[np.int8],
    top_signal: list[str],
    ts_ms: npt.NDArray[np.int64],
    assets: npt.NDArray[np.object_] | None,
    default_asset: str,
    events: list[AlertEvent],
    *,
    lookback_ms: Callable[[str, str], float],
) -> None:
    """Rows inside an open sensor alert are alerted too: an operator is told of both.

    From the reading that opened it to the one that resolved it (or the end), like the
    anomaly column; the row's top signal names the sensor. A spike is known only when the
    signal has come back, so its alert also covers the readings of the excursion before;
    a step is known once most of the step window's readings after it are in, so its alert
    covers the readings since the step.
    """
    for event, end_ms in _episodes(events, lambda e: e.kind == "sensor"):
        start_ms = format_ts_ms(event.window_at)
        rule = event.reason.split(":", 1)[0]
        if rule in ("spike", "step"):
            start_ms -= int(lookback_ms(event.asset, rule))
        rows = (ts_ms >= start_ms) & (ts_ms <= (end_ms if end_ms is not None else ts_ms.max()))
        rows &= assets == event.asset if assets is not None else event.asset == default_asset
        anomaly[rows] = 1
        signal = event.top_signals[0].signal if event.top_signals else ""
        for j in np.flatnonzero(rows).tolist():
            if not top_signal[j]:
                top_signal[j] = signal


def train_table(table: Table, settings: Settings, **kwargs: Any) -> TrainedModel:
    """Train on a whole table: segments cut at gaps the monitor's ``window`` settings would
    cut at, the table's sampling intervals kept in the artifact; ``kwargs`` go to
    :func:`models.training.train_model`."""
    segments = table.segments(
        max_gap_ms=settings.window.max_gap_ms,
        max_gap_intervals=settings.window.max_gap_intervals,
    )
    health = settings.sensor_health
    if health.screen_history:
        stretches = flat_stretches(
            table.values,
            segments,
            table.signals,
            stuck_factor=health.stuck_factor,
            stuck_min_readings=health.stuck_min_readings,
        )
        gross = gross_readings(table.values, segments, table.signals)
        if stretches or gross:
            bad = screened_rows(stretches, len(table), gross)
            given = kwargs.pop("exclude", None)
            kwargs["exclude"] = bad if given is None else np.asarray(given, dtype=bool) | bad
            summary = dict(kwargs.pop("data_summary", None) or {})
            summary["screened"] = [_described(s, table) for s in stretches]
            summary["screened_gross"] = [
                {**g.to_json(), "first": format_ts(int(table.ts_ms[g.rows[0]]))} for g in gross
            ]
            kwargs["data_summary"] = summary
    return train_model(
        table.values,
        table.signals,
        segments=segments,
        cadence=table.cadence(),
        stale_limit=settings.window.stale_limit,
        **kwargs,
    )


def _described(stretch: FlatStretch, table: Table) -> dict[str, Any]:
    """A screened stretch as the artifact and the training summary say it: rows and times."""
    first, last = int(table.ts_ms[stretch.start]), int(table.ts_ms[stretch.end - 1])
    asset = None if table.assets is None else str(table.assets[stretch.start])
    return {
        **stretch.to_json(),
        **({"asset": asset} if asset is not None else {}),
        "from": format_ts(first),
        "to": format_ts(last),
        "duration_s": (last - first) / 1000.0,
    }


def train_in_file(
    table: Table,
    settings: Settings,
    *,
    train_rows: int | None = None,
    train_fraction: float | None = None,
    scorer: str | None = None,
    window: int | None = None,
    seed: int = 0,
    hyper: dict[str, Any] | None = None,
) -> tuple[TrainedModel, npt.NDArray[np.bool_]]:
    """Train on the first part of each asset's rows (labels unused); return the model and mask."""
    mask = split_per_asset(table, train_rows=train_rows, train_fraction=train_fraction)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ValueError("the training part is empty; raise --train-rows or --train-fraction")
    sub = Table(
        ts_ms=table.ts_ms[idx],
        signals=table.signals,
        values=table.values[idx],
        assets=table.assets[idx] if table.assets is not None else None,
        labels=None,
        time_column=table.time_column,
    )
    kwargs: dict[str, Any] = dict(hyper or {})
    if scorer is not None:
        kwargs["scorer"] = scorer
    if window is not None:
        kwargs["window"] = window
    model = train_table(
        sub,
        settings,
        seed=seed,
        data_summary={"rows": int(idx.size), "source": "first part of the backtest input"},
        **kwargs,
    )
    return model, mask


def backtest_table(
    table: Table,
    settings: Settings,
    *,
    model: TrainedModel | None = None,
    train_rows: int | None = None,
    train_fraction: float | None = None,
    scorer: str | None = None,
    window: int | None = None,
    seed: int = 0,
    batch_rows: int = 1000,
    hyper: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Backtest with a given model, or train on each asset's first rows and test the rest."""
    if model is not None:
        result = replay(table, model, settings, batch_rows=batch_rows, progress=progress)
        return result
    model, mask = train_in_file(
        table,
        settings,
        train_rows=train_rows,
        train_fraction=train_fraction,
        scorer=scorer,
        window=window,
        seed=seed,
        hyper=hyper,
    )
    test = np.flatnonzero(~mask)
    # Warm-up: the last window-1 training rows of each asset, so testing starts with full
    # windows, as it would for a monitor that had been running all along.
    warm: list[int] = []
    for start, end in table.segments():
        train_end = start + int(mask[start:end].sum())
        warm.extend(range(max(start, train_end - model.window + 1), train_end))
    result = replay(
        table,
        model,
        settings,
        rows=test.astype(np.int64),
        warmup_rows=np.asarray(warm, dtype=np.int64),
        batch_rows=batch_rows,
        progress=progress,
    )
    result.train_rows = int(mask.sum())
    return result
