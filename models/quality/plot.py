"""The quality backtest picture: target, prediction, interval and spec limits over time.

Same drawing habits as :mod:`models.plot` (Agg canvas, no pyplot, min/max decimation of
long lines, UTC time axis): the interval is a shaded band, the prediction a line, lab or
analyser values dots, spec limits dashed red lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.plot import _DPI, _WIDTH_IN, _date_numbers, decimate_min_max


def plot_quality(
    path: str | os.PathLike[str],
    *,
    ts_ms: npt.ArrayLike,
    predicted: npt.ArrayLike,
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    target: npt.ArrayLike | None = None,
    lsl: float | None = None,
    usl: float | None = None,
    title: str = "",
    max_points: int = 20_000,
) -> Path:
    """Write the PNG at ``path`` and return it.

    >>> import tempfile
    >>> ts = np.arange(300, dtype=np.int64) * 60_000
    >>> p = np.sin(np.arange(300) / 20)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = plot_quality(f"{tmp}/q.png", ts_ms=ts, predicted=p, lower=p - 0.2,
    ...                        upper=p + 0.2, target=p, usl=0.8)
    ...     out.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    ms = np.asarray(ts_ms, dtype=np.int64)
    pred = np.asarray(predicted, dtype=np.float64)
    keep = decimate_min_max(pred, max_points)
    x = _date_numbers(ms)
    fig = Figure(figsize=(_WIDTH_IN, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    band = np.isfinite(lo) & np.isfinite(hi)
    ax.fill_between(
        x[keep],
        lo[keep],
        hi[keep],
        where=band[keep],
        color="tab:blue",
        alpha=0.35,
        linewidth=0,
        label="interval",
    )
    if target is not None:
        y = np.asarray(target, dtype=np.float64)
        tk = decimate_min_max(y, max_points)
        ax.plot(x[tk], y[tk], ".", color="black", markersize=2, label="target")
    ax.plot(x[keep], pred[keep], color="tab:blue", linewidth=1.0, label="predicted")
    for limit, name in ((lsl, "LSL"), (usl, "USL")):
        if limit is not None:
            ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1.0, label=name)
    ax.xaxis_date(tz="UTC")
    locator = ax.xaxis.get_major_locator()
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time (UTC)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8, ncols=5)
    ax.set_title(title or "Quality backtest", fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI)
    return out
