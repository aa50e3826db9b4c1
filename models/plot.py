"""The backtest picture: signals, score against threshold, labelled and predicted anomalies.

One figure of panels sharing a UTC time axis, top to bottom: the signals, the score with its
threshold, and a strip of predicted anomalous rows (and alerts). Labelled anomalies are shaded
light red on every panel, so a missed or late detection is visible at a glance.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global backend
switch), so it is safe in a headless service and in tests. Long series are reduced with min/max
decimation, which keeps every spike, before they reach matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Final

import matplotlib.dates as mdates
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from models.evaluation import runs

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_SIGNAL_PANELS: Final = 8
LABEL_COLOUR: Final = (0.90, 0.10, 0.10, 0.13)
PREDICTED_COLOUR: Final = "tab:orange"
ALERT_COLOUR: Final = "#b34700"
SCORE_COLOUR: Final = "tab:blue"
THRESHOLD_COLOUR: Final = "black"
_DPI: Final = 110
_WIDTH_IN: Final = 14.0
# Intervals narrower than this share of the time span are widened to stay visible (≈ 1 px).
_MIN_INTERVAL_SHARE: Final = 1 / 1500
# The score axis turns logarithmic when the highest score is this many times the median (and
# every score is positive): then spikes would flatten the typical level into the baseline.
_LOG_SPAN: Final = 100.0


def decimate_min_max(values: npt.ArrayLike, max_points: int) -> IntArray:
    """Row indices to draw so a line of ``values`` has at most ``max_points`` points: the
    series is cut into ``max_points // 2`` equal buckets and each keeps its lowest and highest
    row, so spikes survive (plain striding would drop them). A bucket of only NaN keeps one
    NaN row, so gaps stay gaps. Short series come back whole.

    >>> values = np.zeros(1000)
    >>> values[437] = 9.0
    >>> idx = decimate_min_max(values, 20)
    >>> len(idx) <= 20, 437 in idx
    (True, True)
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    n = arr.size
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    size = math.ceil(n / (max_points // 2))
    buckets = math.ceil(n / size)
    missing = np.isnan(arr)
    low = np.full(buckets * size, np.inf)
    low[:n] = np.where(missing, np.inf, arr)
    high = np.full(buckets * size, -np.inf)
    high[:n] = np.where(missing, -np.inf, arr)
    base = np.arange(buckets, dtype=np.int64) * size
    picks = np.concatenate(
        (
            base + np.argmin(low.reshape(buckets, size), axis=1),
            base + np.argmax(high.reshape(buckets, size), axis=1),
        )
    )
    picked: IntArray = np.unique(picks[picks < n]).astype(np.int64)
    return picked


def _column(name: str, values: npt.ArrayLike, rows: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(rows, float(arr))
    if arr.shape != (rows,):
        raise ValueError(
            f"{name} must have one value per row ({rows}), got shape {arr.shape}; "
            "pass arrays aligned with ts_ms"
        )
    return arr


def _flags(name: str, values: npt.ArrayLike, rows: int) -> npt.NDArray[np.bool_]:
    arr = _column(name, values, rows)
    if np.isnan(arr).any():
        raise ValueError(f"{name} holds NaN; mark rows 0 or 1")
    return np.asarray(arr != 0, dtype=np.bool_)


def _date_numbers(ms: npt.NDArray[np.int64]) -> FloatArray:
    """Epoch milliseconds as matplotlib date numbers (days since matplotlib's epoch)."""
    days = mdates.date2num(ms.astype("datetime64[ms]"))  # type: ignore[no-untyped-call]
    return np.asarray(days, dtype=np.float64)


def _intervals(
    starts_x: FloatArray, ends_x: FloatArray, span: float, merge_gap: float
) -> list[tuple[float, float]]:
    """(start, width) pairs for ``broken_barh``: nearby intervals merged, tiny ones widened."""
    if starts_x.size == 0:
        return []
    keep = np.concatenate(([True], starts_x[1:] - ends_x[:-1] > merge_gap))
    merged_start = starts_x[keep]
    merged_end = np.maximum.reduceat(ends_x, np.flatnonzero(keep))
    width = np.maximum(merged_end - merged_start, span * _MIN_INTERVAL_SHARE)
    return [(float(s), float(w)) for s, w in zip(merged_start, width, strict=True)]


def _run_intervals(
    mask: npt.NDArray[np.bool_], x: FloatArray, step: float, span: float, merge_gap: float
) -> list[tuple[float, float]]:
    starts, ends = runs(mask)
    # A run covers its rows up to the next row's time (the last row gets one typical step).
    x_next = np.append(x[1:], x[-1] + step)
    return _intervals(x[starts], x_next[ends - 1], span, merge_gap)


def _shade(ax: Axes, ranges: list[tuple[float, float]]) -> None:
    if ranges:
        ax.broken_barh(
            ranges,
            (0.0, 1.0),
            transform=ax.get_xaxis_transform(),
            facecolor=LABEL_COLOUR,
            edgecolor="none",
            zorder=0,
        )


def _zscore(values: FloatArray) -> FloatArray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    spread = float(finite.std())
    return (values - float(finite.mean())) / (spread if spread > 0 else 1.0)


def backtest_figure(
    *,
    ts_ms: npt.ArrayLike,
    signals: Mapping[str, npt.ArrayLike],
    scores: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    title: str = "",
    alerts: Sequence[tuple[int, int]] | None = None,
    max_points: int = 20_000,
) -> Figure:
    """Build the backtest figure (see ``plot_backtest``) without writing it, for callers that
    embed or inspect it."""
    ts = np.asarray(ts_ms)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"ts_ms must be a non-empty 1-D array of epoch ms, got shape {ts.shape}")
    if ts.dtype.kind not in "iuf":
        raise TypeError(f"ts_ms must be numeric epoch milliseconds, got dtype {ts.dtype}")
    if ts.size > 1 and (np.diff(ts) < 0).any():
        raise ValueError("ts_ms must not decrease; plot one asset at a time, in time order")
    if max_points < 10:
        raise ValueError(f"max_points must be at least 10, got {max_points}")
    rows = ts.size
    score = _column("scores", scores, rows)
    threshold = _column("thresholds", thresholds, rows)
    predicted = _flags("predictions", predictions, rows)
    labelled = _flags("labels", labels, rows) if labels is not None else None
    columns = {name: _column(f"signal {name!r}", v, rows) for name, v in signals.items()}

    x = _date_numbers(ts.astype(np.int64))
    step = float(np.median(np.diff(x))) if rows > 1 else 1 / 86_400
    span = max(float(x[-1] - x[0]) + step, step)
    merge_gap = span / (max_points // 2)

    label_ranges = (
        _run_intervals(labelled, x, step, span, merge_gap) if labelled is not None else []
    )
    predicted_ranges = _run_intervals(predicted, x, step, span, merge_gap)
    alert_ranges: list[tuple[float, float]] = []
    if alerts:
        bounds = np.asarray(alerts, dtype=np.int64).reshape(-1, 2)
        if (bounds[:, 1] < bounds[:, 0]).any():
            raise ValueError("every alert must be (start_ms, end_ms) with end_ms >= start_ms")
        order = np.argsort(bounds[:, 0], kind="stable")
        sorted_bounds = bounds[order]
        alert_ranges = _intervals(
            _date_numbers(sorted_bounds[:, 0]), _date_numbers(sorted_bounds[:, 1]), span, merge_gap
        )

    one_panel_each = 0 < len(columns) <= MAX_SIGNAL_PANELS
    signal_panels = len(columns) if one_panel_each else (1 if columns else 0)
    # Heights in inches: a small panel per signal, or one taller panel for all the z-scores.
    heights = [1.2] * signal_panels if one_panel_each else [2.6] * signal_panels
    heights += [3.1, 0.65 if not alert_ranges else 0.95]
    fig = Figure(figsize=(_WIDTH_IN, sum(heights) + 0.9), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    decimated = rows > max_points

    def draw(
        ax: Axes, values: FloatArray, colour: str, label: str, width: float, style: str = "-"
    ) -> None:
        idx = decimate_min_max(values, max_points)
        ax.plot(x[idx], values[idx], color=colour, linewidth=width, linestyle=style, label=label)

    colours = [f"C{i % 10}" for i in range(len(columns))]
    if one_panel_each:
        for ax, (name, values), colour in zip(axes, columns.items(), colours, strict=False):
            draw(ax, values, colour, name, 0.8)
            ax.legend(loc="upper left", fontsize=8, framealpha=0.8, handlelength=1.2)
            ax.tick_params(labelsize=8)
    elif columns:
        ax = axes[0]
        for (name, values), colour in zip(columns.items(), colours, strict=True):
            draw(ax, _zscore(values), colour, name, 0.7)
        ax.set_ylabel("signals (z-score)", fontsize=9)
        ax.legend(loc="upper left", fontsize=7, framealpha=0.8, ncol=math.ceil(len(columns) / 6))

    score_ax = axes[signal_panels]
    draw(score_ax, score, SCORE_COLOUR, "score", 0.8)
    draw(score_ax, threshold, THRESHOLD_COLOUR, "threshold", 1.0, "--")
    finite = score[np.isfinite(score)]
    if finite.size and finite.min() > 0 and finite.max() >= _LOG_SPAN * np.median(finite):
        score_ax.set_yscale("log")
    score_ax.set_ylabel("score", fontsize=9)
    handles, names = score_ax.get_legend_handles_labels()
    if label_ranges:
        handles.append(Patch(facecolor=LABEL_COLOUR, edgecolor="none"))
        names.append("labelled anomaly")
    score_ax.legend(handles, names, loc="upper left", fontsize=8, framealpha=0.8)

    strip = axes[-1]
    rows_in_strip: list[tuple[str, list[tuple[float, float]], str]] = [
        ("predicted", predicted_ranges, PREDICTED_COLOUR)
    ]
    if alert_ranges:
        # y grows upwards: alerts go below, so "predicted" sits right under the score.
        rows_in_strip.insert(0, ("alerts", alert_ranges, ALERT_COLOUR))
    for i, (name, ranges, colour) in enumerate(rows_in_strip):
        if ranges:
            strip.broken_barh(ranges, (i + 0.15, 0.7), facecolor=colour, edgecolor="none")
        else:
            strip.text(
                0.5,
                i + 0.5,
                f"no {name} rows" if name == "predicted" else f"no {name}",
                transform=strip.get_yaxis_transform(),
                ha="center",
                va="center",
                fontsize=8,
                color="0.45",
            )
    strip.set_ylim(0, len(rows_in_strip))
    strip.set_yticks([i + 0.5 for i in range(len(rows_in_strip))])
    strip.set_yticklabels([name for name, _, _ in rows_in_strip], fontsize=8)
    strip.tick_params(axis="y", length=0)

    for ax in axes:
        _shade(ax, label_ranges)
        ax.grid(True, axis="x", color="0.88", linewidth=0.6)
        ax.margins(x=0)
    # matplotlib.dates ships without type annotations, hence the two ignores.
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    strip.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    strip.xaxis.set_major_formatter(formatter)
    strip.set_xlabel("time (UTC)", fontsize=9)
    strip.set_xlim(float(x[0]), float(x[0]) + span)

    fig.suptitle(title or "Backtest", fontsize=12, fontweight="bold")
    if decimated:
        fig.text(
            0.005,
            0.003,
            f"{rows:,} rows; lines min/max-decimated to ≤ {max_points:,} points",
            ha="left",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    return fig


def plot_backtest(
    path: str | os.PathLike[str],
    *,
    ts_ms: npt.ArrayLike,
    signals: Mapping[str, npt.ArrayLike],
    scores: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    title: str = "",
    alerts: Sequence[tuple[int, int]] | None = None,
    max_points: int = 20_000,
) -> Path:
    """Write the backtest plot of one asset as a PNG at ``path`` and return the path.

    Panels, sharing a UTC time axis: one per signal (up to 8; with more, all signals as
    z-scores on one panel), the score with the threshold as a dashed line (log scale when the
    highest score is 100 times the median or more), and a strip of predicted anomalous rows
    in orange, with ``alerts`` (``(start_ms, end_ms)`` pairs) as a darker row beneath it.
    ``labels`` shade the labelled anomalies light red on every panel. ``thresholds`` may be
    one number or one per row; NaN scores or thresholds (grace period) leave gaps. Lines
    longer than ``max_points`` are min/max-decimated so spikes stay visible; intervals are
    drawn from the full data.

    >>> import tempfile
    >>> ts = np.arange(600, dtype=np.int64) * 1000
    >>> score = np.r_[np.ones(300), np.full(300, 5.0)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_backtest(f"{tmp}/b.png", ts_ms=ts, signals={"temp": score},
    ...                         scores=score, thresholds=3.0, predictions=score > 3)
    ...     out.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    fig = backtest_figure(
        ts_ms=ts_ms,
        signals=signals,
        scores=scores,
        thresholds=thresholds,
        predictions=predictions,
        labels=labels,
        title=title,
        alerts=alerts,
        max_points=max_points,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI)
    return out
