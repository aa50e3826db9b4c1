"""The backtest plot: a real PNG, the expected panels, decimation that keeps spikes."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.lines import Line2D

from models.plot import backtest_figure, decimate_min_max, plot_backtest

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Data(TypedDict):
    ts_ms: npt.NDArray[np.int64]
    signals: dict[str, npt.NDArray[np.float64]]
    scores: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    predictions: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]


def synthetic(n: int, n_signals: int = 3, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n, dtype=np.int64) * 1_000
    labels = np.zeros(n, dtype=np.int64)
    labels[n // 2 : n // 2 + max(n // 20, 1)] = 1
    signals = {f"sensor_{i}": rng.normal(size=n).cumsum() * 0.1 + i for i in range(n_signals)}
    scores = np.abs(rng.normal(size=n)) + 4.0 * labels
    thresholds = np.full(n, 2.5)
    thresholds[: n // 50] = np.nan  # grace period: no threshold yet
    return {
        "ts_ms": ts,
        "signals": signals,
        "scores": scores,
        "thresholds": thresholds,
        "predictions": (np.nan_to_num(scores > thresholds)).astype(np.int64),
        "labels": labels,
    }


def test_writes_a_real_png(tmp_path: Path) -> None:
    data = synthetic(2_000)
    ts = data["ts_ms"]
    alerts = [(int(ts[1_000]), int(ts[1_090]))]
    out = plot_backtest(
        tmp_path / "nested" / "backtest.png", title="pump-17 — test", alerts=alerts, **data
    )
    assert out == tmp_path / "nested" / "backtest.png"
    raw = out.read_bytes()
    assert raw[:8] == PNG_MAGIC
    assert len(raw) > 20_000  # a real drawing, not an empty canvas
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert width > 1_000 and height > 500


def test_panels_one_per_signal_up_to_eight_then_one_z_score_panel() -> None:
    few = backtest_figure(**synthetic(500, n_signals=8))
    assert len(few.axes) == 8 + 2  # 8 signals, score, prediction strip
    many = backtest_figure(**synthetic(500, n_signals=9))
    assert len(many.axes) == 1 + 2
    assert many.axes[0].get_ylabel() == "signals (z-score)"
    legend = many.axes[0].get_legend()
    assert legend is not None and len(legend.get_texts()) == 9
    none = backtest_figure(**synthetic(500, n_signals=0))
    assert len(none.axes) == 2


def test_score_axis_goes_logarithmic_only_when_scores_span_decades() -> None:
    data = synthetic(500)
    linear = backtest_figure(**data)
    assert linear.axes[3].get_yscale() == "linear"
    data["scores"] = np.geomspace(1e-3, 1e3, 500)
    wide = backtest_figure(**data)
    assert wide.axes[3].get_yscale() == "log"


def test_long_input_is_decimated_and_spikes_survive() -> None:
    n, max_points = 200_000, 2_000
    data = synthetic(n, n_signals=2)
    spike_row = 123_457
    signal = data["signals"]["sensor_0"]
    signal[spike_row] = 1e4
    fig = backtest_figure(max_points=max_points, **data)
    lines = [line for ax in fig.axes for line in ax.get_lines() if isinstance(line, Line2D)]
    assert len(lines) == 2 + 2  # two signals, score, threshold
    for line in lines:
        assert 0 < len(np.asarray(line.get_ydata())) <= max_points
    assert float(np.nanmax(np.asarray(lines[0].get_ydata(), dtype=np.float64))) == 1e4


def test_decimate_min_max_keeps_extremes_and_order() -> None:
    values = np.sin(np.arange(10_000) / 50.0)
    values[4_321] = -7.0
    values[9_999] = 5.0
    idx = decimate_min_max(values, 100)
    assert len(idx) <= 100
    assert np.all(np.diff(idx) > 0)  # time order kept, no duplicates
    assert 4_321 in idx and 9_999 in idx
    assert decimate_min_max(values[:50], 100).tolist() == list(range(50))
    with_gap = values.copy()
    with_gap[2_000:3_000] = np.nan
    kept = decimate_min_max(with_gap, 100)
    assert np.isnan(with_gap[kept]).any()  # a NaN gap stays a gap in the drawn line


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    data = synthetic(100)
    with pytest.raises(ValueError, match="one value per row"):
        plot_backtest(tmp_path / "x.png", **(data | {"scores": np.zeros(99)}))
    with pytest.raises(ValueError, match="must not decrease"):
        plot_backtest(tmp_path / "x.png", **(data | {"ts_ms": np.arange(100)[::-1]}))
    with pytest.raises(ValueError, match="end_ms >= start_ms"):
        plot_backtest(tmp_path / "x.png", alerts=[(T0 + 5, T0)], **data)
    with pytest.raises(ValueError, match="at least 2"):
        decimate_min_max(np.zeros(10), 1)
    assert not (tmp_path / "x.png").exists()
